"""The residual-add fusion (compiler/passes/fusion.py `fuse_residual_adds`) changes no bit of a float32
(or float64) training step: three SGD steps of the ResNet minis on the reference backend, the graph with
the fusion against the same spec compiled without it (oracle: our own unfused executor, itself held to
float64 autograd by test_mini_gradients.py) -- losses, every parameter and the running statistics
equal bit for bit. Under bfloat16 the fused sum is rounded once instead of twice, so only the float
types are held to bits."""
from __future__ import annotations

import pytest
import torch

import alexnetc.compiler.pipeline as pipeline
from alexnetc.compiler.ops.weighted import param_multipliers
from alexnetc.runtime.execution.executor import Executor, default_group2ctx
from alexnetc.runtime.execution.optim import SGD
from alexnetc.runtime.execution.params import init_params

from ...conftest import SPECS

BATCH = 6


def _train(spec: str, fuse: bool, dtype: str, monkeypatch) -> tuple[list[float], dict, dict, int]:
    with monkeypatch.context() as m:
        if not fuse:
            m.setattr(pipeline, "fuse_residual_adds", lambda graph: graph)
        net = pipeline.compile_loaded(pipeline.load_spec(SPECS / spec), spec, BATCH)
    fused = sum(1 for n in net.graph.nodes() if n.attrs.get("residual"))
    ex = Executor(net, default_group2ctx(net, "cpu"), for_training=True, params=init_params(net, 0), dtype=dtype)
    opt = SGD(ex.params, {n.name: param_multipliers(n) for n in ex.param_nodes})
    c, h, w = net.input_shape
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(3):
        x = torch.randn(BATCH, c, h, w, generator=g)
        y = torch.randint(0, net.classes, (BATCH,), generator=g)
        losses.append(float(ex.forward(x, y, is_train=True)["loss"]))
        ex.backward()
        opt.step(ex.grads, 0.05)
    return losses, {k: v.clone() for k, v in ex.params.items()}, {k: v.clone() for k, v in ex.state.items()}, fused


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spec", ["variants/resnet-mini.yaml"])
def test_fusion_changes_no_bit_of_a_training_step(spec, dtype, monkeypatch):
    fused = _train(spec, True, dtype, monkeypatch)
    plain = _train(spec, False, dtype, monkeypatch)
    assert fused[3] == 3 and plain[3] == 0   # one fused add per residual block, none without the pass
    assert fused[0] == plain[0]
    for a, b in ((fused[1], plain[1]), (fused[2], plain[2])):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
