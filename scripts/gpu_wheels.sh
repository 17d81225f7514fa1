#!/usr/bin/env bash
# Download the wheels scripts/gpu_check.sh needs on a GPU machine that has PyTorch + CUDA,
# scikit-image, h5py, opencv, click, pyyaml, tqdm, msgpack, psutil, toolz, cloudpickle,
# fsspec, jinja2 and sortedcontainers but nothing to download, into .whl/ (git-ignored),
# for that machine's Python (3.12 by default) on x86-64 Linux. Run it where PyPI is
# reachable, then carry .whl/ along; gpu_check.sh installs it into /tmp/invert-site.
#
#   bash scripts/gpu_wheels.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
pyver=${1:-3.12}
# the versions this project is tested with; their own needs the machine lacks are listed too
wheels=(
  zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c crc32c-rs==0.0.7
  dask==2026.8.0 distributed==2026.8.0 partd locket importlib-metadata tblib tornado zict
)
platforms=()
for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
  --implementation cp "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl "${wheels[@]}"
ls -1 .whl
