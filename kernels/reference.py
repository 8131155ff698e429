"""The reference backend: every function of the kernel contract (docs/kernel-interface.md) on ATen ops.

Two jobs. It is the CPU training path, so each function is a handful of fused ATen calls with no
Python loop over elements (the only loops run over the n offsets of an LRN window). And it is the
oracle the Triton kernels are tested against, so the semantics the contract leaves to a backend are
fixed here once: `out_size` larger than the floor size means the missing bottom/right cells are
zeros (conv) or never win (max pool); max-pool ties go to the first cell in row-major window order
(as ATen's own kernels do); the dropout mask comes from the integer hash below, which the Triton
kernel reproduces bit for bit.

Half-precision inputs on the CPU are computed in fp32 and cast back (ATen's CPU half kernels are
slow or missing, and the contract asks for fp32 accumulation anyway).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

name = "reference"

_HALF = (torch.float16, torch.bfloat16)


def describe() -> str:
    return f"reference backend (ATen ops, torch {torch.__version__})"


def _up(t: torch.Tensor) -> torch.Tensor:
    """fp32 compute copy of a half tensor on the CPU; on CUDA ATen already accumulates in fp32."""
    if t.dtype in _HALF and t.device.type == "cpu":
        return t.float()
    return t


def _f(t: torch.Tensor) -> torch.Tensor:
    """At least fp32 (float64 stays float64, so the reference can be its own float64 oracle)."""
    return t if t.dtype == torch.float64 else t.float()


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def _extra(n: int, out: int, k: int, s: int, p: int) -> int:
    """Cells of bottom/right padding beyond `p` that `out` windows need (ceil rounding)."""
    return max(0, (out - 1) * s + k - (n + 2 * p))


# -- activations ----------------------------------------------------------------------------------------
def act_forward(x: torch.Tensor, act: str) -> torch.Tensor:
    if act == "none":
        return x
    if act == "relu":
        return torch.relu(x)
    if act == "tanh":
        return torch.tanh(_up(x)).to(x.dtype)
    if act == "sigmoid":
        return torch.sigmoid(_up(x)).to(x.dtype)
    raise ValueError(f"unknown activation {act!r} (expected none, relu, tanh or sigmoid)")


def act_backward(dy: torch.Tensor, y: torch.Tensor, act: str) -> torch.Tensor:
    if act == "none":
        return dy
    if act == "relu":
        return torch.where(y > 0, dy, torch.zeros((), dtype=dy.dtype, device=dy.device))
    d, o = _up(dy), _up(y)
    if act == "tanh":
        return (d * (1 - o * o)).to(dy.dtype)
    if act == "sigmoid":
        return (d * o * (1 - o)).to(dy.dtype)
    raise ValueError(f"unknown activation {act!r} (expected none, relu, tanh or sigmoid)")


def bias_backward(dy: torch.Tensor) -> torch.Tensor:
    dims = [d for d in range(dy.dim()) if d != 1]
    return dy.sum(dim=dims, dtype=torch.float64 if dy.dtype == torch.float64 else torch.float32)


# -- convolution ------------------------------------------------------------------------------------------
def conv2d(x, w, b, *, stride, pad, groups, out_size, act):
    (sh, sw), (ph, pw), (P, Q) = _pair(stride), _pair(pad), _pair(out_size)
    K, _, R, S = w.shape
    H, W = x.shape[2], x.shape[3]
    xu = _up(x)
    bias = None if b is None else _up(b).to(xu.dtype)
    eh, ew = _extra(H, P, R, sh, ph), _extra(W, Q, S, sw, pw)
    if eh == 0 and ew == 0:  # the usual (floor) case: let ATen pad, no padded copy of the input
        y = F.conv2d(xu, _up(w), bias, stride=(sh, sw), padding=(ph, pw), groups=groups)
    else:
        y = F.conv2d(F.pad(xu, (pw, pw + ew, ph, ph + eh)), _up(w), bias, stride=(sh, sw), groups=groups)
    y = y[:, :, :P, :Q]
    return act_forward(y, act).to(x.dtype)


def conv2d_backward_data(dy, w, *, x_shape, stride, pad, groups):
    (sh, sw), (ph, pw) = _pair(stride), _pair(pad)
    H, W = x_shape[2], x_shape[3]
    P, Q = dy.shape[2], dy.shape[3]
    R, S = w.shape[2], w.shape[3]
    if P == (H + 2 * ph - R) // sh + 1 and Q == (W + 2 * pw - S) // sw + 1:
        # floor-sized output: ATen's own input gradient, no padded intermediate
        return torch.nn.grad.conv2d_input(tuple(x_shape), _up(w), _up(dy), stride=(sh, sw), padding=(ph, pw),
                                          groups=groups).to(dy.dtype)
    # Gradient w.r.t. the padded (and ceil-extended) input, then cut out the real input.
    full = F.conv_transpose2d(_up(dy), _up(w), stride=(sh, sw), groups=groups)
    fh, fw = full.shape[2], full.shape[3]
    full = F.pad(full, (0, max(0, W + 2 * pw - fw), 0, max(0, H + 2 * ph - fh)))
    return full[:, :, ph:ph + H, pw:pw + W].to(dy.dtype).contiguous()


def conv2d_backward_weight(dy, x, *, w_shape, stride, pad, groups):
    (sh, sw), (ph, pw) = _pair(stride), _pair(pad)
    R, S = w_shape[2], w_shape[3]
    P, Q = dy.shape[2], dy.shape[3]
    H, W = x.shape[2], x.shape[3]
    if P == (H + 2 * ph - R) // sh + 1 and Q == (W + 2 * pw - S) // sw + 1:
        # floor-sized output: ATen pads internally
        return torch.nn.grad.conv2d_weight(_f(x), tuple(w_shape), _f(dy), stride=(sh, sw), padding=(ph, pw),
                                           groups=groups)
    xp = F.pad(_f(x), (pw, pw + _extra(W, Q, S, sw, pw), ph, ph + _extra(H, P, R, sh, ph)))
    # out_size may be below the floor size (a ceil-rounded last window that would start in the
    # padding is dropped): keep exactly the rows/columns the P x Q windows read
    xp = xp[:, :, :(P - 1) * sh + R, :(Q - 1) * sw + S]
    return torch.nn.grad.conv2d_weight(xp, tuple(w_shape), _f(dy), stride=(sh, sw), padding=0,
                                       groups=groups)


# -- fully connected ---------------------------------------------------------------------------------------
def linear(x, w, b, act):
    y = F.linear(_up(x), _up(w), None if b is None else _up(b).to(_up(x).dtype))
    return act_forward(y, act).to(x.dtype)


def linear_backward_data(dy, w):
    return (_up(dy) @ _up(w).to(_up(dy).dtype)).to(dy.dtype)


def linear_backward_weight(dy, x):
    return _f(dy).t() @ _f(x)


# -- local response normalisation --------------------------------------------------------------------------
def _channel_window_sum(t: torch.Tensor, size: int) -> torch.Tensor:
    """sum over c' in [c - size//2, c + size//2] (clipped) along dim 1: shifted adds, exact.

    The window is the contract's, 2*(size//2) + 1 wide: `size` itself for the odd sizes every spec
    uses; an even size gets the symmetric window one wider (ATen instead drops the last channel)."""
    half = size // 2
    tp = F.pad(t, (0, 0, 0, 0, half, half))
    C = t.shape[1]
    acc = tp[:, 0:C].clone()
    for i in range(1, 2 * half + 1):
        acc += tp[:, i:i + C]
    return acc


def _alpha_eff(size, alpha, alpha_over_n) -> float:
    return alpha / size if alpha_over_n else alpha


def lrn(x, *, size, k, alpha, beta, alpha_over_n):
    xf = _f(x)
    scale = _channel_window_sum(xf * xf, size).mul_(_alpha_eff(size, alpha, alpha_over_n)).add_(k)
    y = xf * scale.pow(-beta)
    return y.to(x.dtype), scale.to(x.dtype)


def lrn_backward(dy, x, y, scale, *, size, k, alpha, beta, alpha_over_n):
    d, s = _f(dy), _f(scale)
    t = _channel_window_sum(d * _f(y) / s, size)
    dx = d * s.pow(-beta) - (2.0 * _alpha_eff(size, alpha, alpha_over_n) * beta) * _f(x) * t
    return dx.to(dy.dtype)


# -- pooling ------------------------------------------------------------------------------------------------
def argmax_dtype(kernel) -> torch.dtype:
    kh, kw = _pair(kernel)
    cells = kh * kw
    return torch.int8 if cells <= 127 else torch.int16 if cells <= 32767 else torch.int32


def max_pool(x, *, kernel, stride, pad, out_size):
    (kh, kw), (sh, sw), (ph, pw), (P, Q) = _pair(kernel), _pair(stride), _pair(pad), _pair(out_size)
    N, C, H, W = x.shape
    xp = F.pad(_up(x), (pw, pw + _extra(W, Q, kw, sw, pw), ph, ph + _extra(H, P, kh, sh, ph)),
               value=float("-inf"))
    y, idx = F.max_pool2d(xp, (kh, kw), (sh, sw), return_indices=True)
    y, idx = y[:, :, :P, :Q], idx[:, :, :P, :Q]
    Wp = xp.shape[3]
    oh = torch.arange(P, device=x.device).view(P, 1) * sh
    ow = torch.arange(Q, device=x.device).view(1, Q) * sw
    r = torch.div(idx, Wp, rounding_mode="floor") - oh
    s = idx.remainder(Wp) - ow
    return y.to(x.dtype).contiguous(), (r * kw + s).to(argmax_dtype((kh, kw))).contiguous()


def max_pool_backward(dy, argmax, *, x_shape, kernel, stride, pad):
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(pad)
    N, C, H, W = x_shape
    P, Q = dy.shape[2], dy.shape[3]
    Hp = max(H + 2 * ph, (P - 1) * sh + kh)
    Wp = max(W + 2 * pw, (Q - 1) * sw + kw)
    off = argmax.long()
    r = torch.div(off, kw, rounding_mode="floor")
    s = off - r * kw
    ih = r + (torch.arange(P, device=dy.device).view(P, 1) * sh)
    iw = s + (torch.arange(Q, device=dy.device).view(1, Q) * sw)
    flat = (ih * Wp + iw).reshape(N, C, P * Q)
    g = _f(dy)
    dxp = torch.zeros((N, C, Hp * Wp), dtype=g.dtype, device=dy.device)
    dxp.scatter_add_(2, flat, g.reshape(N, C, P * Q))
    dx = dxp.view(N, C, Hp, Wp)[:, :, ph:ph + H, pw:pw + W]
    return dx.to(dy.dtype).contiguous()


def _avg_counts(H, W, P, Q, kernel, stride, pad, device):
    """(P, Q) number of window cells inside the input: the count_include_pad=False divisor."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    rows = (torch.arange(P, device=device) * sh - ph)
    cols = (torch.arange(Q, device=device) * sw - pw)
    nh = (rows + kh).clamp(max=H) - rows.clamp(min=0)
    nw = (cols + kw).clamp(max=W) - cols.clamp(min=0)
    return (nh.view(P, 1) * nw.view(1, Q)).clamp(min=1)


