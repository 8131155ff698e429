#!/usr/bin/env bash
# Everything that needs a GPU, in one command, for a session that is lent one (device time is scarce:
# one call should do it all). Run from the repository root on the GPU machine:
#
#   bash benchmarks/gpu_checks.sh            # results to benchmarks/results/ (or $OUT when set)
#   bash benchmarks/gpu_checks.sh tests      # only some steps (tests kernels train cli), e.g. to keep
#                                            # each device call under its 10-minute limit
#
# The GPU image has torch and triton but not jsonschema: carry wheels for jsonschema, referencing,
# jsonschema-specifications and rpds-py in .whl/ (see the device tool's README); they are installed
# from there when present.
set -uo pipefail
cd "$(dirname "$0")/.."
results="${OUT:-benchmarks/results}"
mkdir -p "$results"
export PYTHONUNBUFFERED=1

if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$results/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$results/gpu.txt"

status=0
steps="${*:-tests kernels train cli}"
want() { [[ " $steps " == *" $1 "* ]]; }
# 1. the test suite on CUDA: kernel tests compile instead of interpreting; every gpu-marked test runs
#    (the executor on one and two GPUs, Triton bf16 training step against the reference in bf16)
if want tests; then
    python3 -m pytest -q -p no:cacheprovider tests/kernels 2>&1 | tee "$results/pytest-gpu-kernels.log" || status=1
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/runtime 2>&1 | tee "$results/pytest-gpu-runtime.log" || status=1
fi
# 2. kernels per AlexNet layer against cuDNN / F.* / torch.compile
if want kernels; then
    python3 benchmarks/bench_kernels.py --out "$results" 2>&1 | tee "$results/bench-kernels.log" || status=1
fi
# 3. training throughput against PyTorch eager and torch.compile: AlexNet, and ResNet-18 (batch norm, adds)
if want train; then
    python3 benchmarks/bench_train.py specs/alexnet.yaml --batch 128 --steps 20 --out "$results" 2>&1 | tee "$results/bench-train.log" || status=1
    python3 benchmarks/bench_train.py specs/resnet18.yaml --batch 64 --steps 20 --out "$results" 2>&1 | tee -a "$results/bench-train.log" || status=1
fi
# 4. the full network through the CLI, Triton kernels, batch 128, synthetic images
if want cli; then
    alexnetc train specs/alexnet.yaml --synthetic 2560 --epochs 1 --out /tmp/alexnetc-gpu-run --no-progress 2>&1 | tee "$results/train-alexnet.log" || status=1
fi
exit $status
