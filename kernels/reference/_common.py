"""Helpers of the reference modules only: fp32 compute copies and the ceil-rounding pad.

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
