"""The reference kernels (kernels/reference/<family>.py) against independent float64 oracles, and their
backward entries by gradcheck.

Oracles: ATen/autograd in float64 (F.conv2d, F.max_pool2d, F.avg_pool2d, F.cross_entropy,
F.local_response_norm) or the formula written out in plain Python/torch loops. The gradchecks wrap
a forward/backward pair of the reference in an autograd.Function and compare its backward with
finite differences of its forward (float64, default gradcheck tolerances).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from alexnetc.compiler.ops.activation import ACTIVATIONS, apply_act
from alexnetc.kernels import shared
from alexnetc.kernels.reference import activation as RA
from alexnetc.kernels.reference import conv as RC
from alexnetc.kernels.reference import dropout as RD
from alexnetc.kernels.reference import fc as RF
from alexnetc.kernels.reference import loss as RX
from alexnetc.kernels.reference import lrn as RL
from alexnetc.kernels.reference import pool as RP

D = torch.float64
SETTINGS = settings(max_examples=12, deadline=None)


def _window_out(n, k, s, p, ceil):
    span = n + 2 * p - k
    out = (math.ceil(span / s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


# -- convolution --------------------------------------------------------------------------------------
@SETTINGS
@given(n=st.integers(1, 2), cg=st.integers(1, 3), kg=st.integers(1, 3), num_group=st.sampled_from([1, 2]),
       h=st.integers(3, 9), w=st.integers(3, 9), r=st.integers(1, 3), stride=st.integers(1, 3),
       pad=st.integers(0, 2), ceil=st.booleans(), act=st.sampled_from(ACTIVATIONS))
def test_conv_matches_autograd(n, cg, kg, num_group, h, w, r, stride, pad, ceil, act):
    """reference conv.py vs float64 F.conv2d on an explicitly zero-padded (ceil-extended) input, and its
    autograd; bias_backward (fc.py) vs a float64 sum."""
    C, K = cg * num_group, kg * num_group
    if h + 2 * pad < r or w + 2 * pad < r:
        return
    P, Q = _window_out(h, r, stride, pad, ceil), _window_out(w, r, stride, pad, ceil)
    x = torch.randn(n, C, h, w, dtype=D, requires_grad=True)
    wt = torch.randn(K, cg, r, r, dtype=D, requires_grad=True)
    b = torch.randn(K, dtype=D)
    eh, ew = max(0, (P - 1) * stride + r - h - 2 * pad), max(0, (Q - 1) * stride + r - w - 2 * pad)
    xp = F.pad(x, (pad, pad + ew, pad, pad + eh))
    ref = F.conv2d(xp, wt, b, stride=stride, groups=num_group)[:, :, :P, :Q]
    ref = apply_act(ref, act)
    y = RC.conv(x, wt, b, stride=(stride, stride), pad=(pad, pad), num_group=num_group, out_size=(P, Q), act=act)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(ref)
    pre = torch.randn_like(ref)  # the gradient after the activation's backward: any tensor of dy's shape
    ref_out = F.conv2d(xp, wt, None, stride=stride, groups=num_group)[:, :, :P, :Q]
    gx, gw = torch.autograd.grad(ref_out, (x, wt), pre)
    dx = RC.conv_backward_data(pre, wt, in_hw=(h, w), stride=(stride, stride), pad=(pad, pad),
                               num_group=num_group)
    dw = RC.conv_backward_weight(pre, x, kernel=(r, r), stride=(stride, stride), pad=(pad, pad),
                                 num_group=num_group)
    torch.testing.assert_close(dx, gx, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dw, gw, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(RF.bias_backward(dy), dy.sum((0, 2, 3)), rtol=1e-12, atol=1e-12)


def test_conv_half_on_cpu_returns_input_dtype():
    """reference conv.py vs float64 F.conv2d; tolerance: bf16 output rounding (rel 2^-8)."""
    x, w = torch.randn(2, 4, 9, 9), torch.randn(6, 4, 3, 3) * 0.2
    y = RC.conv(x.bfloat16(), w.bfloat16(), None, stride=(1, 1), pad=(1, 1), num_group=1, out_size=(9, 9),
                act="relu")
    assert y.dtype == torch.bfloat16
    ref = torch.relu(F.conv2d(x.bfloat16().double(), w.bfloat16().double(), padding=1))
    torch.testing.assert_close(y.double(), ref, rtol=1e-2, atol=1e-2)


# -- LRN -----------------------------------------------------------------------------------------------
def _lrn_loops(x, size, k, alpha, beta):
    """The contract's formula, one channel at a time; `alpha` is the effective a'."""
    C = x.shape[1]
    a = alpha
    half = size // 2
    scale = torch.empty_like(x)
    for c in range(C):
        lo, hi = max(0, c - half), min(C - 1, c + half)
        scale[:, c] = k + a * (x[:, lo:hi + 1] ** 2).sum(1)
    return x * scale ** (-beta), scale


@SETTINGS
@given(n=st.integers(1, 2), c=st.integers(1, 12), h=st.integers(1, 4), w=st.integers(1, 4),
       size=st.sampled_from([1, 3, 5, 7]), alpha_over_n=st.booleans(), beta=st.sampled_from([0.5, 0.75, 1.0]))
def test_lrn_matches_formula(n, c, h, w, size, alpha_over_n, beta):
    """reference lrn.py vs the per-channel formula in float64, and F.local_response_norm (whose alpha is
    always divided by n) for the alpha_over_n convention. The kernels take a' = alpha / n or alpha."""
    x = torch.randn(n, c, h, w, dtype=D) * 3
    kw = {"size": size, "k": 2.0, "alpha": 0.1 / size if alpha_over_n else 0.1, "beta": beta}
    y, s = RL.lrn(x, **kw)
    yr, sr = _lrn_loops(x, **kw)
    torch.testing.assert_close(y, yr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s, sr, rtol=1e-12, atol=1e-12)
    if alpha_over_n:
        torch.testing.assert_close(y, F.local_response_norm(x, size, 0.1, beta, 2.0), rtol=1e-12, atol=1e-12)