def avg_pool(x, *, kernel, stride, pad, out_size):
    (kh, kw), (sh, sw), (ph, pw), (P, Q) = _pair(kernel), _pair(stride), _pair(pad), _pair(out_size)
    N, C, H, W = x.shape
    xp = F.pad(_f(x), (pw, pw + _extra(W, Q, kw, sw, pw), ph, ph + _extra(H, P, kh, sh, ph)))
    total = F.avg_pool2d(xp, (kh, kw), (sh, sw), divisor_override=1)[:, :, :P, :Q]
    y = total / _avg_counts(H, W, P, Q, (kh, kw), (sh, sw), (ph, pw), x.device)
    return y.to(x.dtype).contiguous()


def avg_pool_backward(dy, *, x_shape, kernel, stride, pad):
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(pad)
    N, C, H, W = x_shape
    P, Q = dy.shape[2], dy.shape[3]
    g = _f(dy) / _avg_counts(H, W, P, Q, (kh, kw), (sh, sw), (ph, pw), dy.device)
    ones = torch.ones((1, 1, kh, kw), dtype=g.dtype, device=dy.device)
    full = F.conv_transpose2d(g.reshape(N * C, 1, P, Q), ones, stride=(sh, sw))
    fh, fw = full.shape[2], full.shape[3]
    full = F.pad(full, (0, max(0, W + 2 * pw - fw), 0, max(0, H + 2 * ph - fh)))
    return full[:, :, ph:ph + H, pw:pw + W].reshape(N, C, H, W).to(dy.dtype).contiguous()


