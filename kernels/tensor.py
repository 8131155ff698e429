"""Data movement along the batch-preserving axes: flatten, reshape, concat, slice (and its gradient), add_n.

One implementation for both backends (the compiler marks these ops `Kernel(all_backends=True)`): nothing is
computed, so there is nothing for a Triton kernel to speed up nor for a reference to check. Plain
torch, so they run on whatever device the tensors are on. `concat` and `slice` work on dim 1
(channels of a map, units of a vector); `flatten` and `reshape` keep dim 0 (the batch). `flatten`,
`reshape` and `slice` return views where torch can; the executor never writes into an op's input.
"""
from __future__ import annotations

import torch

from .shared import fp32_partial_sums


def flatten(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, prod(...))."""
    return x.reshape(x.shape[0], -1)


def reshape(x: torch.Tensor, *, shape) -> torch.Tensor:
    """(N, ...) -> (N, *shape): `shape` is the per-sample shape."""
    return x.reshape(x.shape[0], *shape)


def concat(*xs: torch.Tensor) -> torch.Tensor:
    """Join along dim 1, in argument order."""
    return torch.cat(xs, dim=1)


def slice(x: torch.Tensor, *, begin: int, end: int) -> torch.Tensor:
    """Channels [begin, end) (dim 1), a view."""
    return x[:, begin:end]


def slice_backward(dy: torch.Tensor, *, begin: int, channels: int) -> torch.Tensor:
    """Zeros of (N, channels, ...) with dy at channels [begin, begin + dy.shape[1]), in dy's layout
    (channels-last maps stay channels-last: a backend keeps its maps in one layout)."""
    channels_last = dy.dim() == 4 and not dy.is_contiguous() and dy.is_contiguous(memory_format=torch.channels_last)
    out = torch.empty((dy.shape[0], channels, *dy.shape[2:]), dtype=dy.dtype, device=dy.device,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format).zero_()
    out[:, begin:begin + dy.shape[1]] = dy
    return out


def add_n(*xs: torch.Tensor) -> torch.Tensor:
    """Sum of same-shaped tensors, added in argument order into a new tensor.

    The order is part of the contract: fp32 addition is not associative, and the executor's results
    are pinned bit for bit. Half-precision inputs (bfloat16 training's gradient sums where a value
    feeds several ops) are added in fp32 and rounded once, not once per input."""
    if len(xs) == 1:
        return xs[0].clone()
    half = fp32_partial_sums(xs)
    out = xs[0].float() + xs[1] if half else xs[0] + xs[1]   # one pass: a new tensor
    for t in xs[2:]:
        out += t
    return out.to(xs[0].dtype) if half else out