class _LRN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kw):
        y, s = RL.lrn(x, **kw)
        ctx.save_for_backward(x, y, s)
        ctx.kw = kw
        return y

    @staticmethod
    def backward(ctx, dy):
        x, y, s = ctx.saved_tensors
        return RL.lrn_backward(dy, x, y, s, **ctx.kw), None


@pytest.mark.parametrize("alpha", [0.3, 0.3 / 5])
def test_lrn_backward_gradcheck(alpha):
    """reference lrn_backward vs finite differences of reference lrn (float64 gradcheck)."""
    x = (torch.randn(2, 7, 3, 2, dtype=D) * 2).requires_grad_()
    kw = {"size": 5, "k": 2.0, "alpha": alpha, "beta": 0.75}
    assert torch.autograd.gradcheck(lambda t: _LRN.apply(t, kw), (x,))


# -- pooling ---------------------------------------------------------------------------------------------
pool_geometry = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(0, 3), st.booleans()).filter(
    lambda g: g[2] < g[0])


@SETTINGS
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(4, 9), w=st.integers(4, 9), geo=pool_geometry)
def test_pools_match_aten(n, c, h, w, geo):
    """reference pool.py vs float64 F.max_pool2d / F.avg_pool2d(count_include_pad=False), ceil_mode where
    rounding is ceil, and their autograd."""
    k, s, p, ceil = geo
    if 2 * p > k:  # ATen refuses pad > kernel/2; our geometry allows it, the other tests cover it
        return
    P, Q = _window_out(h, k, s, p, ceil), _window_out(w, k, s, p, ceil)
    x = torch.randn(n, c, h, w, dtype=D, requires_grad=True)
    ref = F.max_pool2d(x, k, s, p, ceil_mode=ceil)
    assert ref.shape[2:] == (P, Q)
    y, a = RP.maxpool(x, kernel=(k, k), stride=(s, s), pad=(p, p), out_size=(P, Q))
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    assert a.dtype == torch.int8 and int(a.min()) >= 0 and int(a.max()) < k * k
    dy = torch.randn_like(ref)
    (g,) = torch.autograd.grad(ref, x, dy)
    dx = RP.maxpool_backward(dy, a, in_hw=(h, w), kernel=(k, k), stride=(s, s), pad=(p, p))
    torch.testing.assert_close(dx, g, rtol=1e-12, atol=1e-12)
    ref = F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=False)
    torch.testing.assert_close(RP.avgpool(x, kernel=(k, k), stride=(s, s), pad=(p, p), out_size=(P, Q)), ref,
                               rtol=1e-12, atol=1e-12)
    (g,) = torch.autograd.grad(ref, x, dy)
    dx = RP.avgpool_backward(dy, in_hw=(h, w), kernel=(k, k), stride=(s, s), pad=(p, p))
    torch.testing.assert_close(dx, g, rtol=1e-12, atol=1e-12)


