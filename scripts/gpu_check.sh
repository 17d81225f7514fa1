#!/usr/bin/env bash
# The GPU check: every CUDA path of the pipeline, timed and compared, in under 8 minutes.
#
#   bash scripts/gpu_check.sh OUT_DIR             # on a machine with a CUDA GPU
#   bash scripts/gpu_check.sh OUT_DIR --dry-run   # every part on the CPU at toy size (CI)
#
# Writes OUT_DIR/gpu_check.json (figures, and which part failed and why) and
# OUT_DIR/gpu_check.log (everything printed). Exit status 0 when every part passed.
# The parts (benchmarks/gpu_check.py): `pytest -m gpu`; the decoder training step at width
# 1.0 (HOG, CONV5, batch 64, bf16) with its FLOP count and MFU; AlexNet extraction against a
# bare forward; the real training DataLoader against the step's consumption; a DeePSiM step
# (comparator + discriminator on the device) against the pixel step; a 1-GPU
# torchrun run through the NCCL path.
#
# A GPU machine with PyTorch + CUDA, scikit-image, h5py and opencv but nothing to download:
# carry the missing packages as wheels in .whl/ (zarr, numcodecs, donfig, dask, distributed
# and their needs, crc32c-rs, google-crc32c); they are installed into a private folder.
# Extra arguments go to benchmarks/gpu_check.py (--peak-tflops N, --only PART...).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [--dry-run] [--peak-tflops N] [--only PART...]}
shift
mkdir -p "$out"
out=$(cd "$out" && pwd)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
{
  if ! "$PY" -c "import zarr, numcodecs, dask, distributed, crc32c_rs" 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null; then
      echo "installing the carried wheels (.whl/) into /tmp/invert-site"
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/invert-site .whl/*.whl || exit 3
      export PYTHONPATH=/tmp/invert-site${PYTHONPATH:+:$PYTHONPATH}
    else
      echo "zarr, numcodecs, dask, distributed or crc32c_rs is missing and .whl/ holds no wheels"
      exit 3
    fi
  fi
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader
  timeout "${GPU_CHECK_TIMEOUT:-470}" "$PY" -m benchmarks.gpu_check --out "$out" "$@"
} 2>&1 | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
