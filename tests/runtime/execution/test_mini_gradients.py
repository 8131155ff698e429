"""Every shipped Fashion-MNIST mini (variants/mini and variants/*-mini) against the float64 autograd oracle
(tests/runtime/execution/autograd_oracle.py: the compiled forward graph as plain ATen ops, differentiated by
torch.autograd), whole network, in both modes:

- training: loss, probabilities and every parameter's gradient, with dropout's p set to 0 on both
  sides (the oracle draws its masks from torch's RNG, ours from a counter hash; p = 0 makes both the
  identity while every other op, batch statistics included, runs as in training);
- evaluation: loss and probabilities of the spec as shipped (dropout the identity, batch norm reading
  its running statistics, set to non-trivial values on both sides).

Batch norm's running statistics start from the same non-trivial values on both sides; after the
training forward they must have moved alike (each to 1e-5).

A new `specs/variants/*-mini.yaml` is covered by being there."""
from __future__ import annotations

import copy

import pytest
import torch

from alexnetc.compiler.pipeline import compile_dict, load_spec, plain
from alexnetc.runtime.execution.executor import bind
from alexnetc.runtime.execution.params import init_params, init_state

from ...conftest import SPECS
from .autograd_oracle import forward as oracle_forward
from .test_executor import assert_matches_oracle

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


def _state(net, seed: int = 5) -> dict[str, torch.Tensor]:
    """Running statistics far from their initial 0 and 1: means around +-0.5, variances in [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    return {k: (0.5 * torch.randn(v.shape, generator=g) if k.endswith("mean") else 0.5 + torch.rand(v.shape, generator=g))
            for k, v in init_state(net).items()}


def _cpu(net) -> dict[str, str]:
    return {d: "cpu" for d in net.devices}


def test_every_mini_is_covered():
    assert {"variants/mini", "variants/vgg-mini", "variants/nin-mini", "variants/googlenet-mini",
            "variants/resnet-mini"} <= set(MINIS)
    assert init_state(compile_dict(_spec("variants/resnet-mini"), "resnet-mini"))   # batch norm is in there


@pytest.mark.parametrize("name", MINIS)
def test_training_gradients_match_autograd(name):
    """Loss to 1e-5 relative, probabilities to 1e-4, each gradient to 1e-3 of its largest magnitude
    (+1e-6 absolute: fp32 sums that cancel to near zero keep that much error), as in test_executor."""
    spec = _spec(name, drop_p=0.0)
    net = compile_dict(spec, name, batch=BATCH)
    params, x, y = _inputs(net)
    state = _state(net)
    ex = bind(net, _cpu(net), params=params, state={k: v.clone() for k, v in state.items()})  # it writes them
    out = ex.forward(x, y, is_train=True)
    grads = ex.backward()
    loss, prob, model = oracle_forward(net, {k: v.double() for k, v in params.items()}, x.double(), y,
                                       training=True, state={k: v.double() for k, v in state.items()})
    loss.backward()
    assert set(ex.state) == set(state)
    for k in state:   # the running statistics moved, and alike
        assert not torch.equal(ex.state[k], state[k]), k
        torch.testing.assert_close(ex.state[k].double(), model.state(k), rtol=1e-5, atol=1e-5)
    assert_matches_oracle(out, grads, params, loss, prob, model, label=f"{name} ")
    assert any(g.abs().max() > 0 for g in grads.values())


@pytest.mark.parametrize("name", MINIS)
def test_evaluation_outputs_match_autograd_graph(name):
    """The spec as shipped, in evaluation mode, on both graphs an executor runs: the training graph
    (every loss head: the total loss) and the inference graph (the main head alone: its loss is the
    mean negative log-probability of the labels). Loss to 1e-5 relative, probabilities to 1e-4."""
    net = compile_dict(_spec(name), name, batch=BATCH)
    params, x, y = _inputs(net, seed=2)
    state = _state(net, seed=6)
    loss, prob, _ = oracle_forward(net, {k: v.double() for k, v in params.items()}, x.double(), y,
                                   training=False, state={k: v.double() for k, v in state.items()})
    main_loss = -prob.detach()[torch.arange(BATCH), y].log().mean().item()
    for for_training, want in ((True, loss.item()), (False, main_loss)):
        ex = bind(net, _cpu(net), params=params, for_training=for_training,
                  state={k: v.clone() for k, v in state.items()})
        out = ex.forward(x, y, is_train=False)
        assert all(torch.equal(ex.state[k], v) for k, v in state.items())   # evaluation changes no state
        assert abs(float(out["loss"]) - want) <= 1e-5 * abs(want) + 1e-6, (for_training, float(out["loss"]), want)
        torch.testing.assert_close(out["prob"].double(), prob.detach(), rtol=1e-4, atol=1e-6)
