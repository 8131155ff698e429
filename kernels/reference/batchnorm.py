"""Reference batch normalisation: the training forward (batch statistics, saved mean and invstd, new
running statistics), the evaluation forward (running statistics) and the backward, on ATen.

The contract (docs/kernel-interface.md): x is (N, C, H, W) or (N, C); per channel over the other axes,
mean and biased variance normalise; running_var moves towards the unbiased variance (M / (M - 1), M the
values per channel; M = 1 uses the biased one); `act` is applied after scale and shift and after the
`residual` when there is one (ResNet's add folded in: the backward then also returns dz, its gradient).

In float64 (the oracle in the tests) every step is written out on ATen's elementwise ops. In fp32 and
16-bit, where the executor runs it on the CPU: on channels-last fp32 maps our C kernels
(`csrc/batchnorm.c` through `native`: statistics, normalisation and a relu in two passes forward, the
backward in two), else ATen's fused batch-norm kernels on contiguous maps, NCHW or channels-last (see
`_fused`), in a couple of passes instead of about ten (tests/kernels/test_batchnorm.py and
tests/kernels/test_reference_native.py hold each to the float64 formulas).
"""
from __future__ import annotations

import torch

from ..shared import bn_backward_outputs
from . import activation, native
from ._common import f32


def _c(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape(1, -1, *([1] * (x.dim() - 2)))


def _dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _fused(x: torch.Tensor, count: int) -> bool:
    """ATen's fused kernels on 4-D maps with M > 1 (ATen's running variance would divide by M - 1 = 0),
    in NCHW or channels-last (the layout this backend keeps maps in on the CPU, `_common.maps`). On
    channels-last maps they split a channel's sums over the threads, so the result depends on the
    thread count, as oneDNN's convolution weight gradients already do; the float64 oracle path below
    does not use them."""
    return (x.dtype != torch.float64 and count > 1 and x.dim() == 4 and x.shape[2] * x.shape[3] > 1
            and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)))


def _finish(y, residual, act):
    """act(y + residual) over y, a fresh fp32 (or float64) result the caller owns."""
    if residual is not None:
        y += f32(residual)
    return activation.act_fresh(y, act)


def batchnorm(x, scale, shift, running_mean, running_var, residual=None, *, eps, momentum, act):
    xf = f32(x)
    count = x.numel() // x.shape[1]
    rf = None if residual is None else f32(residual)
    if count > 1 and native.takes(*(t for t in (xf, rf) if t is not None)):
        return _native_forward(x, xf, rf, scale, shift, running_mean, running_var, count, eps, momentum, act)
    if _fused(x, count):
        new_mean, new_var = f32(running_mean).clone(), f32(running_var).clone()   # ATen updates in place
        y, mean, invstd = torch.native_batch_norm(xf, f32(scale), f32(shift), new_mean, new_var, True,
                                                  momentum, eps)
        y = _finish(y, rf, act)   # y is ATen's fresh output
        return y.to(x.dtype), mean, invstd, new_mean, new_var
    var, mean = torch.var_mean(xf, _dims(x), correction=0)
    return _train_outputs(x, xf, scale, shift, running_mean, running_var, rf, mean, var, count, eps, momentum, act)


def _native_forward(x, xf, rf, scale, shift, running_mean, running_var, count, eps, momentum, act):
    """The training forward on csrc/batchnorm.c: one pass for the statistics, one for y with the
    residual `rf` (None: none) and the activation (relu in C, any other after it), and the new running
    statistics (as `_running` computes them, bit for bit)."""
    C = x.shape[1]
    g, b = f32(scale).contiguous(), f32(shift).contiguous()
    rm, rv = f32(running_mean).contiguous(), f32(running_var).contiguous()
    y = torch.empty_like(xf)
    mean, var, invstd, new_mean, new_var = (torch.empty(C, dtype=torch.float32) for _ in range(5))
    code = native.ACT_CODES.get(act, 0)
    if native.library().alx_bn_forward(xf.data_ptr(), native.pointer(rf), count, C, g.data_ptr(), b.data_ptr(),
                                       float(eps), code, native.threads(), y.data_ptr(), mean.data_ptr(),
                                       var.data_ptr(), invstd.data_ptr(), rm.data_ptr(), rv.data_ptr(),
                                       float(momentum), new_mean.data_ptr(), new_var.data_ptr()):
        raise MemoryError("batch norm: the native kernel could not allocate its per-block sums")
    if act not in native.ACT_CODES:
        y = activation.act_fresh(y, act)
    return y.to(x.dtype), mean, invstd, new_mean, new_var


