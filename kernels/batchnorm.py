"""Triton batch normalisation: training forward (batch statistics + new running statistics), evaluation
forward (running statistics) and backward, for (N, C, H, W) and (N, C) inputs, activation fused.

    mean_c, var_c = mean and biased variance of x[:, c] over N (and H, W);  invstd_c = 1/sqrt(var_c + eps)
    y = act((x - mean_c) * a_c + shift_c),  a_c = scale_c * invstd_c   (centred first: no cancellation
        when the mean is large against the spread)
    running_mean' = (1 - m) running_mean + m mean;  running_var' = (1 - m) running_var + m var M/(M-1)
    backward (dz: the gradient after the activation, x^ = (x - mean) invstd, M values per channel):
    dshift = sum dz,  dscale = sum dz x^,  dx = scale invstd (dz - dshift/M - x^ dscale/M)

Two kinds of kernel. The per-channel reductions (`_bn_stats_kernel`, `_bn_bwd_reduce_kernel`): one
program per channel walks its M = N*H*W values in BLOCK chunks (flat index r -> image r // HW, pixel
r % HW, so any layout the strides describe works); the statistics take two passes (mean, then the sum
of squared deviations) so the variance does not cancel, and the same program writes the new running
statistics. The elementwise ones (`_bn_apply_kernel`, `_bn_dx_kernel`): tiles of BLOCK_P pixels x
BLOCK_C channels of one image, per-channel coefficients loaded once per tile. Math in fp32; y and dx
in x's dtype (NCHW or channels-last kept), statistics in fp32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .activation import act_code, apply_act

RBLOCK = 1024


@triton.jit
def _bn_stats_kernel(x_ptr, rm_ptr, rv_ptr, mean_ptr, invstd_ptr, nrm_ptr, nrv_ptr, P, R, sn, sc, sp,
                     eps, momentum, unbias, BLOCK: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    base = x_ptr + c * sc
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, R, BLOCK):
        r = (start + tl.arange(0, BLOCK)).to(tl.int64)
        n = r // P
        acc += tl.load(base + n * sn + (r - n * P) * sp, mask=r < R, other=0.0).to(tl.float32)
    mean = tl.sum(acc, 0) / R
    acc2 = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, R, BLOCK):
        r = (start + tl.arange(0, BLOCK)).to(tl.int64)
        n = r // P
        m = r < R
        v = tl.load(base + n * sn + (r - n * P) * sp, mask=m, other=0.0).to(tl.float32)
        d = tl.where(m, v - mean, 0.0)
        acc2 += d * d
    var = tl.sum(acc2, 0) / R
    tl.store(mean_ptr + c, mean)
    tl.store(invstd_ptr + c, 1.0 / tl.sqrt(var + eps))
    rm = tl.load(rm_ptr + c).to(tl.float32)
    rv = tl.load(rv_ptr + c).to(tl.float32)
    tl.store(nrm_ptr + c, (1.0 - momentum) * rm + momentum * mean)
    tl.store(nrv_ptr + c, (1.0 - momentum) * rv + momentum * (var * unbias))


@triton.jit
def _bn_apply_kernel(x_ptr, y_ptr, scale_ptr, shift_ptr, mean_ptr, stat_ptr, C, P,
                     xsn, xsc, xsp, ysn, ysc, ysp, eps,
                     FROM_VAR: tl.constexpr, ACT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    p = (tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
    c = (tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    n = tl.program_id(2).to(tl.int64)
    cm = c < C
    mean = tl.load(mean_ptr + c, mask=cm, other=0.0).to(tl.float32)
    st = tl.load(stat_ptr + c, mask=cm, other=1.0).to(tl.float32)
    if FROM_VAR:   # evaluation: the running variance
        inv = 1.0 / tl.sqrt(st + eps)
    else:          # training: the batch's invstd
        inv = st
    a = tl.load(scale_ptr + c, mask=cm, other=0.0).to(tl.float32) * inv
    b = tl.load(shift_ptr + c, mask=cm, other=0.0).to(tl.float32)
    m = (p < P)[:, None] & cm[None, :]
    x = tl.load(x_ptr + n * xsn + p[:, None] * xsp + c[None, :] * xsc, mask=m, other=0.0).to(tl.float32)
    y = apply_act((x - mean[None, :]) * a[None, :] + b[None, :], ACT)
    tl.store(y_ptr + n * ysn + p[:, None] * ysp + c[None, :] * ysc, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bn_bwd_reduce_kernel(g_ptr, x_ptr, mean_ptr, invstd_ptr, dscale_ptr, dshift_ptr, P, R,
                          gsn, gsc, gsp, xsn, xsc, xsp, BLOCK: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    mean = tl.load(mean_ptr + c).to(tl.float32)
    inv = tl.load(invstd_ptr + c).to(tl.float32)
    acc_g = tl.zeros((BLOCK,), dtype=tl.float32)
    acc_gx = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, R, BLOCK):
        r = (start + tl.arange(0, BLOCK)).to(tl.int64)
        n = r // P
        p = r - n * P
        m = r < R
        g = tl.load(g_ptr + c * gsc + n * gsn + p * gsp, mask=m, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + c * xsc + n * xsn + p * xsp, mask=m, other=0.0).to(tl.float32)
        acc_g += g
        acc_gx += g * tl.where(m, (x - mean) * inv, 0.0)
    tl.store(dshift_ptr + c, tl.sum(acc_g, 0))
    tl.store(dscale_ptr + c, tl.sum(acc_gx, 0))


@triton.jit
def _bn_dx_kernel(g_ptr, x_ptr, dx_ptr, scale_ptr, mean_ptr, invstd_ptr, dscale_ptr, dshift_ptr, C, P, inv_count,
                  gsn, gsc, gsp, xsn, xsc, xsp, osn, osc, osp, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    p = (tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
    c = (tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    n = tl.program_id(2).to(tl.int64)
    cm = c < C
    mean = tl.load(mean_ptr + c, mask=cm, other=0.0).to(tl.float32)
    inv = tl.load(invstd_ptr + c, mask=cm, other=0.0).to(tl.float32)
    k = tl.load(scale_ptr + c, mask=cm, other=0.0).to(tl.float32) * inv
    ds = tl.load(dshift_ptr + c, mask=cm, other=0.0).to(tl.float32) * inv_count
    dsc = tl.load(dscale_ptr + c, mask=cm, other=0.0).to(tl.float32) * inv_count
    m = (p < P)[:, None] & cm[None, :]
    g = tl.load(g_ptr + n * gsn + p[:, None] * gsp + c[None, :] * gsc, mask=m, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + n * xsn + p[:, None] * xsp + c[None, :] * xsc, mask=m, other=0.0).to(tl.float32)
    xhat = (x - mean[None, :]) * inv[None, :]
    dx = k[None, :] * (g - ds[None, :] - xhat * dsc[None, :])
    tl.store(dx_ptr + n * osn + p[:, None] * osp + c[None, :] * osc, dx.to(dx_ptr.dtype.element_ty), mask=m)


def _ncp(t: torch.Tensor) -> torch.Tensor:
    """t (N, C, H, W) or (N, C), or a contiguous copy when (H, W) do not merge into one pixel axis."""
    if t.dim() == 2:
        return t
    if t.dim() != 4:
        raise ValueError(f"batchnorm expects a 4-d (N, C, H, W) or 2-d (N, C) tensor, got shape {tuple(t.shape)}")
    H, W = t.shape[2], t.shape[3]
    if H == 1 or W == 1 or t.stride(2) == W * t.stride(3):
        return t
    return t.contiguous()


def _pixels(t: torch.Tensor) -> int:
    return t.shape[2] * t.shape[3] if t.dim() == 4 else 1


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(batch, channel, pixel) strides of a tensor that passed `_ncp`."""
    if t.dim() == 2:
        return t.stride(0), t.stride(1), 1
    return t.stride(0), t.stride(1), (t.stride(2) if t.shape[3] == 1 else t.stride(3))


