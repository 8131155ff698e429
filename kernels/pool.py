"""Triton max and average pooling, forward and backward, for overlapping windows (AlexNet's 3/2).

`maxpool` saves, per output, the offset r*kw + s of the winning cell inside its window (int8 for
windows of up to 127 cells: `shared.argmax_dtype`, so both backends save the same dtype).
`maxpool_backward` is a gather: each input pixel visits the at most ceil(kh/sh) x ceil(kw/sw)
windows that cover it and adds the gradient of those whose saved offset points at it. No atomics,
so the result is deterministic and overlapping windows just sum. Padding cells never win and ties
go to the first cell in row-major window order (as ATen's kernels do); NaN propagates. `avgpool`
divides by the number of window cells inside the input (count_include_pad=False), for ceil-rounded
outputs too. The backwards take the input's (H, W) as `in_hw`; N and C come from dy.
`globalmaxpool` / `globalavgpool` reduce each channel's whole map to 1x1, looping over it in tiles;
the max saves the int32 flat offset h*W + w of the first maximum (a NaN wins), and the backwards
write every dx pixel once (the saved pixel gets dy, or each pixel dy / (H*W)).

A program owns BLOCK_P output (or, backward, input) pixels x BLOCK_C channels of one image; addresses
come from each tensor's strides, so channels-last runs without a copy and loads coalesce along
channels (the tile is wide along channels then). Outputs keep the input's memory format.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .shared import argmax_dtype, pair


@triton.jit
def _pool_fwd_kernel(x_ptr, y_ptr, a_ptr, C, H, W, P, Q, n_ptiles,
                     xsn, xsc, xsh, xsw, ysn, ysc, ysh, ysw, asn, asc, ash, asw,
                     SH, SW, PH, PW,
                     KH: tl.constexpr, KW: tl.constexpr, IS_MAX: tl.constexpr,
                     BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    n = (pid // n_ptiles).to(tl.int64)
    op = (pid % n_ptiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = (tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    pm = op < P * Q
    cm = c < C
    oh = (op // Q).to(tl.int64)
    ow = (op % Q).to(tl.int64)
    h0 = oh * SH - PH
    w0 = ow * SW - PW
    xrow = x_ptr + n * xsn
    if IS_MAX:
        best = tl.full((BLOCK_P, BLOCK_C), float("-inf"), tl.float32)
        arg = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.int32)
        seen = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.int1)
    else:
        acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for r in tl.static_range(0, KH):
        ih = h0 + r
        hok = (ih >= 0) & (ih < H) & pm
        for s in tl.static_range(0, KW):
            iw = w0 + s
            ok = hok & (iw >= 0) & (iw < W)
            m = ok[:, None] & cm[None, :]
            ptr = xrow + (ih * xsh + iw * xsw)[:, None] + c[None, :] * xsc
            if IS_MAX:
                v = tl.load(ptr, mask=m, other=float("-inf")).to(tl.float32)
                # the first in-input cell always takes (so padding never wins, even over -inf)
                take = m & ((v > best) | (v != v) | (seen == 0))  # noqa: PLR0124 - v != v: v is NaN
                best = tl.where(take, v, best)
                arg = tl.where(take, r * KW + s, arg)
                seen = seen | m
            else:
                acc += tl.load(ptr, mask=m, other=0.0).to(tl.float32)
    om = pm[:, None] & cm[None, :]
    if IS_MAX:
        tl.store(y_ptr + n * ysn + (oh * ysh + ow * ysw)[:, None] + c[None, :] * ysc,
                 best.to(y_ptr.dtype.element_ty), mask=om)
        tl.store(a_ptr + n * asn + (oh * ash + ow * asw)[:, None] + c[None, :] * asc,
                 arg.to(a_ptr.dtype.element_ty), mask=om)
    else:
        cnt = ((tl.minimum(h0 + KH, H) - tl.maximum(h0, 0)) * (tl.minimum(w0 + KW, W) - tl.maximum(w0, 0)))
        cnt = tl.maximum(cnt, 1).to(tl.float32)
        tl.store(y_ptr + n * ysn + (oh * ysh + ow * ysw)[:, None] + c[None, :] * ysc,
                 (acc / cnt[:, None]).to(y_ptr.dtype.element_ty), mask=om)


@triton.jit
def _pool_bwd_kernel(g_ptr, a_ptr, dx_ptr, C, H, W, P, Q, n_ptiles,
                     gsn, gsc, gsh, gsw, asn, asc, ash, asw, osn, osc, osh, osw,
                     SH, SW, PH, PW,
                     KH: tl.constexpr, KW: tl.constexpr, NWH: tl.constexpr, NWW: tl.constexpr,
                     IS_MAX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    n = (pid // n_ptiles).to(tl.int64)
    ip = (pid % n_ptiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = (tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    pm = ip < H * W
    cm = c < C
    ih = (ip // W).to(tl.int64)
    iw = (ip % W).to(tl.int64)
    hp = ih + PH
    wp = iw + PW
    oh_hi = hp // SH
    ow_hi = wp // SW
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    grow = g_ptr + n * gsn
    arow = a_ptr + n * asn
    # windows covering row hp: oh in (hp - KH) / SH < oh <= hp / SH, at most NWH = ceil(KH / SH) of them
    for i in tl.static_range(0, NWH):
        oh = oh_hi - i
        r = hp - oh * SH
        okh = (oh >= 0) & (oh < P) & (r < KH) & pm
        for j in tl.static_range(0, NWW):
            ow = ow_hi - j
            s = wp - ow * SW
            ok = okh & (ow >= 0) & (ow < Q) & (s < KW)
            m = ok[:, None] & cm[None, :]
            g = tl.load(grow + (oh * gsh + ow * gsw)[:, None] + c[None, :] * gsc, mask=m, other=0.0)
            g = g.to(tl.float32)
            if IS_MAX:
                a = tl.load(arow + (oh * ash + ow * asw)[:, None] + c[None, :] * asc, mask=m, other=-1)
                acc += tl.where(a.to(tl.int64) == (r * KW + s)[:, None], g, 0.0)
            else:
                h0 = oh * SH - PH
                w0 = ow * SW - PW
                cnt = (tl.minimum(h0 + KH, H) - tl.maximum(h0, 0)) * (tl.minimum(w0 + KW, W) - tl.maximum(w0, 0))
                acc += g / tl.maximum(cnt, 1).to(tl.float32)[:, None]
    tl.store(dx_ptr + n * osn + (ih * osh + iw * osw)[:, None] + c[None, :] * osc,
             acc.to(dx_ptr.dtype.element_ty), mask=pm[:, None] & cm[None, :])


def _channels_last(t: torch.Tensor) -> bool:
    return t.shape[1] > 1 and t.stride(1) == 1


def _tiles(C: int, pixels: int, channels_last: bool) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C) of 1K elements, wide along the axis that is contiguous in memory."""
    if channels_last:
        bc = min(64, triton.next_power_of_2(max(C, 1)))
        return max(16, 1024 // bc), bc
    bp = min(128, max(16, triton.next_power_of_2(max(pixels, 1))))
    return bp, max(8, 1024 // bp)


def _empty(shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
    fmt = torch.channels_last if _channels_last(like) and not like.is_contiguous() else torch.contiguous_format
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=fmt)


def _geometry(kernel, stride, pad):
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride), pair(pad)
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"pooling needs kernel, stride >= 1 and pad >= 0 (got {kernel}, {stride}, {pad})")
    return kh, kw, sh, sw, ph, pw


