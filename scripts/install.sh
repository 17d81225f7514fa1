#!/usr/bin/env bash
# Install everything the pipeline and its tests need, on a fresh Debian machine or in CI.
#   bash scripts/install.sh                  # VLFeat (apt, if root) + Python packages
#   INSTALL_CHROMIUM=1 bash scripts/install.sh   # also Chromium (the report screenshot test)
# Idempotent: reruns skip what is already there. Run it inside a virtual environment
# (python3 -m venv .venv && . .venv/bin/activate) or it installs into the system Python.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# VLFeat (the paper's feature library, Debian's libvlfeat-dev, a few MB): the parity
# reference of the tests and the `vlfeat` SIFT backend.
# Chromium (opt-in, ~480 MB with its dependencies): renders the HTML report to a PNG
# (scripts/screenshot_report.sh and its test, skipped without it).
missing=""
[ -e /usr/include/vl/hog.h ] || missing="$missing libvlfeat-dev"
if [ "${INSTALL_CHROMIUM:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  missing="$missing chromium"
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends $missing
  else
    echo "note:$missing missing and not root: the tests that need them will be skipped" >&2
  fi
fi

# PyTorch CPU build first: a bare `torch` requirement would pull a multi-GB CUDA build.
# On a GPU machine install the CUDA build of your choice before running this script.
# A local or mirrored `+cpu` wheel first (offline machines, pip's find-links); otherwise
# PyTorch's CPU index, since PyPI's Linux `torch` is the CUDA build.
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0+cpu" 2>/dev/null \
    || "$PY" -m pip install -q "torch==2.13.0" \
      --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
fi
"$PY" -m pip install -q -e ".[test]"
if [ -e /usr/include/vl/hog.h ] && ! "$PY" -c "import cyvlfeat" 2>/dev/null; then
  "$PY" -m pip install -q cython numpy
  "$PY" -m pip install -q --no-build-isolation "cyvlfeat>=0.7"
fi
"$PY" -c "import pipeline, torch, zarr; print('installed: torch', torch.__version__, 'zarr', zarr.__version__)"
