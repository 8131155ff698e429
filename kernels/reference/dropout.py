"""Reference dropout: the mask hash of `kernels/shared.py`, applied with ATen.

torch has no uint32 arithmetic, so the 32-bit hash runs on int64 with explicit masking
(`dropout_hash_of`, the general form the tests check against Python's integers); masks of CPU tensors
take numpy's wrapping uint32 arithmetic instead, several times faster, and equal bit for bit (tested).
The Triton kernel computes the same hash in uint32 and drops exactly the same elements.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..shared import GOLDEN, HI_MUL, M32, MIX1, MIX2, dropout_keys, dropout_threshold
from ._common import up


def _mul32_(x: torch.Tensor, c: int) -> torch.Tensor:
    """x <- (x * c) mod 2^32 for int64 x in [0, 2^32), in place: c is split in 16-bit halves so no
    product passes 2^63 (int64 overflow is not something to rely on)."""
    hi = x * (c >> 16)
    hi.bitwise_and_(0xFFFF).bitwise_left_shift_(16)
    return x.mul_(c & 0xFFFF).add_(hi).bitwise_and_(M32)


def _mix32_(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 in place (in-place ops: at fc6's 0.5M elements fresh temporaries cost more than the math)."""
    x.bitwise_xor_(x >> 16)
    _mul32_(x, MIX1)
    x.bitwise_xor_(x >> 15)
    _mul32_(x, MIX2)
    return x.bitwise_xor_(x >> 16)


def dropout_hash_of(idx: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """The 32-bit hash (as int64) of each flat element index in `idx` (int64, >= 0)."""
    a, b = dropout_keys(seed, step)
    h = _mix32_(_mul32_(idx & M32, GOLDEN).add_(a).bitwise_and_(M32))
    h.bitwise_xor_(b)
    hi = idx >> 32
    if bool(hi.any()):  # indices past 2^32 only: below, hi * HI_MUL is 0
        h.bitwise_xor_(_mul32_(hi, HI_MUL))
    return _mix32_(h)


def dropout_hash(numel: int, seed: int, step: int, device=None, offset: int = 0) -> torch.Tensor:
    """The hash of every flat index in [offset, offset + numel)."""
    idx = torch.arange(offset, offset + numel, dtype=torch.int64, device=device)
    if offset + numel > (1 << 32):
        return dropout_hash_of(idx, seed, step)
    a, b = dropout_keys(seed, step)
    h = _mix32_(_mul32_(idx, GOLDEN).add_(a).bitwise_and_(M32))  # arange is fresh: hash it in place
    return _mix32_(h.bitwise_xor_(b))


def _mix32_np(x):
    """lowbias32 in place on a numpy uint32 array (numpy's uint32 arithmetic wraps mod 2^32)."""
    x ^= x >> np.uint32(16)
    x *= np.uint32(MIX1)
    x ^= x >> np.uint32(15)
    x *= np.uint32(MIX2)
    x ^= x >> np.uint32(16)
    return x


_CHUNK = 1 << 18          # elements per thread's piece: large enough that a piece outweighs its dispatch
_pool: tuple[int, int, ThreadPoolExecutor] | None = None   # (pid, workers, pool), made on first use


def _threads(workers: int) -> ThreadPoolExecutor:
    """A pool of `workers` threads, remade after a fork (a forked child has none of its parent's
    threads) or when torch's thread count changes."""
    global _pool
    if _pool is None or _pool[:2] != (os.getpid(), workers):
        _pool = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="alexnetc-dropout"))
    return _pool[2]


def _keep_np(numel: int, seed: int, step: int, p: float, offset: int):
    """dropout_mask's keep flags on the CPU through numpy's uint32 arithmetic: the same hash as
    dropout_hash_of, about 5x faster than the int64 emulation with its split multiplies (at a 2.4M
    element map: 17 ms against 82 ms on one core), which made dropout a large share of a CPU step.
    numpy's ufuncs run on one core but release the GIL, so a large map is hashed in pieces on as many
    threads as torch uses (the int64 emulation it replaced ran on torch's threads)."""
    workers = min(torch.get_num_threads(), numel // _CHUNK)
    if workers <= 1:
        return _keep_piece(numel, seed, step, p, offset)
    out = np.empty(numel, dtype=bool)
    bounds = np.linspace(0, numel, workers + 1).astype(np.int64).tolist()

    def piece(i: int) -> None:
        lo, hi = bounds[i], bounds[i + 1]
        out[lo:hi] = _keep_piece(hi - lo, seed, step, p, offset + lo)

    list(_threads(workers).map(piece, range(workers)))
    return out


def _keep_piece(numel: int, seed: int, step: int, p: float, offset: int):
    a, b = dropout_keys(seed, step)
    if offset + numel <= (1 << 32):
        h = np.arange(offset, offset + numel, dtype=np.uint32)
        hi = None
    else:
        idx = np.arange(offset, offset + numel, dtype=np.uint64)
        h = (idx & np.uint64(M32)).astype(np.uint32)
        hi = (idx >> np.uint64(32)).astype(np.uint32)
        del idx
    with np.errstate(over="ignore"):
        h *= np.uint32(GOLDEN)
        h += np.uint32(a)
        _mix32_np(h)
        h ^= np.uint32(b)
        if hi is not None:
            hi *= np.uint32(HI_MUL)
            h ^= hi
        _mix32_np(h)
    h >>= np.uint32(8)
    return h >= np.uint32(dropout_threshold(p))


def dropout_mask(shape, seed: int, step: int, p: float, device=None, offset: int = 0) -> torch.Tensor:
    """bool mask (True = kept) of the given logical shape; element i is hashed as index offset + i."""
    numel = 1
    for d in shape:
        numel *= int(d)
    if torch.device(device if device is not None else "cpu").type == "cpu":
        return torch.from_numpy(_keep_np(numel, seed, step, p, int(offset))).view(tuple(shape))
    keep = (dropout_hash(numel, seed, step, device, offset) >> 8) >= dropout_threshold(p)
    return keep.view(tuple(shape))


def _apply(t: torch.Tensor, p: float, seed: int, step: int, offset: int = 0) -> torch.Tensor:
    offset = int(offset)
    if offset < 0:
        raise ValueError(f"dropout element offset {offset} is negative")
    if p <= 0:
        return t.clone()
    if p >= 1:
        return torch.zeros_like(t)
    keep = dropout_mask(t.shape, seed, step, p, t.device, offset)
    return torch.where(keep, up(t) * (1.0 / (1.0 - p)), 0.0).to(t.dtype)


def dropout(x, *, p, seed, step, offset=0):
    """`offset`: the flat index of x's first element in a larger (global) batch, so a shard of a batch
    gets the mask rows the whole batch would (offset = first sample index * elements per sample)."""
    return _apply(x, p, seed, step, offset)


def dropout_backward(dy, *, p, seed, step, offset=0):
    return _apply(dy, p, seed, step, offset)
