"""Reference local response normalisation across channels: the forward saving `scale`, and its backward.

`alpha` is the effective coefficient a' of the window's sum of squares (the compiler has already
divided a spec's alpha by `size` when the spec says alpha_over_n).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import f32


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


def _pow_neg(s: torch.Tensor, beta: float) -> torch.Tensor:
    """s ** -beta as exp2(-beta * log2(s)) (s >= k > 0), the Triton kernel's formula: on the CPU ATen's
    general pow takes as long as 18 multiplications, the three passes here 12; float64 keeps pow."""
    if s.dtype == torch.float64:
        return s.pow(-beta)
    return torch.log2(s).mul_(-beta).exp2_()


def lrn(x, *, size, k, alpha, beta):
    xf = f32(x)
    scale = _channel_window_sum(xf * xf, size).mul_(alpha).add_(k)
    y = xf * _pow_neg(scale, beta)
    return y.to(x.dtype), scale.to(x.dtype)


def lrn_backward(dy, x, y, scale, *, size, k, alpha, beta):
    d, s = f32(dy), f32(scale)
    t = _channel_window_sum(torch.mul(d, f32(y)).div_(s), size)
    dx = (d * _pow_neg(s, beta)).sub_(t.mul_(f32(x) * (2.0 * alpha * beta)))   # in place on our own temporaries
    return dx.to(dy.dtype)
