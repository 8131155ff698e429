"""Triton LRN across channels: `lrn` saving `scale`, `lrn_backward` in one pass from what it saved.

    scale_c = k + a' * sum_{c' in [c - size//2, c + size//2], clipped} x_c'^2,   a' = `alpha` as given
    y_c     = x_c * scale_c^-beta
    dx_c    = dy_c * scale_c^-beta - 2 a' beta x_c * sum_{c' in window(c)} dy_c' y_c' / scale_c'

`alpha` is already the effective a': the compiler divides a spec's alpha by `size` when the spec says
alpha_over_n, so no kernel needs to know the convention.

One program owns a tile of BLOCK_P pixels x BLOCK_C channels of one image (grid: pixel tiles,
channel tiles, batch), addressed as batch*sn + pixel*sp + channel*sc. The window sum is one shifted,
masked load of the neighbouring channels per window offset (a static loop): the halo comes from
L1/L2, there is no cross-program reduction, and any channel count works (not just one power-of-2
block).
Addresses come from the tensor's own strides, so NCHW and channels-last inputs both run without a
copy (Triton specialises the unit stride, so the loads vectorise along pixels for NCHW and along
channels for channels-last); only layouts where H and W do not merge into one pixel axis are copied.
pow is exp2(-beta * log2(scale)) (scale >= k > 0). Math in fp32; y and scale stored in x's dtype.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _lrn_fwd_kernel(x_ptr, y_ptr, s_ptr, C, HW, xsn, xsc, xsp, osn, osc, osp,
                    k, alpha_eff, neg_beta,
                    HALF: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    p = (tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
    c = (tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    n = tl.program_id(2).to(tl.int64)
    pm = p < HW
    xrow = x_ptr + n * xsn + p * xsp
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for d in tl.static_range(0, 2 * HALF + 1):
        cc = c + (d - HALF)
        m = pm[:, None] & ((cc >= 0) & (cc < C))[None, :]
        v = tl.load(xrow[:, None] + cc[None, :] * xsc, mask=m, other=0.0).to(tl.float32)
        acc += v * v
    m = pm[:, None] & (c < C)[None, :]
    x = tl.load(xrow[:, None] + c[None, :] * xsc, mask=m, other=0.0).to(tl.float32)
    scale = k + alpha_eff * acc
    y = x * tl.exp2(neg_beta * tl.log2(scale))
    off = n * osn + p[:, None] * osp + c[None, :] * osc
    tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=m)
    tl.store(s_ptr + off, scale.to(s_ptr.dtype.element_ty), mask=m)


@triton.jit
def _lrn_bwd_kernel(dy_ptr, x_ptr, y_ptr, s_ptr, dx_ptr, C, HW,
                    gsn, gsc, gsp, xsn, xsc, xsp, ysn, ysc, ysp, ssn, ssc, ssp, osn, osc, osp,
                    coef, neg_beta,
                    HALF: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    p = (tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
    c = (tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    n = tl.program_id(2).to(tl.int64)
    pm = p < HW
    grow = dy_ptr + n * gsn + p * gsp
    yrow = y_ptr + n * ysn + p * ysp
    srow = s_ptr + n * ssn + p * ssp
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    # The window is symmetric, so the channels whose windows contain c are exactly c's own window.
    for d in tl.static_range(0, 2 * HALF + 1):
        cc = c + (d - HALF)
        m = pm[:, None] & ((cc >= 0) & (cc < C))[None, :]
        g = tl.load(grow[:, None] + cc[None, :] * gsc, mask=m, other=0.0).to(tl.float32)
        yv = tl.load(yrow[:, None] + cc[None, :] * ysc, mask=m, other=0.0).to(tl.float32)
        sv = tl.load(srow[:, None] + cc[None, :] * ssc, mask=m, other=1.0).to(tl.float32)
        acc += g * yv / sv
    m = pm[:, None] & (c < C)[None, :]
    g = tl.load(grow[:, None] + c[None, :] * gsc, mask=m, other=0.0).to(tl.float32)
    sv = tl.load(srow[:, None] + c[None, :] * ssc, mask=m, other=1.0).to(tl.float32)
    x = tl.load(x_ptr + n * xsn + p[:, None] * xsp + c[None, :] * xsc, mask=m, other=0.0).to(tl.float32)
    dx = g * tl.exp2(neg_beta * tl.log2(sv)) - coef * x * acc
    tl.store(dx_ptr + n * osn + p[:, None] * osp + c[None, :] * osc, dx.to(dx_ptr.dtype.element_ty), mask=m)


def _nc_p(t: torch.Tensor) -> torch.Tensor:
    """t, or a contiguous copy when (H, W) cannot be walked as one pixel axis with a single stride."""
    H, W = t.shape[2], t.shape[3]
    if H == 1 or W == 1 or t.stride(2) == W * t.stride(3):
        return t
    return t.contiguous()


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(batch, channel, pixel) strides of a tensor that passed `_nc_p`."""
    return t.stride(0), t.stride(1), (t.stride(2) if t.shape[3] == 1 else t.stride(3))


