"""Triton activations: `act` and `act_backward` from the output (kernels/activation.py), for every
activation of the op registry.

Oracle: each activation's descriptor (compiler/ops/activation.py): its eager rule in float64, and its
derivative written in terms of the output, `grad_from_y`, evaluated in float64 on the same y (itself
held to autograd of the eager rule in tests/test_op_completeness.py). Tolerance: rtol 1e-5 / atol 1e-6
fp32 (tanh and sigmoid via exp2); 1e-2 for fp16/bf16 on the GPU.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alexnetc.compiler.ops import OPS
from alexnetc.compiler.ops.activation import ACTIVATIONS
from alexnetc.kernels import activation as T

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ACTS = ACTIVATIONS[1:]   # every activation ("none" is the identity, below)


def _check(x, act, tol=(1e-5, 1e-6)):
    y = T.act(x, act=act)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y.double(), OPS[act].rule(x.double()), rtol=tol[0], atol=tol[1])
    dy = torch.randn(x.shape, device=x.device).to(x.dtype)
    dx = T.act_backward(dy, y, act=act)
    torch.testing.assert_close(dx.double(), OPS[act].grad_from_y(dy.double(), y.double()), rtol=tol[0], atol=tol[1])
    return y


@settings(max_examples=15, deadline=None)
@given(shape=st.sampled_from([(1,), (5, 3), (2, 3, 5, 7), (1, 4, 1, 9), (3000,)]),
       act=st.sampled_from(ACTS), scale=st.sampled_from([0.1, 3.0, 60.0]),
       layout=st.sampled_from(["contiguous", "channels_last", "transposed"]))
def test_activation_matches_formulas(shape, act, scale, layout):
    """oracle: float64 eager rules; large |x| checks exp2 never overflows into NaN."""
    x = torch.randn(shape, device=DEVICE) * scale
    if layout == "channels_last" and x.dim() == 4:
        x = x.to(memory_format=torch.channels_last)
    elif layout == "transposed" and x.dim() >= 2:
        x = x.transpose(0, 1)
    y = _check(x, act)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        assert y.stride() == x.stride()


@pytest.mark.parametrize("act", ACTS)
def test_every_activation_at_large_and_small_inputs(act):
    """oracle: the same, on inputs spread over [-60, 60] (every activation, not a sample)."""
    _check(torch.linspace(-60, 60, 2401, device=DEVICE), act)


def test_none_is_identity_and_unknown_rejected():
    """oracle: the contract ('none' passes tensors through; other names are errors)."""
    x = torch.randn(4, device=DEVICE)
    assert T.act(x, act="none") is x
    assert T.act_backward(x, x, act="none") is x
    with pytest.raises(ValueError):
        T.act(x, act="gelu")


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_act_in_place_matches_act(act):
    """oracle: T.act on a copy (the fc epilogue must compute exactly what `act` does): bit-equal, and
    written into the tensor's own storage."""
    x = torch.randn(7, 33, device=DEVICE) * 3
    want = T.act(x.clone(), act=act)
    t = x.clone()
    got = T.act_in_place(t, act=act)
    assert got is t and torch.equal(got, want)
    with pytest.raises(ValueError):
        T.act_in_place(torch.randn(4, 6, device=DEVICE)[:, ::2], act="relu")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("act", ACTS)
def test_activation_half_precision(dtype, act):
    """oracle: float64 formulas on the same 16-bit inputs; tolerance 1e-2."""
    _check((torch.randn(128, 4096, device="cuda") * 3).to(dtype), act, tol=(1e-2, 1e-2))
