#!/usr/bin/env bash
# Wheels the device machine lacks (zarr and its dependencies; it has torch, numpy, pyarrow, fsspec, tqdm, pytest,
# pyyaml, typing-extensions, packaging), for its Python 3.12 on x86-64, into .whl/ (git-ignored; carry it).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  "zarr==$(python3 -c 'import zarr; print(zarr.__version__)' 2>/dev/null || echo 3.1.6)" numcodecs donfig google-crc32c
ls .whl
