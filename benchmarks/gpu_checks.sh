#!/usr/bin/env bash
# Everything that needs a GPU, in one command, for a session that is lent one (device time is scarce:
# one call should do it all). Run from the repository root on the GPU machine:
#
#   bash benchmarks/gpu_checks.sh            # results to benchmarks/results/ (or $OUT when set)
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
# 1. the test suite on CUDA: kernel tests compile instead of interpreting; gpu-marked tests run
python3 -m pytest -q -x -p no:cacheprovider tests/kernels tests/runtime/test_executor.py 2>&1 | tee "$results/pytest-gpu.log" || status=1
# 2. kernels per AlexNet layer against cuDNN / F.* / torch.compile
python3 benchmarks/bench_kernels.py --out "$results" 2>&1 | tee "$results/bench-kernels.log" || status=1
# 3. training throughput against PyTorch eager and torch.compile
python3 benchmarks/bench_train.py specs/alexnet.yaml --batch 128 --steps 20 --out "$results" 2>&1 | tee "$results/bench-train.log" || status=1
# 4. the full network through the CLI, Triton kernels, batch 128, synthetic images
alexnetc train specs/alexnet.yaml --synthetic 2560 --epochs 1 --out /tmp/alexnetc-gpu-run --no-progress 2>&1 | tee "$results/train-alexnet.log" || status=1
exit $status