def _tiles(C: int, HW: int, channels_last: bool, elements: int = 2048) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C), about `elements`: wide along whichever axis is contiguous in memory."""
    if channels_last:
        bc = min(128, triton.next_power_of_2(max(C, 1)))
        return max(16, elements // bc), bc
    bp = min(elements // 8, max(16, triton.next_power_of_2(max(HW, 1))))
    return bp, max(8, elements // bp)


# The backward loads three tensors per window offset: at 2K elements of an NCHW map (256 pixels x 8
# channels) it needs 255 registers and spills (tests/kernels/test_aot_compile.py), so half the tile.
BACKWARD_ELEMENTS = 1024


def _out_like(x: torch.Tensor) -> torch.Tensor:
    # channels-last in, channels-last out: the runtime's next kernel reads the same layout
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.empty_like(x, memory_format=torch.channels_last)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _check(size, k, beta, x):
    if x.dim() != 4:
        raise ValueError(f"lrn expects a 4-d (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if size < 1 or k <= 0 or beta < 0:
        raise ValueError(f"lrn needs size >= 1, k > 0 and beta >= 0 (got size={size}, k={k}, beta={beta})")


def _grid(N, C, HW, bp, bc):
    if N > 65535:
        raise ValueError(f"lrn: batch {N} exceeds the grid's z limit 65535")
    return (triton.cdiv(HW, bp), triton.cdiv(C, bc), N)


def lrn(x, *, size, k, alpha, beta):
    _check(size, k, beta, x)
    x = _nc_p(x)
    N, C, H, W = x.shape
    y, scale = _out_like(x), _out_like(x)
    if x.numel():
        bp, bc = _tiles(C, H * W, x.stride(1) == 1 and C > 1)
        _lrn_fwd_kernel[_grid(N, C, H * W, bp, bc)](
            x, y, scale, C, H * W, *_strides(x), *_strides(y),
            float(k), float(alpha), -float(beta),
            HALF=size // 2, BLOCK_P=bp, BLOCK_C=bc)
    return y, scale


def lrn_backward(dy, x, y, scale, *, size, k, alpha, beta):
    _check(size, k, beta, x)
    dy, x, y, scale = _nc_p(dy), _nc_p(x), _nc_p(y), _nc_p(scale)
    N, C, H, W = x.shape
    dx = _out_like(dy)
    if x.numel():
        bp, bc = _tiles(C, H * W, dy.stride(1) == 1 and C > 1, BACKWARD_ELEMENTS)
        coef = 2.0 * float(alpha) * float(beta)
        _lrn_bwd_kernel[_grid(N, C, H * W, bp, bc)](
            dy, x, y, scale, dx, C, H * W,
            *_strides(dy), *_strides(x), *_strides(y), *_strides(scale), *_strides(dx),
            coef, -float(beta), HALF=size // 2, BLOCK_P=bp, BLOCK_C=bc)
    return dx
