"""Two training steps on the CPU reference backend give, bit for bit, the losses, probabilities,
gradients and updated weights recorded before the op registry replaced the per-op tables
(tests/runtime/execution/golden/training-step.json: SHA-256 prefixes of each tensor's bytes).

ATen's CPU kernels differ between instruction sets and releases, so the comparison runs only where the
golden was recorded (its `cpu` capability and `torch` version); elsewhere it is skipped, and the
executor-versus-autograd tests still hold the numbers to tolerances.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from alexnetc.compiler import compile_spec
from alexnetc.runtime.execution.executor import Executor
from alexnetc.runtime.execution.optim import SGD
from alexnetc.runtime.execution.params import init_params

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
GOLDEN = json.loads((HERE / "golden" / "training-step.json").read_text())
SPECS = {"mini.yaml": ROOT / "specs" / "variants" / "mini.yaml", "graph.yaml": HERE / "golden" / "graph.yaml"}


def _fp(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


def _two_steps(path: Path) -> dict:
    net = compile_spec(path, batch=8)
    ex = Executor(net, {d: "cpu" for d in net.devices}, params=init_params(net, seed=3), backend="reference")
    g = torch.Generator().manual_seed(5)
    c, h, w = net.input_shape
    x, y = torch.randn(8, c, h, w, generator=g), torch.randint(0, net.classes, (8,), generator=g)
    res, opt = {}, None
    for step in range(2):
        ex.seed, ex.step_count = 7, step
        out = ex.forward(x, y, is_train=True)
        grads = ex.backward()
        opt = opt or SGD(ex.params, {n.name: (1.0, 1.0) for n in ex.param_nodes})
        opt.step(grads, 0.05)
        res[f"step{step}"] = {"loss": float(out["loss"]).hex(), "prob": _fp(out["prob"]),
                              "grads": {k: _fp(v) for k, v in sorted(grads.items())},
                              "params": {k: _fp(v) for k, v in sorted(ex.params.items())}}
    return res


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != GOLDEN["cpu"] or torch.__version__ != GOLDEN["torch"],
                    reason=f"golden recorded on {GOLDEN['cpu']} with torch {GOLDEN['torch']}")
@pytest.mark.parametrize("spec", sorted(SPECS))
def test_training_steps_are_bit_identical_to_the_golden(spec):
    assert _two_steps(SPECS[spec]) == GOLDEN[spec]
