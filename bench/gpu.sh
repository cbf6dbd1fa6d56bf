#!/usr/bin/env bash
# The GPU figures of LocoGen's cost, in one run on a CUDA machine (well inside 15 minutes on an
# H200): SD-1.5 architecture, 16 windows at 512², 50 steps, bf16, with each option; SD-XL, 67
# windows of 4 at 1024²; PixArt-α, 25 windows of 4 at 1024². Random weights: timing does not
# depend on them. A machine without diffusers installs what bench/gpu_localize.py imports from
# ./wheels, made beforehand where a package registry is reachable:
#   pip download -d wheels --only-binary=:all: --python-version 3.11 diffusers==0.42.1 \
#     transformers==5.23.0 safetensors==0.8.0 psutil==7.2.2 pyyaml==6.0.3 --no-deps
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import diffusers, transformers, psutil" 2>/dev/null; then
  pip install -q --no-index --no-deps wheels/*.whl
fi
export PYTHONPATH="$PWD"
run() { timeout 240 python bench/gpu_localize.py "$@" || echo "failed ($?): $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
run --family sd1 --size 64 --steps 50 --windows 16
run --family sd1 --size 64 --steps 50 --windows 16 --serial-windows 1 --channels-last
run --family sd1 --size 64 --steps 50 --windows 16 --serial-windows 1 --attention flash
run --family sd1 --size 64 --steps 50 --windows 16 --serial-windows 1 --compile default
run --family sd1 --size 64 --steps 50 --windows 16 --serial-windows 1 --compile reduce-overhead
run --family sdxl --size 128 --steps 50 --m 4 --serial-windows 1
run --family pixart --size 128 --steps 20 --m 4 --serial-windows 1
run --family sana --size 32 --steps 20 --m 4 --serial-windows 1
run --family sd3 --size 128 --steps 28 --m 4 --serial-windows 1
run --family flux --size 128 --steps 28 --m 4 --serial-windows 1
