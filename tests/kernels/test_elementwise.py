"""Triton `add` (kernels/elementwise.py) against the reference (kernels/reference/elementwise.py) in float64.

fp32 sums of 2-4 terms: rtol/atol 1e-6 against the float64 reference (which is checked against the
plain sum). Layouts: contiguous, channels-last and strided inputs mixed; odd sizes (not a multiple of
the block); flat (N, F) inputs as well as maps.
"""
from __future__ import annotations

import pytest
import torch

from alexnetc.compiler.ops.activation import ACTIVATIONS, apply_act
from alexnetc.kernels import elementwise as T
from alexnetc.kernels.reference import elementwise as R

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 70, 13, 13), (3, 1001)])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_add_matches_reference(shape, k):
    g = torch.Generator().manual_seed(k)
    xs = [torch.randn(shape, generator=g).to(DEVICE) for _ in range(k)]
    if len(shape) == 4:
        xs[0] = xs[0].to(memory_format=torch.channels_last)
        xs[-1] = torch.cat([xs[-1], xs[-1]], dim=3)[:, :, :, ::2]   # strided view
    y = T.add(*xs)
    want = R.add(*(x.double() for x in xs))
    assert y.shape == torch.Size(shape) and y.dtype == torch.float32
    torch.testing.assert_close(want, sum(x.double() for x in xs), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y.double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [3, 4])
def test_add_of_half_inputs_rounds_once_like_the_reference(k):
    """oracle: the reference add (fp32 sum, rounded once). 1 + u/2 + u/2 (+ u/2) in float16 (the
    interpreter has no bfloat16): rounded after each launch it stays 1 (ties to even); summed in fp32 it
    is 1 + u (1 + 1.5u rounds to 1 + 2u). The Triton add must keep its partial sums in fp32 too."""
    dtype = torch.float16
    u = torch.finfo(dtype).eps
    xs = [torch.full((3, 1001), 1.0 if i == 0 else u / 2, dtype=dtype, device=DEVICE) for i in range(k)]
    want = R.add(*xs)
    assert want.dtype == dtype and float(want[0, 0]) == (1 + u if k == 3 else 1 + 2 * u)
    assert torch.equal(T.add(*xs), want)


@pytest.mark.parametrize("act", ACTIVATIONS[1:])
@pytest.mark.parametrize("k", [2, 3])
def test_add_with_activation_matches_reference(act, k):
    """oracle: the reference add with its activation in float64, itself checked against act(sum) of
    the plain sum; the Triton add applies it in its last launch: rtol/atol 1e-6 (fp32)."""
    g = torch.Generator().manual_seed(10 + k)
    xs = [torch.randn(2, 5, 7, 9, generator=g).to(DEVICE) for _ in range(k)]
    want = R.add(*(x.double() for x in xs), act=act)
    plain = sum(x.double() for x in xs)
    torch.testing.assert_close(want, apply_act(plain, act), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(T.add(*xs, act=act).double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("act", ACTIVATIONS[1:])
@pytest.mark.parametrize("k", [3, 4])
def test_add_of_half_inputs_with_activation_matches_reference(act, k):
    """oracle: the reference add (fp32 sum rounded once, activation before the rounding); the Triton
    add's partial sums in fp32 and the activation in its last launch: float16 (the interpreter has no
    bf16) within one half-precision ulp (rtol 1e-3)."""
    g = torch.Generator().manual_seed(20 + k)
    xs = [torch.randn(3, 1001, generator=g).to(DEVICE, torch.float16) for _ in range(k)]
    want = R.add(*xs, act=act)
    assert want.dtype == torch.float16
    torch.testing.assert_close(T.add(*xs, act=act), want, rtol=1e-3, atol=1e-3)


def test_add_refuses_mismatched_or_single_inputs():
    a, b = torch.zeros(2, 3, device=DEVICE), torch.zeros(2, 4, device=DEVICE)
    for mod in (T, R):
        with pytest.raises(ValueError, match="activation"):
            mod.add(a, a, act="gelu")
        with pytest.raises(ValueError, match="differ"):
            mod.add(a, b)
        with pytest.raises(ValueError, match="at least two"):
            mod.add(a)
