"""Triton convolution (kernels/conv.py: conv, conv_backward_data, conv_backward_weight) vs float64 ATen.

Oracle, everywhere: `F.conv2d` in float64 on the input zero-extended to exactly the rows/columns the
requested out_size reads (floor, ceil or a smaller size), activation applied in float64; the two
gradients are float64 autograd of that same expression. Inputs are rounded to the tested dtype
first, so the oracle sees the very values the kernel sees and only accumulation/output rounding
differ.

Tolerances (stated per test, `assert_close(rtol, atol)`):
  * CPU interpreter, fp32 (tl.dot is an exact fp32 numpy matmul there): rtol = atol = 1e-4.
  * CPU interpreter, fp16 inputs: outputs rounded to fp16 (2^-11 relative): rtol = atol = 2e-3 times
    the output scale; the fp32 weight gradient of fp16 inputs: rtol = atol = 1e-4 times the scale.
  * GPU, AlexNet shapes with weights ~ 1/sqrt(fan_in) so outputs are O(1); atol is given relative to
    the largest oracle magnitude: IEEE fp32 1e-4; TF32 (10-bit mantissa products) 5e-3; fp16 outputs
    2e-3; bf16 outputs (8-bit mantissa, 2^-8 relative rounding) 1e-2; fp32 weight gradients of
    fp16/bf16 inputs 1e-3.
The interpreter cannot run bf16 (numpy has none): bf16 is covered by the GPU tests only.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alexnetc.compiler.ops.activation import ACTIVATIONS, apply_act
from alexnetc.kernels import conv as T

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ACTS = ACTIVATIONS   # every activation of the registry; the oracle is its eager rule


@pytest.fixture(scope="module", autouse=True)
def _ieee_fp32_products():
    """On a GPU, fp32 tl.dot follows cuDNN's TF32 flag, which is on by default; the fp32 tolerances here
    (1e-4) assume IEEE products, as the interpreter computes them. So the module runs with the flag off;
    the GPU tests that want TF32 set it themselves. (Module scope: hypothesis rejects function-scoped
    fixtures on @given tests.)"""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = saved


# -- oracle ------------------------------------------------------------------------------------------
def _oracle(x, w, b, *, stride, pad, num_group, out_size, act="none"):
    """float64 F.conv2d over x padded by `pad` and extended (or cut) to what out_size windows read."""
    (sh, sw), (ph, pw), (P, Q) = stride, pad, out_size
    R, S = w.shape[2], w.shape[3]
    H, W = x.shape[2], x.shape[3]
    need_h, need_w = (P - 1) * sh + R, (Q - 1) * sw + S
    xp = F.pad(x, (pw, max(pw, need_w - W - pw), ph, max(ph, need_h - H - ph)))
    xp = xp[:, :, :need_h, :need_w]
    y = F.conv2d(xp, w, b, stride=(sh, sw), groups=num_group)
    assert y.shape[2:] == (P, Q)
    return apply_act(y, act)


def _oracle_all(x, w, b, dy, **geo):
    """(y, dx, dw) in float64: forward with the activation, gradients of the pre-activation conv."""
    x64 = x.detach().double().requires_grad_(True)
    w64 = w.detach().double().requires_grad_(True)
    b64 = None if b is None else b.detach().double()
    act = geo.pop("act")
    z = _oracle(x64, w64, b64, **geo)
    z.backward(dy.double())
    return apply_act(z.detach(), act), x64.grad, w64.grad


def _out(n, k, s, p, mode):
    floor = (n + 2 * p - k) // s + 1
    return {"floor": floor, "ceil": floor + 1, "less": max(1, floor - 1)}[mode]


def _layout(t, kind):
    out = _relayout(t, kind)
    assert torch.equal(out, t)
    return out


def _relayout(t, kind):
    if kind == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if kind == "sliced":  # same values, stride 2 along W
        wide = torch.zeros(*t.shape[:3], 2 * t.shape[3], dtype=t.dtype, device=t.device)
        view = wide[:, :, :, ::2]
        view.copy_(t)
        return view
    if kind == "transposed":  # NCHW view of an (N, C, W, H) tensor: H and W strides swapped
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    return t


def _run(x, w, b, dy, act, **geo):
    y = T.conv(x, w, b, act=act, **geo)
    bwd = {"stride": geo["stride"], "pad": geo["pad"], "num_group": geo["num_group"]}
    dx = T.conv_backward_data(dy, w, in_hw=tuple(x.shape[2:]), **bwd)
    dw = T.conv_backward_weight(dy, x, kernel=tuple(w.shape[2:]), **bwd)
    return y, dx, dw


def _close(got, want, rtol, atol_rel=None, atol=None):
    """assert_close in float64; atol either absolute or relative to the oracle's largest magnitude."""
    scale = max(want.abs().max().item(), 1.0) if want.numel() else 1.0
    atol = atol if atol is not None else atol_rel * scale
    torch.testing.assert_close(got.double().cpu(), want.cpu(), rtol=rtol, atol=atol)