def _running(running_mean, running_var, mean, var, count, momentum):
    """The running statistics moved towards this batch's mean and unbiased variance."""
    new_mean = (1 - momentum) * f32(running_mean) + momentum * mean
    new_var = (1 - momentum) * f32(running_var) + momentum * var * (count / max(count - 1, 1))
    return new_mean, new_var


def _train_outputs(x, xf, scale, shift, running_mean, running_var, residual, mean, var, count, eps, momentum, act):
    """The training forward's five outputs from the statistics it normalises with (over `count` values),
    written out on ATen (`xf`: x's compute copy)."""
    invstd = torch.rsqrt(var + eps)
    a = f32(scale) * invstd
    y = _finish((xf - _c(mean, x)) * _c(a, x) + _c(f32(shift), x), residual, act)
    new_mean, new_var = _running(running_mean, running_var, mean, var, count, momentum)
    return y.to(x.dtype), mean, invstd, new_mean, new_var


def batchnorm_eval(x, scale, shift, running_mean, running_var, residual=None, *, eps, momentum, act):
    xf = f32(x)
    if _fused(x, 2):
        y = torch.nn.functional.batch_norm(xf, f32(running_mean), f32(running_var), f32(scale),
                                           f32(shift), False, 0.0, eps)
        return _finish(y, residual, act).to(x.dtype)
    a = f32(scale) * torch.rsqrt(f32(running_var) + eps)
    y = _finish((xf - _c(f32(running_mean), x)) * _c(a, x) + _c(f32(shift), x), residual, act)
    return y.to(x.dtype)


def batchnorm_backward(dy, x, scale, mean, invstd, y=None, *, act="none", residual=False):
    """dx, dscale, dshift (and with `residual`, dz: the gradient of the sum the activation read, the
    residual's); with an activation, dy is the gradient of its output y and is taken through it first
    (in the C kernel's first pass for relu, which then also writes dz, else by `activation.act_backward`)."""
    d, xf = f32(dy), f32(x)
    count = x.numel() // x.shape[1]
    yf = f32(y) if act == "relu" else None
    read = [d, xf] if yf is None else [d, xf, yf]
    if act in native.ACT_CODES and native.takes(*read):
        return _native_backward(dy, d, xf, yf, scale, mean, invstd, count, residual)
    if act != "none":
        dy = activation.act_backward(dy, y, act=act)
        d = f32(dy)
    if _fused(x, count):
        dx, dscale, dshift = torch.ops.aten.native_batch_norm_backward(
            d, xf, f32(scale), None, None, f32(mean), f32(invstd), True, 0.0, [True, True, True])
        return bn_backward_outputs((dx.to(dy.dtype), dscale, dshift), dy, residual)
    xhat, dshift, dscale = _grad_sums(d, xf, x, mean, invstd)
    return bn_backward_outputs((_dx(d, xhat, x, scale, invstd, dshift, dscale, count).to(dy.dtype), dscale, dshift), dy,
                    residual)


def _native_backward(dy, d, xf, yf, scale, mean, invstd, count, residual):
    """The backward on csrc/batchnorm.c: one pass for the two sums, one for dx (relu's mask from the
    output `yf` applied to d as it is read in both, when given; with `residual`, the first pass writes
    the masked d as dz and the second reads it)."""
    C = xf.shape[1]
    g, m, s = f32(scale).contiguous(), f32(mean).contiguous(), f32(invstd).contiguous()
    dx = torch.empty_like(xf)
    dz = torch.empty_like(xf) if residual and yf is not None else None
    dscale, dshift = torch.empty(C, dtype=torch.float32), torch.empty(C, dtype=torch.float32)
    if native.library().alx_bn_backward(d.data_ptr(), native.pointer(yf), xf.data_ptr(), count, C, g.data_ptr(),
                                        m.data_ptr(), s.data_ptr(), native.threads(), dx.data_ptr(),
                                        dscale.data_ptr(), dshift.data_ptr(), native.pointer(dz)):
        raise MemoryError("batch norm backward: the native kernel could not allocate its per-block sums")
    return bn_backward_outputs((dx.to(dy.dtype), dscale, dshift), dy if dz is None else dz, residual)


