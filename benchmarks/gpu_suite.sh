#!/usr/bin/env bash
# The GPU checks in one call of the device machine (one H100/H200, no internet, no zarr there):
#   1. benchmarks/gpu.py: cnn-s sweep eager vs captured vs one model at a time, the MNIST Seed zoo extrapolated,
#      ResNet-18 images/s in fp32 and bf16-mixed, the ResNet-18 loader with device= against CPU workers, and
#      10,000 MNIST-sized INRs fitted as one population; printed, and written to $OUT/gpu_suite.json
#   2. the gpu-marked tests (tests/test_gpu.py)
# Before the call, here: bash benchmarks/fetch_wheels.sh (zarr and its dependencies as wheels into .whl/),
# then run it with .whl carried:  bash benchmarks/gpu_suite.sh      (about 8 minutes on one H200)
# Locally, without a GPU, `PYTHON=.venv/bin/python bash benchmarks/gpu_suite.sh --smoke` runs every part at toy sizes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-${TMPDIR:-/tmp}/gpu_suite}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c "import zarr" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 3
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
status=0
$PY benchmarks/gpu.py --json-out "$OUT/gpu_suite.json" "$@" 2>&1 | tee "$OUT/gpu_suite.log" || status=1
$PY -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log" || status=1
exit $status