def _forward(x, kernel, stride, pad, out_size, is_max):
    if x.dim() != 4:
        raise ValueError(f"pooling expects a 4-d (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    kh, kw, sh, sw, ph, pw = _geometry(kernel, stride, pad)
    P, Q = pair(out_size)
    N, C, H, W = x.shape
    y = _empty((N, C, P, Q), x)
    a = _empty((N, C, P, Q), x, argmax_dtype((kh, kw))) if is_max else y
    if y.numel():
        bp, bc = _tiles(C, P * Q, _channels_last(x))
        n_ptiles = triton.cdiv(P * Q, bp)
        _pool_fwd_kernel[(N * n_ptiles, triton.cdiv(C, bc))](
            x, y, a, C, H, W, P, Q, n_ptiles, *x.stride(), *y.stride(), *a.stride(),
            sh, sw, ph, pw, KH=kh, KW=kw, IS_MAX=is_max, BLOCK_P=bp, BLOCK_C=bc)
    return (y, a) if is_max else y


def _backward(dy, argmax, in_hw, kernel, stride, pad, is_max):
    kh, kw, sh, sw, ph, pw = _geometry(kernel, stride, pad)
    H, W = pair(in_hw)
    N, C, P, Q = dy.shape
    dx = _empty((N, C, H, W), dy)
    a = argmax if is_max else dy
    if dx.numel():
        bp, bc = _tiles(C, H * W, _channels_last(dy))
        n_ptiles = triton.cdiv(H * W, bp)
        _pool_bwd_kernel[(N * n_ptiles, triton.cdiv(C, bc))](
            dy, a, dx, C, H, W, P, Q, n_ptiles, *dy.stride(), *a.stride(), *dx.stride(),
            sh, sw, ph, pw, KH=kh, KW=kw, NWH=triton.cdiv(kh, sh), NWW=triton.cdiv(kw, sw),
            IS_MAX=is_max, BLOCK_P=bp, BLOCK_C=bc)
    return dx


def maxpool(x, *, kernel, stride, pad, out_size):
    return _forward(x, kernel, stride, pad, out_size, True)


def maxpool_backward(dy, argmax, *, in_hw, kernel, stride, pad):
    if argmax.shape != dy.shape:
        raise ValueError(f"maxpool_backward: argmax {tuple(argmax.shape)} and dy {tuple(dy.shape)} differ")
    return _backward(dy, argmax, in_hw, kernel, stride, pad, True)


def avgpool(x, *, kernel, stride, pad, out_size):
    return _forward(x, kernel, stride, pad, out_size, False)


def avgpool_backward(dy, *, in_hw, kernel, stride, pad):
    return _backward(dy, None, in_hw, kernel, stride, pad, False)


# -- global pooling: the window is the whole map ----------------------------------------------------------
@triton.jit
def _gpool_fwd_kernel(x_ptr, y_ptr, a_ptr, C, HW, W, xsn, xsc, xsh, xsw, ysn, ysc, asn, asc,
                      IS_MAX: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    # One program: BLOCK_C channels of one image, looping over the map BLOCK_HW pixels at a time.
    n = tl.program_id(0).to(tl.int64)
    c = (tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    cm = c < C
    xrow = x_ptr + n * xsn
    if IS_MAX:
        best = tl.full((BLOCK_C,), float("-inf"), tl.float32)
        arg = tl.full((BLOCK_C,), -1, tl.int32)
    else:
        acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for start in range(0, HW, BLOCK_HW):
        p = start + tl.arange(0, BLOCK_HW)
        pm = p < HW
        h = (p // W).to(tl.int64)
        w = (p % W).to(tl.int64)
        m = pm[:, None] & cm[None, :]
        v = tl.load(xrow + (h * xsh + w * xsw)[:, None] + c[None, :] * xsc, mask=m, other=0.0).to(tl.float32)
        if IS_MAX:
            # NaN ranks above everything (ATen propagates it); padding lanes below everything.
            key = tl.where(v != v, float("inf"), v)  # noqa: PLR0124 - v != v: v is NaN
            key = tl.where(m, key, float("-inf"))
            tmax = tl.max(key, axis=0)
            # the first pixel holding the tile's maximum (ties: row-major first, as ATen)
            cand = tl.where(m & (key == tmax[None, :]), p[:, None], 2147483647)
            targ = tl.min(cand, axis=0)
            take = (tmax > best) | ((arg < 0) & (targ < HW))
            best = tl.where(take, tmax, best)
            arg = tl.where(take, targ, arg)
        else:
            acc += tl.sum(v, axis=0)
    if IS_MAX:
        safe = tl.maximum(arg, 0).to(tl.int64)
        # the value itself at the winning offset (a NaN stays a NaN)
        y = tl.load(xrow + (safe // W) * xsh + (safe % W) * xsw + c * xsc, mask=cm, other=0.0)
        tl.store(y_ptr + n * ysn + c * ysc, y.to(y_ptr.dtype.element_ty), mask=cm)
        tl.store(a_ptr + n * asn + c * asc, arg, mask=cm)
    else:
        tl.store(y_ptr + n * ysn + c * ysc, (acc / HW).to(y_ptr.dtype.element_ty), mask=cm)


@triton.jit
def _gpool_bwd_kernel(g_ptr, a_ptr, dx_ptr, C, HW, W, gsn, gsc, asn, asc, osn, osc, osh, osw,
                      IS_MAX: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    # One program writes BLOCK_HW pixels x BLOCK_C channels of one image's dx: no atomics.
    n = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c = (tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    pm = p < HW
    cm = c < C
    g = tl.load(g_ptr + n * gsn + c * gsc, mask=cm, other=0.0).to(tl.float32)
    if IS_MAX:
        a = tl.load(a_ptr + n * asn + c * asc, mask=cm, other=-1)
        dx = tl.where(p[:, None] == a[None, :], g[None, :], 0.0)
    else:
        dx = tl.zeros((BLOCK_HW, BLOCK_C), dtype=tl.float32) + (g / HW)[None, :]
    h = (p // W).to(tl.int64)
    w = (p % W).to(tl.int64)
    tl.store(dx_ptr + n * osn + (h * osh + w * osw)[:, None] + c[None, :] * osc,
             dx.to(dx_ptr.dtype.element_ty), mask=pm[:, None] & cm[None, :])


def _gpool_tiles(C: int, HW: int) -> tuple[int, int]:
    """(BLOCK_HW, BLOCK_C): up to 64 channels, and pixels to make about 2K elements (at least 16)."""
    bc = min(64, max(16, triton.next_power_of_2(max(C, 1))))
    return max(16, min(triton.next_power_of_2(max(HW, 1)), 2048 // bc)), bc


def _global_forward(x, is_max):
    if x.dim() != 4:
        raise ValueError(f"global pooling expects a 4-d (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    N, C, H, W = x.shape
    if H * W == 0:
        raise ValueError(f"global pooling of an empty map {H}x{W}")
    y = torch.empty((N, C, 1, 1), dtype=x.dtype, device=x.device)
    a = torch.empty((N, C, 1, 1), dtype=torch.int32, device=x.device) if is_max else y
    if y.numel():
        bhw, bc = _gpool_tiles(C, H * W)
        _gpool_fwd_kernel[(N, triton.cdiv(C, bc))](
            x, y, a, C, H * W, W, *x.stride(), y.stride(0), y.stride(1), a.stride(0), a.stride(1),
            IS_MAX=is_max, BLOCK_HW=bhw, BLOCK_C=bc)
    return (y, a) if is_max else y


def _global_backward(dy, argmax, in_hw, is_max):
    H, W = pair(in_hw)
    N, C = dy.shape[0], dy.shape[1]
    if tuple(dy.shape[2:]) != (1, 1):
        raise ValueError(f"global pooling backward expects dy of shape (N, C, 1, 1), got {tuple(dy.shape)}")
    dx = torch.empty((N, C, H, W), dtype=dy.dtype, device=dy.device)
    a = argmax if is_max else dy
    if dx.numel():
        bhw, bc = _gpool_tiles(C, H * W)
        bhw = min(bhw, 128)
        _gpool_bwd_kernel[(N, triton.cdiv(H * W, bhw), triton.cdiv(C, bc))](
            dy, a, dx, C, H * W, W, dy.stride(0), dy.stride(1), a.stride(0), a.stride(1), *dx.stride(),
            IS_MAX=is_max, BLOCK_HW=bhw, BLOCK_C=bc)
    return dx


def globalmaxpool(x):
    return _global_forward(x, True)


def globalmaxpool_backward(dy, argmax, *, in_hw):
    if argmax.shape != dy.shape:
        raise ValueError(f"globalmaxpool_backward: argmax {tuple(argmax.shape)} and dy {tuple(dy.shape)} differ")
    return _global_backward(dy, argmax, in_hw, True)


def globalavgpool(x):
    return _global_forward(x, False)


def globalavgpool_backward(dy, *, in_hw):
    return _global_backward(dy, None, in_hw, False)
