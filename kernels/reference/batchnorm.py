"""Reference batch normalisation: the training forward (batch statistics, saved mean and invstd, new
running statistics), the evaluation forward (running statistics) and the backward, on ATen.

The contract (docs/kernel-interface.md): x is (N, C, H, W) or (N, C); per channel over the other axes,
mean and biased variance normalise; running_var moves towards the unbiased variance (M / (M - 1), M the
values per channel; M = 1 uses the biased one); `act` is applied after scale and shift.
"""
from __future__ import annotations

import torch

from ._common import f32

_ACT = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def _c(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape(1, -1, *([1] * (x.dim() - 2)))


def _dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _act(y: torch.Tensor, act: str) -> torch.Tensor:
    return _ACT[act](y) if act in _ACT else y


def batchnorm(x, scale, shift, running_mean, running_var, *, eps, momentum, act):
    xf = f32(x)
    count = x.numel() // x.shape[1]
    var, mean = torch.var_mean(xf, _dims(x), correction=0)
    invstd = torch.rsqrt(var + eps)
    a = f32(scale) * invstd
    y = _act((xf - _c(mean, x)) * _c(a, x) + _c(f32(shift), x), act)
    new_mean = (1 - momentum) * f32(running_mean) + momentum * mean
    new_var = (1 - momentum) * f32(running_var) + momentum * var * (count / max(count - 1, 1))
    return y.to(x.dtype), mean, invstd, new_mean, new_var


def batchnorm_eval(x, scale, shift, running_mean, running_var, *, eps, momentum, act):
    xf = f32(x)
    a = f32(scale) * torch.rsqrt(f32(running_var) + eps)
    y = _act((xf - _c(f32(running_mean), x)) * _c(a, x) + _c(f32(shift), x), act)
    return y.to(x.dtype)


def batchnorm_backward(dy, x, scale, mean, invstd):
    d, xf = f32(dy), f32(x)
    count = x.numel() // x.shape[1]
    xhat = (xf - _c(mean, x)) * _c(invstd, x)
    dshift = d.sum(_dims(x))
    dscale = (d * xhat).sum(_dims(x))
    dx = _c(f32(scale) * invstd / count, x) * (count * d - _c(dshift, x) - xhat * _c(dscale, x))
    return dx.to(dy.dtype), dscale, dshift