# -- dropout ------------------------------------------------------------------------------------------------
# The mask is a pure function of (seed, step, offset + flat NCHW index): a 32-bit integer hash that Triton
# computes in uint32 and this file in int64 with explicit masking (torch has no uint32 arithmetic).
# Host side, (seed, step) become two 32-bit keys; per element:
#   h = mix(lo * GOLDEN + key_a);  h = mix(h ^ key_b ^ hi * HI_MUL);  keep iff (h >> 8) >= round(p * 2^24)
# with lo/hi the low/high 32 bits of the index and mix() the "lowbias32" finaliser.
M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9
HI_MUL = 0x85EBCA77
MIX1 = 0x7FEB352D
MIX2 = 0x846CA68B


def _mix32_int(x: int) -> int:
    x &= M32
    x ^= x >> 16
    x = (x * MIX1) & M32
    x ^= x >> 15
    x = (x * MIX2) & M32
    x ^= x >> 16
    return x


def dropout_keys(seed: int, step: int) -> tuple[int, int]:
    """The two 32-bit keys of (seed, step); both backends call this on the host."""
    seed, step = int(seed), int(step)
    a = _mix32_int(_mix32_int(seed & M32) ^ ((seed >> 32) & M32) ^ 0x243F6A88)
    b = _mix32_int(_mix32_int((step & M32) + a) ^ ((step >> 32) & M32) ^ 0x13198A2E)
    return a, b