def test_max_pool_argmax_is_window_offset_and_padding_never_wins():
    """oracle: the definition — x at (oh*s - p + off//kw, ow*s - p + off%kw) equals y and lies inside x."""
    x = -torch.rand(2, 3, 7, 7, dtype=D) - 1  # all negative: a zero pad cell would win if padding could
    y, a = RP.maxpool(x, kernel=(3, 3), stride=(2, 2), pad=(1, 1), out_size=(4, 4))
    off = a.long()
    ih = torch.arange(4).view(4, 1) * 2 - 1 + off // 3
    iw = torch.arange(4).view(1, 4) * 2 - 1 + off % 3
    assert bool(((ih >= 0) & (ih < 7) & (iw >= 0) & (iw < 7)).all())
    vals = torch.stack([x[n_, c_, ih[n_, c_].flatten(), iw[n_, c_].flatten()] for n_ in range(2) for c_ in range(3)])
    torch.testing.assert_close(vals.view(2, 3, 4, 4), y, rtol=0, atol=0)


def test_max_pool_ties_go_to_first_cell():
    """oracle: row-major first maximum (ATen's rule), on an all-equal input."""
    x = torch.zeros(1, 1, 5, 5, dtype=D)
    _, a = RP.maxpool(x, kernel=(3, 3), stride=(2, 2), pad=(0, 0), out_size=(2, 2))
    assert a.eq(0).all()


class _Pool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, geo, is_max):
        k, s, p, out = geo
        ctx.geo, ctx.is_max, ctx.in_hw = geo, is_max, tuple(x.shape[2:])
        if is_max:
            y, a = RP.maxpool(x, kernel=k, stride=s, pad=p, out_size=out)
            ctx.save_for_backward(a)
            return y
        return RP.avgpool(x, kernel=k, stride=s, pad=p, out_size=out)

    @staticmethod
    def backward(ctx, dy):
        k, s, p, _ = ctx.geo
        if ctx.is_max:
            (a,) = ctx.saved_tensors
            return RP.maxpool_backward(dy, a, in_hw=ctx.in_hw, kernel=k, stride=s, pad=p), None, None
        return RP.avgpool_backward(dy, in_hw=ctx.in_hw, kernel=k, stride=s, pad=p), None, None


@pytest.mark.parametrize("is_max", [True, False])
def test_pool_backward_gradcheck(is_max):
    """reference pool backwards vs finite differences of the reference forwards; distinct inputs so no
    max tie flips."""
    x = (torch.randperm(2 * 2 * 7 * 6, dtype=D).view(2, 2, 7, 6) / 10).requires_grad_()
    geo = ((3, 2), (2, 2), (1, 1), (4, 4))  # ceil-rounded width: the last window hangs over the edge
    assert torch.autograd.gradcheck(lambda t: _Pool.apply(t, geo, is_max), (x,))


# -- activation, fc, dropout, loss ------------------------------------------------------------------------------
@pytest.mark.parametrize("act", ACTIVATIONS[1:])
def test_activation_backward_gradcheck(act):
    """reference act_backward vs finite differences of reference act; backward computed from the output y."""

    class Act(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = RA.act(x, act=act)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, dy):
            (y,) = ctx.saved_tensors
            return RA.act_backward(dy, y, act=act)

    x = (torch.randn(3, 5, dtype=D) + 0.05).requires_grad_()
    assert torch.autograd.gradcheck(Act.apply, (x,))