# -- interpreter / CPU-sized property tests ------------------------------------------------------------
@st.composite
def _geometry(draw):
    num_group = draw(st.sampled_from([1, 2, 4]))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, R - 1)), draw(st.integers(0, S - 1))
    H = draw(st.integers(max(1, R - 2 * ph), 9))
    W = draw(st.integers(max(1, S - 2 * pw), 9))
    mode_h, mode_w = draw(st.sampled_from(["floor", "ceil", "less"])), draw(st.sampled_from(["floor", "ceil"]))
    return {
        "n": draw(st.integers(1, 2)), "c": cg * num_group, "k": kg * num_group, "H": H, "W": W, "R": R, "S": S,
        "num_group": num_group, "stride": (sh, sw), "pad": (ph, pw),
        "out_size": (_out(H, R, sh, ph, mode_h), _out(W, S, sw, pw, mode_w))}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=_geometry(), act=st.sampled_from(ACTS), bias=st.booleans(), flat=st.booleans(),
       layout=st.sampled_from(["contiguous", "channels_last", "sliced", "transposed"]),
       seed=st.integers(0, 2**16))
def test_conv_fp32_matches_float64_oracle(g, act, bias, flat, layout, seed):
    """Forward, backward-data and backward-weight vs float64 F.conv2d / its autograd (see _oracle).

    Strides 1-3, padding up to kernel-1, num_group 1/2/4, odd sizes, batch 1-2, kernels larger than the
    stride, floor/ceil/smaller out_size, every activation, with and without bias, NCHW, channels-last
    and non-contiguous inputs, both forward reduction walks (flat (r,s,c) index and per-tap channel
    blocks). fp32, rtol = atol = 1e-4.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(g["n"], g["c"], g["H"], g["W"], generator=gen)
    w = torch.randn(g["k"], g["c"] // g["num_group"], g["R"], g["S"], generator=gen)
    b = torch.randn(g["k"], generator=gen) if bias else None
    P, Q = g["out_size"]
    dy = torch.randn(g["n"], g["k"], P, Q, generator=gen)
    geo = {"stride": g["stride"], "pad": g["pad"], "num_group": g["num_group"], "out_size": g["out_size"]}
    y_ref, dx_ref, dw_ref = _oracle_all(x, w, b, dy, act=act, **geo)

    xd = _layout(x.to(DEVICE), layout)
    dyd = _layout(dy.to(DEVICE), layout)
    wd, bd = w.to(DEVICE), None if b is None else b.to(DEVICE)
    saved = T.FLAT_K_MAX_CHANNELS
    T.FLAT_K_MAX_CHANNELS = 10**9 if flat else 0
    try:
        y, dx, dw = _run(xd, wd, bd, dyd, act, **geo)
    finally:
        T.FLAT_K_MAX_CHANNELS = saved
    assert y.shape == y_ref.shape and y.dtype == torch.float32
    assert dx.shape == x.shape and dx.dtype == torch.float32
    assert dw.shape == w.shape and dw.dtype == torch.float32
    _close(y, y_ref, rtol=1e-4, atol=1e-4)
    _close(dx, dx_ref, rtol=1e-4, atol=1e-4)
    _close(dw, dw_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("flat", [False, True])
def test_conv_multi_block_channels(flat):
    """More channels than one BLOCK_K and more columns than one BLOCK_N (masked tails in both), stride 2,
    num_group 2, ReLU; vs float64 F.conv2d and its autograd. fp32, rtol = atol = 1e-4."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2 * 20, 7, 6, generator=gen)
    w = torch.randn(2 * 18, 20, 3, 3, generator=gen) / math.sqrt(180)
    b = torch.randn(36, generator=gen)
    geo = {"stride": (2, 2), "pad": (1, 1), "num_group": 2, "out_size": (4, 3)}
    dy = torch.randn(1, 36, 4, 3, generator=gen)
    y_ref, dx_ref, dw_ref = _oracle_all(x, w, b, dy, act="relu", **geo)
    saved = T.FLAT_K_MAX_CHANNELS
    T.FLAT_K_MAX_CHANNELS = 10**9 if flat else 0
    try:
        y, dx, dw = _run(x.to(DEVICE), w.to(DEVICE), b.to(DEVICE), dy.to(DEVICE), "relu", **geo)
    finally:
        T.FLAT_K_MAX_CHANNELS = saved
    _close(y, y_ref, rtol=1e-4, atol=1e-4)
    _close(dx, dx_ref, rtol=1e-4, atol=1e-4)
    _close(dw, dw_ref, rtol=1e-4, atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(g=_geometry(), seed=st.integers(0, 2**16))
def test_conv_fp16_matches_float64_oracle(g, seed):
    """fp16 inputs, fp32 accumulation, vs float64 F.conv2d / autograd on the same fp16-rounded values.

    y and dx are fp16 (rtol 2e-3, atol 2e-3 x output scale); dw is fp32 (rtol 1e-4, atol 1e-4 x scale).
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(g["n"], g["c"], g["H"], g["W"], generator=gen).half()
    w = torch.randn(g["k"], g["c"] // g["num_group"], g["R"], g["S"], generator=gen).half()
    b = torch.randn(g["k"], generator=gen).half()
    P, Q = g["out_size"]
    dy = torch.randn(g["n"], g["k"], P, Q, generator=gen).half()
    geo = {"stride": g["stride"], "pad": g["pad"], "num_group": g["num_group"], "out_size": g["out_size"]}
    y_ref, dx_ref, dw_ref = _oracle_all(x, w, b, dy, act="tanh", **geo)
    y, dx, dw = _run(x.to(DEVICE), w.to(DEVICE), b.to(DEVICE), dy.to(DEVICE), "tanh", **geo)
    assert y.dtype == dx.dtype == torch.float16 and dw.dtype == torch.float32
    _close(y, y_ref, rtol=2e-3, atol_rel=2e-3)
    _close(dx, dx_ref, rtol=2e-3, atol_rel=2e-3)
    _close(dw, dw_ref, rtol=1e-4, atol_rel=1e-4)


def test_weight_grad_split_is_deterministic_and_split_independent():
    """conv_backward_weight vs float64 torch.nn.grad.conv2d_weight, for 1 split and for many splits
    (rtol = atol = 1e-4), and bit-identical across repeated calls (fixed-order partial sum, no atomics)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 11, 9, generator=gen).to(DEVICE)
    dy = torch.randn(2, 6, 5, 4, generator=gen).to(DEVICE)
    geo = {"kernel": (3, 3), "stride": (2, 2), "pad": (0, 0), "num_group": 2}
    ref = torch.nn.grad.conv2d_weight(x.double(), (6, 2, 3, 3), dy.double(), stride=2, groups=2)
    saved = (T.SPLIT_PROGRAMS_PER_SM, T.MIN_SPLIT_ROWS)
    try:
        T.SPLIT_PROGRAMS_PER_SM, T.MIN_SPLIT_ROWS = 1, 10**9  # one split
        one = T.conv_backward_weight(dy, x, **geo)
        T.SPLIT_PROGRAMS_PER_SM, T.MIN_SPLIT_ROWS = 10**6, 1  # as many splits as chunks allow (3)
        many = T.conv_backward_weight(dy, x, **geo)
        again = T.conv_backward_weight(dy, x, **geo)
    finally:
        T.SPLIT_PROGRAMS_PER_SM, T.MIN_SPLIT_ROWS = saved
    _close(one, ref, rtol=1e-4, atol=1e-4)
    _close(many, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(many, again)


def test_empty_batch_and_bad_arguments():
    """Zero-sized batches give empty/zero results (oracle: F.conv2d shapes and zeros); a num_group that
    does not split the channels, unsupported dtypes and unknown activations raise."""
    x = torch.randn(0, 4, 5, 5, device=DEVICE)
    w = torch.randn(6, 2, 3, 3, device=DEVICE)
    y = T.conv(x, w, None, stride=1, pad=1, num_group=2, out_size=(5, 5), act="relu")
    assert y.shape == F.conv2d(x.cpu(), w.cpu(), padding=1, groups=2).shape
    dw = T.conv_backward_weight(torch.empty(0, 6, 5, 5, device=DEVICE), x, kernel=(3, 3), stride=1, pad=1,
                                num_group=2)
    assert dw.shape == (6, 2, 3, 3) and dw.dtype == torch.float32 and not dw.any()
    dx = T.conv_backward_data(torch.empty(0, 6, 5, 5, device=DEVICE), w, in_hw=(5, 5), stride=1, pad=1,
                              num_group=2)
    assert dx.shape == (0, 4, 5, 5)
    with pytest.raises(ValueError):
        T.conv(torch.randn(1, 4, 5, 5, device=DEVICE), w, None, stride=1, pad=1, num_group=3, out_size=(5, 5),
               act="none")
    with pytest.raises(ValueError):
        T.conv_backward_weight(torch.randn(1, 6, 5, 5, device=DEVICE), torch.randn(1, 4, 5, 5, device=DEVICE),
                               kernel=3, stride=1, pad=1, num_group=4)
    with pytest.raises(ValueError):  # dy has 5 channels, w says 6
        T.conv_backward_data(torch.randn(1, 5, 5, 5, device=DEVICE), w, in_hw=(5, 5), stride=1, pad=1,
                             num_group=2)
    with pytest.raises(TypeError):
        T.conv(torch.randn(1, 4, 5, 5, device=DEVICE, dtype=torch.float64), w.double(), None, stride=1, pad=1,
               num_group=2, out_size=(5, 5), act="none")
    with pytest.raises(ValueError):
        T.conv(torch.randn(1, 4, 5, 5, device=DEVICE), w, None, stride=1, pad=1, num_group=2, out_size=(5, 5),
               act="gelu")


@pytest.mark.parametrize("form", ["tuple", "list", "int"])
def test_backward_shapes_come_from_in_hw_and_kernel(form):
    """The backwards' size arguments: dx is (N from dy, w.shape[1] * num_group, *in_hw) and dw is
    (dy.shape[1], x.shape[1] // num_group, *kernel), whether the pair is a tuple, a list or one int
    (square); values vs float64 torch.nn.grad.conv2d_input / conv2d_weight, rtol = atol = 1e-4.
    A non-square input checks that in_hw is read as (H, W), not (W, H)."""
    gen = torch.Generator().manual_seed(5)
    H, W = (7, 7) if form == "int" else (7, 9)
    x = torch.randn(2, 6, H, W, generator=gen)
    w = torch.randn(9, 2, 3, 3, generator=gen)
    dy = torch.randn(2, 9, (H - 1) // 2 + 1, (W - 1) // 2 + 1, generator=gen)
    in_hw = {"tuple": (H, W), "list": [H, W], "int": H}[form]
    kernel = {"tuple": (3, 3), "list": [3, 3], "int": 3}[form]
    geo = {"stride": 2, "pad": 1, "num_group": 3}
    dx = T.conv_backward_data(dy.to(DEVICE), w.to(DEVICE), in_hw=in_hw, **geo)
    dw = T.conv_backward_weight(dy.to(DEVICE), x.to(DEVICE), kernel=kernel, **geo)
    assert dx.shape == (2, 6, H, W) and dw.shape == (9, 2, 3, 3)
    dx_ref = torch.nn.grad.conv2d_input((2, 6, H, W), w.double(), dy.double(), stride=2, padding=1, groups=3)
    dw_ref = torch.nn.grad.conv2d_weight(x.double(), (9, 2, 3, 3), dy.double(), stride=2, padding=1, groups=3)
    _close(dx, dx_ref, rtol=1e-4, atol=1e-4)
    _close(dw, dw_ref, rtol=1e-4, atol=1e-4)


# -- GPU: AlexNet layer shapes at small batch -----------------------------------------------------------
# (name, C_in, H, K, R, stride, pad, num_group, out); batch 2 instead of 128.
ALEXNET = [
    ("conv1", 3, 224, 96, 11, 4, 2, 1, 55),
    ("conv2", 96, 27, 256, 5, 1, 2, 2, 27),
    ("conv3", 256, 13, 384, 3, 1, 1, 1, 13),
    ("conv4", 384, 13, 384, 3, 1, 1, 2, 13),
    ("conv5", 384, 13, 256, 3, 1, 1, 2, 13),
]
# dtype, TF32 on?, (rtol, atol relative to max|oracle|) for y/dx, same for the fp32 dw.
GPU_PRECISIONS = [
    ("fp32-ieee", torch.float32, False, (1e-4, 1e-4), (1e-4, 1e-4)),
    ("fp32-tf32", torch.float32, True, (5e-3, 5e-3), (5e-3, 5e-3)),
    ("fp16", torch.float16, True, (2e-3, 2e-3), (1e-3, 1e-3)),
    ("bf16", torch.bfloat16, True, (1e-2, 1e-2), (1e-3, 1e-3)),
]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("prec", GPU_PRECISIONS, ids=[p[0] for p in GPU_PRECISIONS])
@pytest.mark.parametrize("layer", ALEXNET, ids=[a[0] for a in ALEXNET])
def test_alexnet_layers_on_gpu(layer, prec):
    """AlexNet conv shapes at batch 2, ReLU + bias, vs float64 F.conv2d / autograd on the rounded inputs.

    Tolerances per precision in GPU_PRECISIONS (atol relative to the oracle's largest magnitude)."""
    _, C, H, K, R, s, p, num_group, out = layer
    _, dtype, tf32, (rt, at), (rtw, atw) = prec
    gen = torch.Generator().manual_seed(3)
    fan_in = C // num_group * R * R
    x = torch.randn(2, C, H, H, generator=gen).to(dtype)
    w = (torch.randn(K, C // num_group, R, R, generator=gen) / math.sqrt(fan_in)).to(dtype)
    b = (0.1 * torch.randn(K, generator=gen)).to(dtype)
    dy = torch.randn(2, K, out, out, generator=gen).to(dtype)
    geo = {"stride": (s, s), "pad": (p, p), "num_group": num_group, "out_size": (out, out)}
    y_ref, dx_ref, dw_ref = _oracle_all(x, w, b, dy, act="relu", **geo)
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        y, dx, dw = _run(x.cuda(), w.cuda(), b.cuda(), dy.cuda(), "relu", **geo)
        torch.cuda.synchronize()
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    assert y.dtype == dx.dtype == dtype and dw.dtype == torch.float32
    _close(y, y_ref, rtol=rt, atol_rel=at)
    _close(dx, dx_ref, rtol=rt, atol_rel=at)
    _close(dw, dw_ref, rtol=rtw, atol_rel=atw)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_non_contiguous_on_gpu():
    """A sliced (non-contiguous) NCHW input and dy on the GPU, conv2-like grouped 5x5, IEEE fp32, vs float64
    F.conv2d / autograd; rtol = atol = 1e-4 x scale."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 32, 15, 15, generator=gen)
    w = torch.randn(64, 16, 5, 5, generator=gen) / 20
    dy = torch.randn(2, 64, 8, 8, generator=gen)
    geo = {"stride": (2, 2), "pad": (2, 2), "num_group": 2, "out_size": (8, 8)}
    y_ref, dx_ref, dw_ref = _oracle_all(x, w, None, dy, act="sigmoid", **geo)
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        xs, dys = _layout(x.cuda(), "sliced"), _layout(dy.cuda(), "sliced")
        assert not xs.is_contiguous() and not dys.is_contiguous()
        y, dx, dw = _run(xs, w.cuda(), None, dys, "sigmoid", **geo)
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    _close(y, y_ref, rtol=1e-4, atol_rel=1e-4)
    _close(dx, dx_ref, rtol=1e-4, atol_rel=1e-4)
    _close(dw, dw_ref, rtol=1e-4, atol_rel=1e-4)
