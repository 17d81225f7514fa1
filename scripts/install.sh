#!/usr/bin/env bash
# Install everything the pipeline and its tests need, on a fresh Debian machine or in CI.
#   bash scripts/install.sh            # system packages (if root) + Python packages
# Idempotent: reruns skip what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# VLFeat (the paper's feature library): parity reference and the `vlfeat` SIFT backend.
# Chromium: renders the HTML report to a PNG (scripts/screenshot_report.sh, its test).
missing=""
[ -e /usr/include/vl/hog.h ] || missing="$missing libvlfeat-dev"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q $missing
  else
    echo "note:$missing missing and not root: the tests that need them will be skipped" >&2
  fi
fi

# PyTorch CPU build first: a bare `torch` requirement would pull a multi-GB CUDA build.
# On a GPU machine install the CUDA build of your choice before running this script.
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[test]"
if [ -e /usr/include/vl/hog.h ] && ! "$PY" -c "import cyvlfeat" 2>/dev/null; then
  "$PY" -m pip install -q cython numpy
  "$PY" -m pip install -q --no-build-isolation "cyvlfeat>=0.7"
fi
"$PY" -c "import pipeline, torch, zarr; print('installed: torch', torch.__version__, 'zarr', zarr.__version__)"
