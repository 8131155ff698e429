"""Batch norm with a folded residual add (compiler/passes/fusion.py), reference backend
(kernels/reference/batchnorm.py, its C kernels through `native` and its ATen paths).

Oracles: float64 torch.autograd through act(batch_norm(x) + r) (rtol/atol 1e-5 for fp32, 1e-10 for the
float64 path), and, bit for bit in fp32, the unfused pair the fusion replaces: the reference's batch norm
without a residual, then its add with the activation (forward), and its act_backward then its batch-norm
backward (backward) -- the fusion must not change a bit of a float32 training step.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from alexnetc.compiler.ops.activation import apply_act
from alexnetc.kernels.reference import activation as RA
from alexnetc.kernels.reference import batchnorm as R
from alexnetc.kernels.reference import elementwise as RE
from alexnetc.kernels.reference import native

from .test_batchnorm import _Alone

KW = dict(eps=1e-5, momentum=0.1)
# (shape, layout, dtype): the C kernels (channels-last fp32 maps, 2-D features), ATen's fused kernel
# (NCHW fp32), and the written-out float64 formulas
CASES = [((4, 5, 3, 6), "channels_last", torch.float32), ((9, 7), "contiguous", torch.float32),
         ((4, 5, 3, 6), "contiguous", torch.float32), ((4, 5, 3, 6), "contiguous", torch.float64)]
IDS = ["native-maps", "native-features", "aten-nchw", "float64"]


def _data(shape, layout, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x, r, dy = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    x = x * 2 + 0.5
    params = [torch.rand(c, generator=g, dtype=torch.float64) + 0.5, torch.randn(c, generator=g, dtype=torch.float64),
              torch.randn(c, generator=g, dtype=torch.float64) * 0.1, torch.rand(c, generator=g, dtype=torch.float64) + 0.5]

    def put(t):
        t = t.to(dtype)
        return t.to(memory_format=torch.channels_last) if layout == "channels_last" else t.contiguous()
    return put(x), put(r), put(dy), [p.to(dtype) for p in params]


def _takes_native(shape, layout, dtype):
    return dtype == torch.float32 and (len(shape) == 2 or layout == "channels_last")


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("act", ["none", "relu", "tanh"])
def test_forward_and_backward_match_float64_autograd(case, act):
    shape, layout, dtype = case
    x, r, dy, (scale, shift, rm, rv) = _data(shape, layout, dtype)
    y, mean, invstd, new_rm, new_rv = R.batchnorm(x, scale, shift, rm, rv, r, act=act, **KW)
    dx, dscale, dshift, dz = R.batchnorm_backward(dy, x, scale, mean, invstd, y, act=act, residual=True)

    xd, rd, sd, bd = (t.detach().double().requires_grad_() for t in (x, r, scale, shift))
    want = apply_act(F.batch_norm(xd, None, None, sd, bd, True, 0.1, 1e-5) + rd, act)
    want.backward(dy.double())
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y.double(), want.detach(), **tol)
    for got, ref in ((dx, xd.grad), (dz, rd.grad), (dscale, sd.grad), (dshift, bd.grad)):
        torch.testing.assert_close(got.double(), ref, **tol)
    assert y.stride() == x.stride() and dx.stride() == x.stride()
    # the statistics are x's alone: the same bits as without a residual
    _, mean0, invstd0, rm0, rv0 = R.batchnorm(x, scale, shift, rm, rv, act=act, **KW)
    for a, b in ((mean, mean0), (invstd, invstd0), (new_rm, rm0), (new_rv, rv0)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", CASES[:3], ids=IDS[:3])
@pytest.mark.parametrize("act", ["none", "relu"])
@pytest.mark.parametrize("native_on", [True, False], ids=["native", "aten"])
def test_fp32_fused_equals_the_unfused_pair_bit_for_bit(case, act, native_on, monkeypatch):
    shape, layout, dtype = case
    if native_on and not (_takes_native(shape, layout, dtype) and native.library() is not None):
        pytest.skip("the native kernels do not take this case here")
    if not native_on:
        monkeypatch.setattr(native, "takes", lambda *ts: False)
    x, r, dy, (scale, shift, rm, rv) = _data(shape, layout, dtype, seed=1)
    # unfused, as the graph ran it before: batch norm, then the add with the activation
    y0, mean, invstd, _, _ = R.batchnorm(x, scale, shift, rm, rv, act="none", **KW)
    s0 = RE.add(y0, r, act=act)
    dz0 = RA.act_backward(dy, s0, act=act)
    dx0, dscale0, dshift0 = R.batchnorm_backward(dz0, x, scale, mean, invstd)
    # fused
    y, mean1, invstd1, _, _ = R.batchnorm(x, scale, shift, rm, rv, r, act=act, **KW)
    out = R.batchnorm_backward(dy, x, scale, mean1, invstd1, y if act != "none" else None, act=act, residual=True)
    assert torch.equal(y, s0)
    for got, want in zip(out, (dx0, dscale0, dshift0, dz0)):
        assert torch.equal(got, want)
    if act == "none":   # the residual's gradient is dy itself: nothing to compute
        assert out[3] is dy


def test_without_residual_the_backward_keeps_three_outputs():
    x, _, dy, (scale, shift, rm, rv) = _data((4, 5, 3, 6), "channels_last", torch.float32)
    y, mean, invstd, _, _ = R.batchnorm(x, scale, shift, rm, rv, act="relu", **KW)
    assert len(R.batchnorm_backward(dy, x, scale, mean, invstd, y, act="relu")) == 3


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_eval_adds_the_residual_before_the_activation(case):
    shape, layout, dtype = case
    x, r, _, (scale, shift, rm, rv) = _data(shape, layout, dtype, seed=2)
    got = R.batchnorm_eval(x, scale, shift, rm, rv, r, act="relu", **KW)
    want = torch.relu(F.batch_norm(x.double(), rm.double(), rv.double(), scale.double(), shift.double(), False, 0.1,
                                   1e-5) + r.double())
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.double(), want, **tol)


@pytest.mark.parametrize("act", ["none", "relu"])
def test_sync_entries_take_the_residual_as_the_plain_ones(act):
    x, r, dy, (scale, shift, rm, rv) = _data((4, 5, 3, 6), "contiguous", torch.float64, seed=3)
    plain = R.batchnorm(x, scale, shift, rm, rv, r, act=act, **KW)
    synced = R.batchnorm_sync(x, scale, shift, rm, rv, r, act=act, sync=_Alone(), **KW)
    for a, b in zip(plain, synced):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    y, mean, invstd = plain[:3]
    args = (dy, x, scale, mean, invstd, y)
    want = R.batchnorm_backward(*args, act=act, residual=True)
    got = R.batchnorm_backward_sync(*args, act=act, residual=True, sync=_Alone())
    assert len(got) == 4
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
