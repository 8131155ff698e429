"""Every shipped Fashion-MNIST mini (variants/mini and variants/*-mini) against the float64 autograd oracle
(tests/runtime/autograd_oracle.py: the compiled forward graph as plain ATen ops, differentiated by
torch.autograd), whole network, in both modes:

- training: loss, probabilities and every parameter's gradient, with dropout's p set to 0 on both
  sides (the oracle draws its masks from torch's RNG, ours from a counter hash; p = 0 makes both the
  identity while every other op, batch statistics included, runs as in training);
- evaluation: loss and probabilities of the spec as shipped (dropout the identity, batch norm reading
  its running statistics, set to non-trivial values on both sides).

A new `specs/variants/*-mini.yaml` is covered by being there."""
from __future__ import annotations

import copy

import pytest
import torch

from alexnetc.compiler.pipeline import compile_dict, load_spec, plain
from alexnetc.runtime.execution.executor import bind
from alexnetc.runtime.execution.params import init_params

from ..conftest import SPECS
from .autograd_oracle import forward as oracle_forward

MINIS = ["variants/mini"] + sorted(f"variants/{p.stem}" for p in (SPECS / "variants").glob("*-mini.yaml"))
BATCH = 3


def _spec(name: str, drop_p: float | None = None) -> dict:
    """The flat spec (blocks expanded); with drop_p, every dropout layer's p replaced by it."""
    spec = copy.deepcopy(plain(load_spec(SPECS / f"{name}.yaml")))
    if drop_p is not None:
        for layer in spec["layers"]:
            if layer.get("op") == "dropout":
                layer["p"] = drop_p
    return spec


def _inputs(net, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c, h, w = net.input_shape
    params = {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in init_params(net, seed=1).items()}
    return params, torch.randn(BATCH, c, h, w, generator=g), torch.randint(0, net.classes, (BATCH,), generator=g)


def _cpu(net) -> dict[str, str]:
    return {d: "cpu" for d in net.devices}


def test_every_mini_is_covered():
    assert {"variants/mini", "variants/vgg-mini", "variants/nin-mini", "variants/googlenet-mini"} <= set(MINIS)


@pytest.mark.parametrize("name", MINIS)
def test_training_gradients_match_autograd(name):
    """Loss to 1e-5 relative, probabilities to 1e-4, each gradient to 1e-3 of its largest magnitude
    (+1e-6 absolute: fp32 sums that cancel to near zero keep that much error), as in test_executor."""
    spec = _spec(name, drop_p=0.0)
    net = compile_dict(spec, name, batch=BATCH)
    params, x, y = _inputs(net)
    ex = bind(net, _cpu(net), params=params)
    out = ex.forward(x, y, is_train=True)
    grads = ex.backward()
    loss, prob, model = oracle_forward(net, {k: v.double() for k, v in params.items()}, x.double(), y,
                                       training=True)
    loss.backward()
    assert abs(float(out["loss"]) - loss.item()) <= 1e-5 * abs(loss.item()) + 1e-6
    torch.testing.assert_close(out["prob"].double(), prob.detach(), rtol=1e-4, atol=1e-6)
    assert set(grads) == set(params)
    for pname, g in grads.items():
        ref = model.param(pname).grad
        scale = ref.abs().max().item() + 1e-12
        err = (g.double() - ref).abs().max().item()
        assert err <= 1e-3 * scale + 1e-6, f"{name} {pname}: max error {err:.3g} vs scale {scale:.3g}"
    assert any(g.abs().max() > 0 for g in grads.values())


@pytest.mark.parametrize("name", MINIS)
def test_evaluation_outputs_match_autograd_graph(name):
    """The spec as shipped, in evaluation mode, on both graphs an executor runs: the training graph
    (every loss head: the total loss) and the inference graph (the main head alone: its loss is the
    mean negative log-probability of the labels). Loss to 1e-5 relative, probabilities to 1e-4."""
    net = compile_dict(_spec(name), name, batch=BATCH)
    params, x, y = _inputs(net, seed=2)
    loss, prob, _ = oracle_forward(net, {k: v.double() for k, v in params.items()}, x.double(), y,
                                   training=False)
    main_loss = -prob.detach()[torch.arange(BATCH), y].log().mean().item()
    for for_training, want in ((True, loss.item()), (False, main_loss)):
        ex = bind(net, _cpu(net), params=params, for_training=for_training)
        out = ex.forward(x, y, is_train=False)
        assert abs(float(out["loss"]) - want) <= 1e-5 * abs(want) + 1e-6, (for_training, float(out["loss"]), want)
        torch.testing.assert_close(out["prob"].double(), prob.detach(), rtol=1e-4, atol=1e-6)
