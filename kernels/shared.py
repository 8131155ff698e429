"""Definitions both backends must agree on: the dropout hash's constants and keys, the argmax dtype,
the inputs `add` accepts, what batch norm's backward returns.

The Triton kernels and the reference (`kernels/reference/`) each import these from here, so neither
depends on the other: the reference is the Triton kernels' test oracle, and an oracle that shares
code with what it checks would check nothing. Only what must be identical on both sides lives here.
"""
from __future__ import annotations

import torch


def check_add_inputs(xs) -> None:
    """`add`'s contract: two or more tensors of one shape (both backends refuse the same inputs)."""
    if len(xs) < 2:
        raise ValueError(f"add needs at least two inputs, got {len(xs)}")
    for t in xs[1:]:
        if t.shape != xs[0].shape:
            raise ValueError(f"add: shapes {tuple(xs[0].shape)} and {tuple(t.shape)} differ")


def fp32_partial_sums(xs) -> bool:
    """Whether a left-to-right sum of `xs` keeps its partial sums in fp32 and rounds once at the end:
    three or more half-precision inputs (add, add_n; rounded after each input they would drift)."""
    return len(xs) > 2 and xs[0].dtype in (torch.float16, torch.bfloat16)


def bn_backward_outputs(grads, dz, residual: bool) -> tuple:
    """Batch norm's backward outputs: (dx, dscale, dshift), and with a residual in the forward, dz (the
    residual's gradient) after them."""
    return (*grads, dz) if residual else grads


def pair(v) -> tuple[int, int]:
    """An `(h, w)` pair from an int (square) or any two-element sequence."""
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


# -- max pooling: the dtype of the saved window offset ---------------------------------------------------
def argmax_dtype(kernel) -> torch.dtype:
    """The narrowest signed integer holding every window offset r*kw + s: int8 up to 127 cells."""
    kh, kw = pair(kernel)
    cells = kh * kw
    return torch.int8 if cells <= 127 else torch.int16 if cells <= 32767 else torch.int32


# -- dropout: the counter-based mask ---------------------------------------------------------------------
# The mask is a pure function of (seed, step, flat NCHW index): a 32-bit integer hash that Triton
# computes in uint32 and the reference in int64 with explicit masking (torch has no uint32
# arithmetic). Host side, (seed, step) become two 32-bit keys; per element:
#   h = mix(lo * GOLDEN + key_a);  h = mix(h ^ key_b ^ hi * HI_MUL);  keep iff (h >> 8) >= round(p * 2^24)
# with lo/hi the low/high 32 bits of the index and mix() the "lowbias32" finaliser.
M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9
HI_MUL = 0x85EBCA77
MIX1 = 0x7FEB352D
MIX2 = 0x846CA68B


def mix32(x: int) -> int:
    """lowbias32 on one Python integer (the keys are hashed on the host)."""
    x &= M32
    x ^= x >> 16
    x = (x * MIX1) & M32
    x ^= x >> 15
    x = (x * MIX2) & M32
    x ^= x >> 16
    return x


def dropout_keys(seed: int, step: int) -> tuple[int, int]:
    """The two 32-bit keys of (seed, step); both backends call this on the host."""
    seed, step = int(seed), int(step)
    a = mix32(mix32(seed & M32) ^ ((seed >> 32) & M32) ^ 0x243F6A88)
    b = mix32(mix32((step & M32) + a) ^ ((step >> 32) & M32) ^ 0x13198A2E)
    return a, b


def dropout_threshold(p: float) -> int:
    """keep iff the hash's top 24 bits are >= this: P(keep) = 1 - p to within 2^-24."""
    return min(1 << 24, max(0, round(float(p) * (1 << 24))))
