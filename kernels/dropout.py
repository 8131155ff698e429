"""Triton dropout with a counter-based mask: a pure function of (seed, step, offset + flat NCHW element
index); `offset` places a shard of a batch inside the global batch (default 0).

Nothing is saved between forward and backward: `dropout_backward` recomputes the same hash. The hash
is the one specified in `shared.py` (two rounds of the lowbias32 finaliser keyed by
`shared.dropout_keys(seed, step)`), computed here in uint32, so both backends drop exactly the same
elements. The keys are passed as int32 bit patterns and reinterpreted, which keeps Triton's argument
specialisation (i32 vs i64 by value) from changing the kernel's integer types.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .shared import GOLDEN, HI_MUL, MIX1, MIX2, dropout_keys, dropout_threshold

BLOCK = 1024
# Module-level constexprs the jitted code reads as uint32 constants.
MIX1_C = tl.constexpr(MIX1)
MIX2_C = tl.constexpr(MIX2)
GOLDEN_C = tl.constexpr(GOLDEN)
HI_MUL_C = tl.constexpr(HI_MUL)


@triton.jit
def _mix32(x):
    x = x ^ (x >> 16)
    x = x * MIX1_C
    x = x ^ (x >> 15)
    x = x * MIX2_C
    return x ^ (x >> 16)


@triton.jit(do_not_specialize=["base", "key_a", "key_b", "thr"])
def _dropout_kernel(x_ptr, y_ptr, n, base, key_a, key_b, thr, scale, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    idx = offs + base  # the element's index in the global batch: what the mask is keyed by
    lo = (idx & 0xFFFFFFFF).to(tl.uint32)
    hi = (idx >> 32).to(tl.uint32)
    ka = key_a.to(tl.uint32, bitcast=True)
    kb = key_b.to(tl.uint32, bitcast=True)
    h = _mix32(lo * GOLDEN_C + ka)
    h = _mix32(h ^ kb ^ (hi * HI_MUL_C))
    keep = (h >> 8).to(tl.int32) >= thr
    x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, tl.where(keep, x * scale, 0.0).to(y_ptr.dtype.element_ty), mask=m)


def _as_i32(v: int) -> int:
    return v - (1 << 32) if v >= (1 << 31) else v


def _apply(t: torch.Tensor, p: float, seed: int, step: int, offset: int = 0) -> torch.Tensor:
    p = float(p)
    offset = int(offset)
    if offset < 0:
        raise ValueError(f"dropout element offset {offset} is negative")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability {p} is outside [0, 1]")
    if p == 0.0:
        return t.clone()
    if p == 1.0:
        return torch.zeros_like(t)
    t = t.contiguous()  # the mask is indexed by the logical (NCHW, row-major) position
    out = torch.empty_like(t)
    n = t.numel()
    if n:
        a, b = dropout_keys(seed, step)
        _dropout_kernel[(triton.cdiv(n, BLOCK),)](t, out, n, offset, _as_i32(a), _as_i32(b), dropout_threshold(p),
                                                  1.0 / (1.0 - p), BLOCK=BLOCK)
    return out


def dropout(x, *, p, seed, step, offset=0):
    return _apply(x, p, seed, step, offset)


def dropout_backward(dy, *, p, seed, step, offset=0):
    return _apply(dy, p, seed, step, offset)