def dropout_threshold(p: float) -> int:
    """keep iff the hash's top 24 bits are >= this: P(keep) = 1 - p to within 2^-24."""
    return min(1 << 24, max(0, int(round(float(p) * (1 << 24)))))


def _mul32_(x: torch.Tensor, c: int) -> torch.Tensor:
    """x <- (x * c) mod 2^32 for int64 x in [0, 2^32), in place: c is split in 16-bit halves so no
    product passes 2^63 (int64 overflow is not something to rely on)."""
    hi = x * (c >> 16)
    hi.bitwise_and_(0xFFFF).bitwise_left_shift_(16)
    return x.mul_(c & 0xFFFF).add_(hi).bitwise_and_(M32)


def _mix32_(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 in place (in-place ops: at fc6's 0.5M elements fresh temporaries cost more than the math)."""
    x.bitwise_xor_(x >> 16)
    _mul32_(x, MIX1)
    x.bitwise_xor_(x >> 15)
    _mul32_(x, MIX2)
    return x.bitwise_xor_(x >> 16)


def dropout_hash_of(idx: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """The 32-bit hash (as int64) of each flat element index in `idx` (int64, >= 0)."""
    a, b = dropout_keys(seed, step)
    h = _mix32_(_mul32_(idx & M32, GOLDEN).add_(a).bitwise_and_(M32))
    h.bitwise_xor_(b)
    hi = idx >> 32
    if bool(hi.any()):  # indices past 2^32 only: below, hi * HI_MUL is 0
        h.bitwise_xor_(_mul32_(hi, HI_MUL))
    return _mix32_(h)


def dropout_hash(numel: int, seed: int, step: int, device=None, offset: int = 0) -> torch.Tensor:
    """The hash of every flat index in [offset, offset + numel)."""
    idx = torch.arange(offset, offset + numel, dtype=torch.int64, device=device)
    if offset + numel > (1 << 32):
        return dropout_hash_of(idx, seed, step)
    a, b = dropout_keys(seed, step)
    h = _mix32_(_mul32_(idx, GOLDEN).add_(a).bitwise_and_(M32))  # arange is fresh: hash it in place
    return _mix32_(h.bitwise_xor_(b))


def dropout_mask(shape, seed: int, step: int, p: float, device=None, offset: int = 0) -> torch.Tensor:
    """bool mask (True = kept) of the given logical shape; element i is hashed as index offset + i."""
    numel = 1
    for d in shape:
        numel *= int(d)
    keep = (dropout_hash(numel, seed, step, device, offset) >> 8) >= dropout_threshold(p)
    return keep.view(tuple(shape))


def _dropout_apply(t: torch.Tensor, p: float, seed: int, step: int, offset: int = 0) -> torch.Tensor:
    if p <= 0:
        return t.clone()
    if p >= 1:
        return torch.zeros_like(t)
    keep = dropout_mask(t.shape, seed, step, p, t.device, _check_offset(offset))
    return torch.where(keep, _up(t) * (1.0 / (1.0 - p)), 0.0).to(t.dtype)


def _check_offset(offset) -> int:
    offset = int(offset)
    if offset < 0:
        raise ValueError(f"dropout element offset {offset} is negative")
    return offset


def dropout(x, *, p, seed, step, offset=0):
    """`offset`: the flat index of x's first element in a larger (global) batch, so a shard of a batch
    gets the mask rows the whole batch would (offset = first sample index * elements per sample)."""
    return _dropout_apply(x, p, seed, step, offset)


def dropout_backward(dy, *, p, seed, step, offset=0):
    return _dropout_apply(dy, p, seed, step, offset)


# -- softmax + cross-entropy ---------------------------------------------------------------------------------
def softmax_cross_entropy(logits, labels):
    """(mean loss, probs), both fp32: the probabilities feed the backward and stay at full precision."""
    logp = torch.log_softmax(_f(logits), dim=1)
    loss = -logp.gather(1, labels.long().view(-1, 1)).mean()
    return loss, logp.exp()


def softmax_cross_entropy_backward(probs, labels, dloss):
    N = probs.shape[0]
    g = _f(probs).clone()
    g[torch.arange(N, device=probs.device), labels.long()] -= 1.0
    if isinstance(dloss, torch.Tensor):
        dloss = _f(dloss).to(probs.device)
    return g.mul_(dloss / N).to(probs.dtype)
