"""Helpers of the reference modules only: fp32 compute copies, the ceil-rounding pad, the CPU map layout.

Private to `kernels/reference/` (the Triton launchers have their own, tuned to their kernels);
what both backends must agree on lives in `kernels/shared.py` instead.
"""
from __future__ import annotations

import torch

_HALF = (torch.float16, torch.bfloat16)


def up(t: torch.Tensor) -> torch.Tensor:
    """fp32 compute copy of a half tensor on the CPU; on CUDA ATen already accumulates in fp32."""
    if t.dtype in _HALF and t.device.type == "cpu":
        return t.float()
    return t


def f32(t: torch.Tensor) -> torch.Tensor:
    """At least fp32 (float64 stays float64, so the reference can be its own float64 oracle)."""
    return t if t.dtype == torch.float64 else t.float()


def extra(n: int, out: int, k: int, s: int, p: int) -> int:
    """Cells of bottom/right padding beyond `p` that `out` windows need (ceil rounding)."""
    return max(0, (out - 1) * s + k - (n + 2 * p))


def maps(t: torch.Tensor) -> torch.Tensor:
    """A 4-D map in the layout this backend keeps maps in: channels-last on the CPU, where oneDNN's
    convolutions and ATen's pooling and elementwise kernels run 1.5-10x faster on it than on NCHW (and
    torch.compile's Inductor picks it for every convolution for the same reason); as is elsewhere.
    Layout never changes a value's meaning: every consumer indexes logically (N, C, H, W)."""
    if t.dim() == 4 and t.device.type == "cpu":
        if t.shape[1] == 1 and t.is_contiguous():
            # One channel is both layouts, and ATen then picks NCHW kernels (a first layer on grey images
            # would run NCHW and hand its output to a conversion): say channels-last in the strides
            N, C, H, W = t.shape
            return t.as_strided(t.shape, (H * W, 1, W, 1))
        return t.contiguous(memory_format=torch.channels_last)
    return t