def _out_like(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.empty_like(x, memory_format=torch.channels_last)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _tiles_grid(x: torch.Tensor) -> tuple[int, int, tuple[int, int, int]]:
    N, C, P = x.shape[0], x.shape[1], _pixels(x)
    if x.stride(1) == 1 and C > 1:      # channels innermost (channels-last maps, (N, C) features)
        bc = min(128, triton.next_power_of_2(C))
        bp = max(16, 2048 // bc)
    else:
        bp = min(256, max(16, triton.next_power_of_2(P)))
        bc = max(16, 2048 // bp)
    if N > 65535:
        raise ValueError(f"batchnorm: batch {N} exceeds the grid's z limit 65535")
    return bp, bc, (triton.cdiv(P, bp), triton.cdiv(C, bc), N)


def _vec(t: torch.Tensor) -> torch.Tensor:
    return t.float().contiguous()


def _apply(x, scale, shift, mean, stat, eps, act, from_var):
    y = _out_like(x)
    if x.numel():
        bp, bc, grid = _tiles_grid(x)
        _bn_apply_kernel[grid](x, y, _vec(scale), _vec(shift), mean, stat, x.shape[1], _pixels(x),
                               *_strides(x), *_strides(y), float(eps), FROM_VAR=from_var, ACT=act_code(act),
                               BLOCK_P=bp, BLOCK_C=bc)
    return y


def batchnorm(x, scale, shift, running_mean, running_var, *, eps, momentum, act):
    x = _ncp(x)
    C, R = x.shape[1], x.numel() // max(x.shape[1], 1)
    if R == 0:
        raise ValueError("batchnorm: no values per channel to take statistics over")
    stats = [torch.empty(C, dtype=torch.float32, device=x.device) for _ in range(4)]
    mean, invstd, new_rm, new_rv = stats
    _bn_stats_kernel[(C,)](x, _vec(running_mean), _vec(running_var), mean, invstd, new_rm, new_rv,
                           _pixels(x), R, *_strides(x), float(eps), float(momentum), R / max(R - 1, 1),
                           BLOCK=RBLOCK)
    return _apply(x, scale, shift, mean, invstd, eps, act, False), mean, invstd, new_rm, new_rv


def batchnorm_eval(x, scale, shift, running_mean, running_var, *, eps, momentum, act):
    return _apply(_ncp(x), scale, shift, _vec(running_mean), _vec(running_var), eps, act, True)


def batchnorm_backward(dy, x, scale, mean, invstd):
    dy, x = _ncp(dy), _ncp(x)
    C, R = x.shape[1], x.numel() // max(x.shape[1], 1)
    mean, invstd = _vec(mean), _vec(invstd)
    dscale = torch.empty(C, dtype=torch.float32, device=x.device)
    dshift = torch.empty(C, dtype=torch.float32, device=x.device)
    dx = _out_like(dy)
    if R == 0:
        return dx, dscale.zero_(), dshift.zero_()
    P = _pixels(x)
    _bn_bwd_reduce_kernel[(C,)](dy, x, mean, invstd, dscale, dshift, P, R, *_strides(dy), *_strides(x),
                                BLOCK=RBLOCK)
    bp, bc, grid = _tiles_grid(dy)
    _bn_dx_kernel[grid](dy, x, dx, _vec(scale), mean, invstd, dscale, dshift, C, P, 1.0 / R,
                        *_strides(dy), *_strides(x), *_strides(dx), BLOCK_P=bp, BLOCK_C=bc)
    return dx, dscale, dshift
