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
from hypothesis import example, given, settings
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
# a row narrower than the window, padded: the reference must not read ATen's indices as unique there
@example(n=1, c=1, h=1, w=1, kh=2, kw=2, sh=1, sw=1, ph=1, pw=1, ceil=False, relu=False, layout="contiguous")
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


# -- global pooling ------------------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 70), h=st.integers(1, 13), w=st.integers(1, 13),
       relu=st.booleans(), layout=st.sampled_from(["contiguous", "channels_last", "sliced"]))
def test_global_pool_matches_reference(n, c, h, w, relu, layout):
    """oracle: reference global pooling in float64, itself checked against amax/mean/autograd below.
    Max and its offsets exact (ties on ReLU'd zeros go to the first pixel on both sides); the mean and
    the backwards 1e-6 (fp32 sums of up to 169 terms in another order)."""
    x = torch.randn(n, c, h, w, device=DEVICE)
    x = _layout(torch.relu(x) if relu else x, layout)
    y, a = T.globalmaxpool(x)
    yr, ar = R.globalmaxpool(x.double())
    assert y.shape == yr.shape == (n, c, 1, 1) and a.dtype == ar.dtype == torch.int32
    torch.testing.assert_close(y.double(), yr, rtol=0, atol=0)
    assert torch.equal(a.cpu(), ar.cpu())
    torch.testing.assert_close(T.globalavgpool(x).double(), R.globalavgpool(x.double()), rtol=1e-6, atol=1e-6)
    dy = torch.randn(n, c, 1, 1, device=DEVICE)
    torch.testing.assert_close(T.globalmaxpool_backward(dy, a, in_hw=(h, w)).double(),
                               R.globalmaxpool_backward(dy.double(), ar, in_hw=(h, w)), rtol=0, atol=0)
    torch.testing.assert_close(T.globalavgpool_backward(dy, in_hw=(h, w)).double(),
                               R.globalavgpool_backward(dy.double(), in_hw=(h, w)), rtol=1e-6, atol=1e-6)


def test_global_pool_reference_against_autograd():
    """oracle: torch's amax / mean and their autograd gradients in float64 (distinct values, so the
    maximum's gradient is unambiguous)."""
    x = torch.randn(2, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(2, 5, 1, 1, dtype=torch.float64)
    y, a = R.globalmaxpool(x.detach())
    want = x.amax(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(y, want.detach(), rtol=0, atol=0)
    (gx,) = torch.autograd.grad(want, x, dy)
    torch.testing.assert_close(R.globalmaxpool_backward(dy, a, in_hw=(6, 7)), gx, rtol=0, atol=0)
    mean = x.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(R.globalavgpool(x.detach()), mean.detach(), rtol=1e-12, atol=1e-12)
    (gx,) = torch.autograd.grad(mean, x, dy)
    torch.testing.assert_close(R.globalavgpool_backward(dy, in_hw=(6, 7)), gx, rtol=1e-12, atol=1e-12)


def test_global_max_pool_ties_nan_and_minus_inf():
    """oracle: hand-computed offsets. Ties go to the first pixel in row-major order, a NaN wins (and
    is returned), a map of -inf still points at a pixel inside it; the map spans several loop tiles."""
    x = torch.zeros(1, 3, 9, 9, device=DEVICE)
    x[0, 0, 4, 4] = x[0, 0, 8, 8] = 5.0         # tie: the first one (offset 40)
    x[0, 1, 7, 2] = float("nan")                 # NaN at offset 65 wins over the 1.0 below
    x[0, 1, 0, 0] = 1.0
    x[0, 2] = float("-inf")
    for mod in (T, R):
        y, a = mod.globalmaxpool(x)
        assert a.flatten().tolist() == [40, 65, 0]
        assert y[0, 0].item() == 5.0 and y[0, 1].isnan().all() and y[0, 2].item() == float("-inf")


@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
def test_explicit_pad_in_a_spec(op, tmp_path):
    """oracle: F.max_pool2d / F.avg_pool2d(count_include_pad=False) with the same padding, float64.
    A 3x3/1 window with pad 1 keeps the map size (GoogLeNet's pool branch) on both backends."""
    import torch.nn.functional as F
    import yaml

    from alexnetc.compiler import compile_spec
    from alexnetc.runtime.execution.executor import bind

    spec = {"input": {"channels": 3, "height": 6, "width": 5}, "classes": 2, "layers": [
        {"name": "p", "op": op, "kernel": 3, "stride": 1, "pad": 1},
        {"name": "q", "op": op, "kernel": [3, 2], "stride": 2, "pad": [1, 1]},
        {"name": "out", "op": "fc", "units": 2}, {"name": "loss", "op": "softmax_loss"}]}
    path = tmp_path / "pad.yaml"
    path.write_text(yaml.safe_dump(spec))
    net = compile_spec(path, batch=2)
    shapes = {n.name: n.shapes[0] for n in net.graph.nodes()}
    assert shapes["p"] == (2, 3, 6, 5) and shapes["q"] == (2, 3, 3, 3)
    x = torch.randn(2, 3, 6, 5)
    if op == "maxpool":
        want = F.max_pool2d(F.max_pool2d(x.double(), 3, 1, 1), (3, 2), 2, (1, 1))
    else:
        want = F.avg_pool2d(F.avg_pool2d(x.double(), 3, 1, 1, count_include_pad=False), (3, 2), 2, (1, 1),
                            count_include_pad=False)
    for backend in ("reference", "triton"):
        ex = bind(net, {"gpu0": "cpu"}, backend=backend, for_training=False)
        got = ex.forward(x, keep=("q",))["q"]
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)
