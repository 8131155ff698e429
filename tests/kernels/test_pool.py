"""Triton max/avg pooling (kernels/pool.py) against the reference (kernels/reference/pool.py) in float64.

Forward values and max-pool argmax offsets must match exactly (max is exact; ties go to the first
cell on both sides, checked on ReLU'd inputs full of zeros). Backward: rtol/atol 1e-6 (fp32 sums
of up to ceil(k/s)^2 terms in a different order). Geometries: odd sizes, batch 1, kernel > stride,
padding up to kernel-1, floor and ceil output sizes, channels-last and non-contiguous inputs.
The backwards take the input's (H, W) as `in_hw` (a pair, or one int for a square map).
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alexnetc.kernels import pool as T
from alexnetc.kernels.reference import pool as R

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _window_out(n, k, s, p, ceil):
    span = n + 2 * p - k
    out = (math.ceil(span / s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def _layout(x, kind):
    if kind == "channels_last":
        return x.to(memory_format=torch.channels_last)
    if kind == "sliced":
        return torch.cat([x, x], dim=3)[:, :, :, ::2]  # stride 2 along W
    return x


def _check(x, k, s, p, out, tol=1e-6):
    geo = {"kernel": k, "stride": s, "pad": p}
    y, a = T.maxpool(x, out_size=out, **geo)
    yr, ar = R.maxpool(x.double(), out_size=out, **geo)
    assert y.shape == yr.shape and a.dtype == ar.dtype == torch.int8
    torch.testing.assert_close(y.double(), yr, rtol=0, atol=0)
    assert torch.equal(a.cpu(), ar.cpu())
    dy = torch.randn(y.shape, device=x.device).to(x.dtype)
    in_hw = tuple(x.shape[2:])
    dx = T.maxpool_backward(dy, a, in_hw=in_hw, **geo)
    assert dx.shape == x.shape
    torch.testing.assert_close(dx.double(), R.maxpool_backward(dy.double(), ar, in_hw=in_hw, **geo),
                               rtol=tol, atol=tol)
    ya = T.avgpool(x, out_size=out, **geo)
    torch.testing.assert_close(ya.double(), R.avgpool(x.double(), out_size=out, **geo), rtol=tol, atol=tol)
    dxa = T.avgpool_backward(dy, in_hw=in_hw, **geo)
    assert dxa.shape == x.shape
    torch.testing.assert_close(dxa.double(), R.avgpool_backward(dy.double(), in_hw=in_hw, **geo),
                               rtol=tol, atol=tol)
    return y


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 5), h=st.integers(1, 11), w=st.integers(1, 11),
       kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       ph=st.integers(0, 3), pw=st.integers(0, 3), ceil=st.booleans(), relu=st.booleans(),
       layout=st.sampled_from(["contiguous", "channels_last", "sliced"]))
def test_pool_matches_reference(n, c, h, w, kh, kw, sh, sw, ph, pw, ceil, relu, layout):
    """oracle: reference maxpool/avgpool and their backwards in float64."""
    ph, pw = min(ph, kh - 1), min(pw, kw - 1)
    if h + 2 * ph < kh or w + 2 * pw < kw:
        return
    out = (_window_out(h, kh, sh, ph, ceil), _window_out(w, kw, sw, pw, ceil))
    x = torch.randn(n, c, h, w, device=DEVICE)
    x = _layout(torch.relu(x) if relu else x, layout)
    _check(x, (kh, kw), (sh, sw), (ph, pw), out)


def test_alexnet_pool_overlapping_ceil_channels_last():
    """oracle: reference in float64; AlexNet's 3/2 overlapping pool on a 13x13 map (ceil rounding gives 6 there too)."""
    x = torch.relu(torch.randn(1, 70, 13, 13, device=DEVICE)).to(memory_format=torch.channels_last)
    y = _check(x, (3, 3), (2, 2), (0, 0), (_window_out(13, 3, 2, 0, True),) * 2)
    assert y.shape == (1, 70, 6, 6) and y.is_contiguous(memory_format=torch.channels_last)


def test_max_pool_padding_never_wins():
    """oracle: every saved offset points inside the input, even when all inputs are below the pad's 0."""
    x = -torch.rand(1, 2, 5, 5, device=DEVICE) - 1
    y, a = T.maxpool(x, kernel=(3, 3), stride=(2, 2), pad=(2, 2), out_size=(4, 4))
    off = a.long().cpu()
    ih = torch.arange(4).view(4, 1) * 2 - 2 + off // 3
    iw = torch.arange(4).view(1, 4) * 2 - 2 + off % 3
    assert bool(((ih >= 0) & (ih < 5) & (iw >= 0) & (iw < 5)).all())
    assert bool((y < -0.5).all())


def test_backward_in_hw_and_square_int_forms():
    """oracle: reference backwards in float64 (exact for max: one term per input cell here). in_hw as a
    tuple, a list or one int gives the same dx; a non-square map checks (H, W) is not read as (W, H);
    N and C come from dy; a mismatched argmax is refused."""
    x = torch.relu(torch.randn(2, 3, 7, 9, device=DEVICE))
    geo = {"kernel": 3, "stride": 2, "pad": 1}
    y, a = T.maxpool(x, out_size=(4, 5), **geo)
    dy = torch.randn(y.shape, device=DEVICE)
    want = R.maxpool_backward(dy.double(), a, in_hw=(7, 9), **geo)
    for in_hw in ((7, 9), [7, 9]):
        got = T.maxpool_backward(dy, a, in_hw=in_hw, **geo)
        assert got.shape == (2, 3, 7, 9)
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(T.avgpool_backward(dy, in_hw=in_hw, **geo).double(),
                                   R.avgpool_backward(dy.double(), in_hw=(7, 9), **geo), rtol=1e-6, atol=1e-6)
    xs = torch.relu(torch.randn(1, 2, 7, 7, device=DEVICE))
    ys, as_ = T.maxpool(xs, out_size=4, **geo)
    dys = torch.randn(ys.shape, device=DEVICE)
    assert torch.equal(T.maxpool_backward(dys, as_, in_hw=7, **geo),
                       T.maxpool_backward(dys, as_, in_hw=(7, 7), **geo))
    with pytest.raises(ValueError):
        T.maxpool_backward(dy, a[:, :2], in_hw=(7, 9), **geo)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pool_half_precision_alexnet_shapes(dtype):
    """oracle: reference in float64 on the same 16-bit inputs; exact max, 1e-2 for sums."""
    for c, h in [(96, 55), (256, 27), (256, 13)]:
        x = torch.relu(torch.randn(4, c, h, h, device="cuda")).to(dtype).to(memory_format=torch.channels_last)
        _check(x, (3, 3), (2, 2), (0, 0), (_window_out(h, 3, 2, 0, False),) * 2, tol=1e-2)