def test_fc_matches_autograd():
    """reference fc.py vs float64 F.linear and its autograd."""
    x = torch.randn(4, 7, dtype=D, requires_grad=True)
    w = torch.randn(3, 7, dtype=D, requires_grad=True)
    b = torch.randn(3, dtype=D)
    ref = torch.tanh(F.linear(x, w, b))
    torch.testing.assert_close(RF.fc(x, w, b, act="tanh"), ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn(4, 3, dtype=D)
    gx, gw = torch.autograd.grad(F.linear(x, w), (x, w), dy)
    torch.testing.assert_close(RF.fc_backward_data(dy, w), gx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(RF.fc_backward_weight(dy, x), gw, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(RF.bias_backward(dy), dy.sum(0), rtol=1e-12, atol=1e-12)


def _hash_py(i: int, seed: int, step: int) -> int:
    """The hash in plain Python integers, written from the comment in kernels/shared.py."""
    a, b = shared.dropout_keys(seed, step)
    lo, hi = i & shared.M32, i >> 32
    h = shared.mix32((lo * shared.GOLDEN + a) & shared.M32)
    return shared.mix32(h ^ b ^ ((hi * shared.HI_MUL) & shared.M32))


def test_dropout_hash_matches_python_integers():
    """reference dropout_hash_of vs the same hash in Python's arbitrary-precision ints (no int64
    wraparound possible)."""
    idx = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 7, 3 * 2**33 + 5]
    for seed, step in [(0, 0), (1, 2), (2**31 - 2, 10**9), (2**40 + 3, 2**35)]:
        got = RD.dropout_hash_of(torch.tensor(idx, dtype=torch.int64), seed, step).tolist()
        assert got == [_hash_py(i, seed, step) for i in idx]


@pytest.mark.parametrize("offset,numel", [(0, 100_003), (12345, 4097), (2**32 - 3000, 6000), (3 * 2**33 + 5, 777)])
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_cpu_dropout_mask_equals_the_int64_hash(offset, numel, p):
    """oracle: dropout_hash_of (checked against Python's integers above) on the explicit indices; the
    CPU masks come from numpy's uint32 arithmetic and must keep exactly the same elements, including
    ranges that cross 2^32 (where the high word enters the hash)."""
    for seed, step in [(0, 0), (2**40 + 3, 2**35)]:
        idx = torch.arange(offset, offset + numel, dtype=torch.int64)
        want = (RD.dropout_hash_of(idx, seed, step) >> 8) >= RD.dropout_threshold(p)
        got = RD.dropout_mask((numel,), seed, step, p, offset=offset)
        assert got.dtype == torch.bool and torch.equal(got, want)


def test_cpu_dropout_mask_in_pieces_on_threads_equals_the_int64_hash():
    """oracle: dropout_hash_of on the explicit indices. Large maps are hashed in pieces on torch's
    thread count (3 here, whatever the cores): every piece starts at its own offset, one of them across
    2^32."""
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        offset, numel = 2**32 - 300_001, 3 * RD._CHUNK + 12_345
        got = RD.dropout_mask((numel,), 5, 9, 0.3, offset=offset)
    finally:
        torch.set_num_threads(threads)
    idx = torch.arange(offset, offset + numel, dtype=torch.int64)
    assert torch.equal(got, (RD.dropout_hash_of(idx, 5, 9) >> 8) >= RD.dropout_threshold(0.3))


def test_dropout_mask_statistics_and_reproducibility():
    """reference dropout vs a Binomial(1-p) keep rate (5 sigma), determinism in (seed, step), and its own
    mask applied by hand."""
    n, p = 200_000, 0.5
    m = RD.dropout_mask((n,), 7, 3, p)
    assert abs(m.double().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(m, RD.dropout_mask((n,), 7, 3, p))
    assert (m != RD.dropout_mask((n,), 7, 4, p)).double().mean().item() > 0.4
    assert (m != RD.dropout_mask((n,), 8, 3, p)).double().mean().item() > 0.4
    x = torch.randn(50, 40, dtype=D)
    y = RD.dropout(x, p=0.3, seed=1, step=2)
    keep = RD.dropout_mask(x.shape, 1, 2, 0.3)
    torch.testing.assert_close(y, torch.where(keep, x / 0.7, 0.0), rtol=1e-15, atol=0)
    torch.testing.assert_close(RD.dropout_backward(x, p=0.3, seed=1, step=2), y, rtol=0, atol=0)
    assert torch.equal(RD.dropout(x, p=0.0, seed=1, step=2), x)
    assert RD.dropout(x, p=1.0, seed=1, step=2).eq(0).all()


def test_softmax_loss_matches_aten():
    """reference loss.py vs float64 F.cross_entropy (mean) and F.softmax; its autograd for the backward."""
    z = (torch.randn(6, 11, dtype=D) * 20).requires_grad_()
    lab = torch.randint(0, 11, (6,))
    loss, prob = RX.softmax_loss(z, lab)
    ref = F.cross_entropy(z, lab)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prob, F.softmax(z, 1), rtol=1e-12, atol=1e-12)
    (g,) = torch.autograd.grad(ref * 3.0, z, retain_graph=True)
    torch.testing.assert_close(RX.softmax_loss_backward(prob.detach(), lab, 3.0), g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(RX.softmax_loss_backward(prob.detach(), lab, torch.tensor(3.0)), g,
                               rtol=1e-12, atol=1e-12)
    (g1,) = torch.autograd.grad(ref, z)
    torch.testing.assert_close(RX.softmax_loss_backward(prob.detach(), lab), g1, rtol=1e-12, atol=1e-12)
