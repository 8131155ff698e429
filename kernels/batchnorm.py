"""Triton batch normalisation: training forward (batch statistics + new running statistics), evaluation
forward (running statistics) and backward, for (N, C, H, W) and (N, C) inputs, activation and an optional
residual add fused (ResNet's bn -> add(shortcut) -> act as one node).

    mean_c, var_c = mean and biased variance of x[:, c] over N (and H, W);  invstd_c = 1/sqrt(var_c + eps)
    y = act((x - mean_c) * a_c + shift_c [+ residual]),  a_c = scale_c * invstd_c   (centred first: no
        cancellation when the mean is large against the spread; the sum in fp32, then act, then x's dtype)
    running_mean' = (1 - m) running_mean + m mean;  running_var' = (1 - m) running_var + m var M/(M-1)
    backward (dz: the gradient after the activation, x^ = (x - mean) invstd, M values per channel):
    dshift = sum dz,  dscale = sum dz x^,  dx = scale invstd (dz - dshift/M - x^ dscale/M)
    with a residual, dz is also its gradient: written by the reduction as it reads dy (dy itself without act)

Two kinds of kernel. The per-channel reductions (`_bn_partial_kernel`, `_bn_bwd_partial_kernel`): a
program owns BLOCK_C channels and one of S chunks of their M = N*H*W values (flat index r -> image
r // HW, pixel r % HW, so any layout the strides describe works), tiles (BLOCK_R, BLOCK_C) wide along
the contiguous axis; it writes per-chunk sums that the host adds in a fixed order (deterministic: no
atomics, so a resumed run is bit-identical). The statistics take two passes (mean, then the sum of
squared deviations) so the variance does not cancel; the (C,)-vector arithmetic after them (invstd,
running statistics) is a few ATen ops. The elementwise ones (`_bn_apply_kernel`, `_bn_dx_kernel`): tiles of BLOCK_P pixels x
BLOCK_C channels of one image, per-channel coefficients loaded once per tile. Math in fp32; y and dx
in x's dtype (NCHW or channels-last kept), statistics in fp32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .activation import act_code, act_grad_from_y, apply_act
from .shared import bn_backward_outputs

PROGRAMS = 2048   # the per-channel reductions cut each channel's values into chunks until about this many run

@triton.jit
def _bn_partial_kernel(x_ptr, mu_ptr, out_ptr, C, P, R, sn, sc, sp, CHUNK,
                       SQUARE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per channel, the sum over one chunk of the M values of x - mu (SQUARE: of (x - mu)^2)."""
    c = (tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    s = tl.program_id(1).to(tl.int64)
    cm = c < C
    mu = tl.load(mu_ptr + c, mask=cm, other=0.0)
    acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    for i in range(0, CHUNK, BLOCK_R):
        r = s * CHUNK + i + tl.arange(0, BLOCK_R).to(tl.int64)
        n = r // P
        m = (r < R)[:, None] & cm[None, :]
        v = tl.load(x_ptr + (n * sn + (r - n * P) * sp)[:, None] + c[None, :] * sc, mask=m, other=0.0)
        d = tl.where(m, v.to(tl.float32) - mu[None, :], 0.0)
        if SQUARE:
            acc += d * d
        else:
            acc += d
    tl.store(out_ptr + s * C + c, tl.sum(acc, 0), mask=cm)


@triton.jit
def _bn_apply_kernel(x_ptr, y_ptr, res_ptr, scale_ptr, shift_ptr, mean_ptr, stat_ptr, C, P,
                     xsn, xsc, xsp, ysn, ysc, ysp, rsn, rsc, rsp, eps, FROM_VAR: tl.constexpr,
                     HAS_RES: tl.constexpr, ACT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """y = act(bn(x) [+ residual]) on one tile; the residual (HAS_RES) is added in fp32 before act."""
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
    z = (x - mean[None, :]) * a[None, :] + b[None, :]
    if HAS_RES:
        z += tl.load(res_ptr + n * rsn + p[:, None] * rsp + c[None, :] * rsc, mask=m, other=0.0).to(tl.float32)
    y = apply_act(z, ACT)
    tl.store(y_ptr + n * ysn + p[:, None] * ysp + c[None, :] * ysc, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bn_bwd_partial_kernel(g_ptr, x_ptr, y_ptr, dz_ptr, mean_ptr, invstd_ptr, out_ptr, C, P, R, gsn, gsc, gsp,
                           xsn, xsc, xsp, ysn, ysc, ysp, zsn, zsc, zsp, CHUNK, ACT: tl.constexpr,
                           WRITE_DZ: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per channel, over one chunk: sum dz (out[0]) and sum dz * x^ (out[1]), dz = act'(dy, y) as dy is
    read (y, the forward's output, is read only when there is an activation); WRITE_DZ: dz is also
    stored (a fused residual's gradient), in dz_ptr's dtype."""
    c = (tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    s = tl.program_id(1).to(tl.int64)
    S = tl.num_programs(1)
    cm = c < C
    mu = tl.load(mean_ptr + c, mask=cm, other=0.0)
    inv = tl.load(invstd_ptr + c, mask=cm, other=0.0)
    acc_g = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    acc_gx = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    for i in range(0, CHUNK, BLOCK_R):
        r = s * CHUNK + i + tl.arange(0, BLOCK_R).to(tl.int64)
        n = r // P
        p = r - n * P
        m = (r < R)[:, None] & cm[None, :]
        g = tl.load(g_ptr + (n * gsn + p * gsp)[:, None] + c[None, :] * gsc, mask=m, other=0.0).to(tl.float32)
        if ACT != "none":
            y = tl.load(y_ptr + (n * ysn + p * ysp)[:, None] + c[None, :] * ysc, mask=m, other=0.0).to(tl.float32)
            g = act_grad_from_y(g, y, ACT)
        if WRITE_DZ:
            tl.store(dz_ptr + (n * zsn + p * zsp)[:, None] + c[None, :] * zsc, g.to(dz_ptr.dtype.element_ty), mask=m)
        x = tl.load(x_ptr + (n * xsn + p * xsp)[:, None] + c[None, :] * xsc, mask=m, other=0.0).to(tl.float32)
        acc_g += g
        acc_gx += g * tl.where(m, (x - mu[None, :]) * inv[None, :], 0.0)
    tl.store(out_ptr + s * C + c, tl.sum(acc_g, 0), mask=cm)
    tl.store(out_ptr + (S + s) * C + c, tl.sum(acc_gx, 0), mask=cm)


@triton.jit
def _bn_dx_kernel(g_ptr, x_ptr, y_ptr, dx_ptr, scale_ptr, mean_ptr, invstd_ptr, dscale_ptr, dshift_ptr, C, P,
                  inv_count, gsn, gsc, gsp, xsn, xsc, xsp, ysn, ysc, ysp, osn, osc, osp, ACT: tl.constexpr,
                  BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
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
    if ACT != "none":
        y = tl.load(y_ptr + n * ysn + p[:, None] * ysp + c[None, :] * ysc, mask=m, other=0.0).to(tl.float32)
        g = act_grad_from_y(g, y, ACT)
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
        bp = min(128, max(16, triton.next_power_of_2(P)))   # 128 x 16: 256 x 16 spilled (kernels/aot)
        bc = max(16, 2048 // bp)
    if N > 65535:
        raise ValueError(f"batchnorm: batch {N} exceeds the grid's z limit 65535")
    return bp, bc, (triton.cdiv(P, bp), triton.cdiv(C, bc), N)


def _vec(t: torch.Tensor) -> torch.Tensor:
    return t.float().contiguous()


def _residual(residual, x):
    """The residual added before the activation, as the kernels read it (None: none)."""
    if residual is None:
        return None
    if tuple(residual.shape) != tuple(x.shape):
        raise ValueError(f"batchnorm: residual of shape {tuple(residual.shape)} does not match the input's "
                         f"{tuple(x.shape)}")
    return _ncp(residual)


def _apply(x, scale, shift, mean, stat, eps, act, from_var, residual=None):
    """act(bn(x) + residual): without a residual x stands in for its pointer (never read)."""
    y = _out_like(x)
    res = _residual(residual, x)
    if x.numel():
        bp, bc, grid = _tiles_grid(x)
        r = x if res is None else res
        _bn_apply_kernel[grid](x, y, r, _vec(scale), _vec(shift), mean, stat, x.shape[1], _pixels(x),
                               *_strides(x), *_strides(y), *_strides(r), float(eps), FROM_VAR=from_var,
                               HAS_RES=res is not None, ACT=act_code(act), BLOCK_P=bp, BLOCK_C=bc)
    return y


def _split(x: torch.Tensor, narrow: bool = False) -> tuple[int, int, int, int, tuple[int, int]]:
    """(BLOCK_R, BLOCK_C, CHUNK, S, grid) of the per-channel reductions: tiles wide along whichever axis
    is contiguous; the M values of a channel cut into S chunks so that about 2K programs run. `narrow`:
    a pixel-contiguous (NCHW) reduction that also stores dz takes 64-row tiles (128 x 16 spills 8 bytes
    at 168 registers in bf16 on sm_80 with relu: benchmarks/results/aot-compile-*.json)."""
    C, R = x.shape[1], x.numel() // x.shape[1]
    if x.stride(1) == 1 and C > 1:
        bc = min(64, max(16, triton.next_power_of_2(C)))
        br = max(16, 2048 // bc)
    else:
        bc, br = 16, 64 if narrow else 128
    cblocks = triton.cdiv(C, bc)
    rblocks = triton.cdiv(R, br)
    s = max(1, min(rblocks, PROGRAMS // cblocks))
    chunk = triton.cdiv(rblocks, s) * br
    s = triton.cdiv(R, chunk)
    return br, bc, chunk, s, (cblocks, s)


def _channel_sum(x: torch.Tensor, mu: torch.Tensor, square: bool) -> torch.Tensor:
    """Per channel, sum (x - mu) (or its square) over the M values."""
    br, bc, chunk, s, grid = _split(x)
    C = x.shape[1]
    part = torch.empty(s, C, dtype=torch.float32, device=x.device)
    _bn_partial_kernel[grid](x, mu, part, C, _pixels(x), x.numel() // C, *_strides(x), chunk,
                             SQUARE=square, BLOCK_R=br, BLOCK_C=bc)
    return part.sum(0)   # the S chunk sums in a fixed order: deterministic


def _local_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per channel: the mean and the sum of squared deviations from it of this tensor's R values, and R.

    Two passes, each on centred values so nothing cancels: the mean as the first image's value plus
    the mean deviation from it (the sums stay at the data's spread, not its offset), then the sum of
    squared deviations from that mean."""
    R = x.numel() // max(x.shape[1], 1)
    pivot = _vec(x[0, :, 0, 0] if x.dim() == 4 else x[0])
    mean = (pivot + _channel_sum(x, pivot, False).div_(R)).contiguous()
    return mean, _channel_sum(x, mean, True), R


def _train_outputs(x, scale, shift, running_mean, running_var, residual, mean, var, count, eps, momentum, act):
    """The training forward's five outputs from the statistics it normalises with (over `count` values)."""
    invstd = torch.rsqrt(var + eps)
    new_rm = running_mean.float() * (1 - momentum) + mean * momentum
    new_rv = running_var.float() * (1 - momentum) + var * (momentum * count / max(count - 1, 1))
    return _apply(x, scale, shift, mean, invstd, eps, act, False, residual), mean, invstd, new_rm, new_rv


def batchnorm(x, scale, shift, running_mean, running_var, residual=None, *, eps, momentum, act):
    x = _ncp(x)
    if x.numel() // max(x.shape[1], 1) == 0:
        raise ValueError("batchnorm: no values per channel to take statistics over")
    mean, m2, R = _local_moments(x)
    return _train_outputs(x, scale, shift, running_mean, running_var, residual, mean, m2.div_(R), R, eps,
                          momentum, act)


def batchnorm_eval(x, scale, shift, running_mean, running_var, residual=None, *, eps, momentum, act):
    return _apply(_ncp(x), scale, shift, _vec(running_mean), _vec(running_var), eps, act, True, residual)


def _grad_sums(dy, x, mean, invstd, y, act, dz=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel over this tensor's values: (sum dz, sum dz·x̂), dz = act'(dy, y) (dy without act);
    given a `dz` tensor, the kernel also writes dz into it as it goes."""
    C, R = x.shape[1], x.numel() // max(x.shape[1], 1)
    br, bc, chunk, s, grid = _split(dy, narrow=dz is not None)
    part = torch.empty(2, s, C, dtype=torch.float32, device=x.device)
    z = dy if dz is None else dz
    _bn_bwd_partial_kernel[grid](dy, x, y, z, mean, invstd, part, C, _pixels(x), R, *_strides(dy), *_strides(x),
                                 *_strides(y), *_strides(z), chunk, ACT=act_code(act), WRITE_DZ=dz is not None,
                                 BLOCK_R=br, BLOCK_C=bc)
    dshift, dscale = part.sum(1).unbind(0)
    return dshift, dscale


def _dx(dy, x, scale, mean, invstd, dscale, dshift, count, y, act) -> torch.Tensor:
    """scale·invstd·(dz − dshift/count − x̂·dscale/count), dz = act'(dy, y), the sums over `count` values."""
    dx = _out_like(dy)
    bp, bc, grid = _tiles_grid(dy)
    _bn_dx_kernel[grid](dy, x, y, dx, _vec(scale), mean, invstd, dscale, dshift, x.shape[1], _pixels(x), 1.0 / count,
                        *_strides(dy), *_strides(x), *_strides(y), *_strides(dx), ACT=act_code(act),
                        BLOCK_P=bp, BLOCK_C=bc)
    return dx


def _act_output(dy, y, act):
    """The forward's output the backward kernels read for act' (without an activation they read none,
    and dy stands in for the pointer)."""
    if act == "none":
        return dy
    if y is None:
        raise ValueError(f"batchnorm backward: act={act!r} needs the forward's output y")
    return _ncp(y)


def _first_pass(given, dy, x, mean, invstd, y, act, residual):
    """The backward's reduction pass: (dshift, dscale), dz (the residual's gradient, or None without a
    residual) and what the dx pass reads for dz, (g, y, act). The fused activation's backward is taken
    as dy is read; with a residual and an activation the reduction also writes dz = act'(dy, y) and the
    dx pass reads dz instead of dy and y (one read fewer); without an activation dz is `given`, the
    caller's dy itself."""
    y = _act_output(dy, y, act)
    dz = _out_like(dy) if residual and act != "none" else None
    dshift, dscale = _grad_sums(dy, x, mean, invstd, y, act, dz)
    if dz is None:
        return dshift, dscale, (given if residual else None), (dy, y, act)
    return dshift, dscale, dz, (dz, dz, "none")


def batchnorm_backward(dy, x, scale, mean, invstd, y=None, *, act="none", residual=False):
    given, (dy, x) = dy, (_ncp(dy), _ncp(x))
    C, R = x.shape[1], x.numel() // max(x.shape[1], 1)
    mean, invstd = _vec(mean), _vec(invstd)
    if R == 0:
        dz = given if act == "none" else _out_like(dy)
        return bn_backward_outputs((_out_like(dy), torch.zeros(C, device=x.device), torch.zeros(C, device=x.device)), dz,
                        residual)
    dshift, dscale, dz, (g, gy, gact) = _first_pass(given, dy, x, mean, invstd, y, act, residual)
    return bn_backward_outputs((_dx(g, x, scale, mean, invstd, dscale, dshift, R, gy, gact), dscale, dshift), dz, residual)


# -- synchronised across processes: the contract and the `sync` object are the reference's
# (kernels/reference/batchnorm.py); the sums are this module's reduction kernels, the collective is
# `sync.all_sum`, normalisation and dx are the same kernels as above.

def _combine(local_mean, local_m2, n, sync):
    """The global batch's (mean, biased variance, count) from every process's row (the reference's
    combine_shard_statistics is the contract: Chan et al.'s exact combination, one all_sum)."""
    C = local_mean.shape[0]
    rows = local_mean.new_zeros(int(sync.world), 2 * C + 1)
    rows[int(sync.rank)] = torch.cat([local_mean, local_m2, local_mean.new_tensor([n])])
    sync.all_sum(rows)
    ns = rows[:, 2 * C:]
    count = float(ns.sum())
    mean = (ns * rows[:, :C]).sum(0) / count
    return mean.contiguous(), (rows[:, C:2 * C] + ns * (rows[:, :C] - mean) ** 2).sum(0) / count, count


def batchnorm_sync(x, scale, shift, running_mean, running_var, residual=None, *, eps, momentum, act, sync):
    x = _ncp(x)
    mean_l, m2_l, n = _local_moments(x)
    mean, var, count = _combine(mean_l, m2_l, float(n), sync)
    return _train_outputs(x, scale, shift, running_mean, running_var, residual, mean, var, count, eps, momentum,
                          act)


def batchnorm_backward_sync(dy, x, scale, mean, invstd, y=None, *, act="none", residual=False, sync):
    # dz is elementwise, so this shard's own: only the sums go through the all_sum
    given, (dy, x) = dy, (_ncp(dy), _ncp(x))
    C, R = x.shape[1], x.numel() // max(x.shape[1], 1)
    mean, invstd = _vec(mean), _vec(invstd)
    dshift, dscale, dz, (g, gy, gact) = _first_pass(given, dy, x, mean, invstd, y, act, residual)
    w = float(sync.weight)
    total = sync.all_sum(torch.cat([dshift * w, dscale * w, dshift.new_tensor([float(R)])]))
    dx = _dx(g, x, scale, mean, invstd, (total[C:2 * C] / w).contiguous(), (total[:C] / w).contiguous(),
             float(total[2 * C]), gy, gact)
    return bn_backward_outputs((dx, dscale, dshift), dz, residual)