def _grad_sums(d, xf, x, mean, invstd):
    """x̂ and, per channel over this tensor's values, (sum d, sum d·x̂)."""
    xhat = (xf - _c(mean, x)) * _c(invstd, x)
    return xhat, d.sum(_dims(x)), (d * xhat).sum(_dims(x))


def _dx(d, xhat, x, scale, invstd, dshift, dscale, count):
    """scale·invstd/count·(count·d − dshift − x̂·dscale), the sums being over `count` values."""
    return _c(f32(scale) * invstd / count, x) * (count * d - _c(dshift, x) - xhat * _c(dscale, x))


# -- synchronised across processes (data parallelism with train.sync_batchnorm) ---------------------------
# `sync` adds a tensor up over the processes in place (`sync.all_sum`), and says this process's `rank`
# among `world` processes and its share of the global batch (`weight`, n_local / n_global).
# Statistics are those of the global batch, from one all-reduce that gathers every process's count n,
# mean and sum of squared deviations M2 (each in its own row, zeros elsewhere), combined exactly as in
# Chan et al.'s parallel variance: mean = sum(n_r mean_r) / M, M2 = sum(M2_r + n_r (mean_r - mean)^2);
# every process combines the same rows in the same order, so all hold bit-identical statistics.
# The backward returns this shard's mean loss's gradients, as every other kernel (the gradient
# reducer weights them): dx needs the global sums of dz and dz·x̂, gathered weighted by each shard's
# share and divided by this one's.

def combine_shard_statistics(local_mean, local_m2, n, sync):
    """(mean, biased variance, count) of the global batch from this shard's per-channel mean, sum of
    squared deviations and count: one all_sum of a (world, 2C + 1) table holding each process's row."""
    C = local_mean.shape[0]
    rows = local_mean.new_zeros(int(sync.world), 2 * C + 1)
    rows[int(sync.rank), :C] = local_mean
    rows[int(sync.rank), C:2 * C] = local_m2
    rows[int(sync.rank), 2 * C] = n
    sync.all_sum(rows)
    ns = rows[:, 2 * C:]
    count = float(ns.sum())
    mean = (ns * rows[:, :C]).sum(0) / count
    m2 = (rows[:, C:2 * C] + ns * (rows[:, :C] - mean) ** 2).sum(0)
    return mean, m2 / count, count


def batchnorm_sync(x, scale, shift, running_mean, running_var, residual=None, *, eps, momentum, act, sync):
    xf, n = f32(x), float(x.numel() // x.shape[1])
    var_l, mean_l = torch.var_mean(xf, _dims(x), correction=0)
    mean, var, count = combine_shard_statistics(mean_l, var_l * n, n, sync)
    return _train_outputs(x, xf, scale, shift, running_mean, running_var, residual, mean, var, count, eps,
                          momentum, act)


def batchnorm_backward_sync(dy, x, scale, mean, invstd, y=None, *, act="none", residual=False, sync):
    if act != "none":
        dy = activation.act_backward(dy, y, act=act)
    d, C = f32(dy), x.shape[1]
    xhat, dshift, dscale = _grad_sums(d, f32(x), x, mean, invstd)
    w = float(sync.weight)
    total = sync.all_sum(torch.cat([dshift * w, dscale * w, d.new_tensor([float(x.numel() // C)])]))
    dx = _dx(d, xhat, x, scale, invstd, total[:C] / w, total[C:2 * C] / w, float(total[2 * C]))
    return bn_backward_outputs((dx.to(dy.dtype), dscale, dshift), dy, residual)
