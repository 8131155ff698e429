"""Which samples make up each batch of an epoch: the order drawn from (seed, epoch), the batches cut
from it, the part of each that one process of a sharded run takes, and where a resumed epoch starts.

Both loaders read their batches from :func:`epoch_batches` (the per-sample ``DataLoader`` of
``loader.py`` and the pack's batched loader of ``pack_loader.py``), so they agree on every batch.
"""
from __future__ import annotations

import numpy as np


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a permutation drawn from (seed, epoch), or 0..n-1."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)


def epoch_batches(n: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int, drop_last: bool,
                  start_batch: int = 0, limit_batches: int | None = None,
                  shard: tuple[int, int] | None = None) -> list[np.ndarray]:
    """The sample indices of each batch of the epoch from ``start_batch`` on (at most ``limit_batches``
    counted from 0). With ``shard=(rank, world)``: this process's contiguous slice of every global
    batch (:func:`~alexnetc.runtime.execution.distributed.shard`), empty slices included."""
    total = n // batch_size if drop_last else -(-n // batch_size)
    if limit_batches is not None:
        total = min(total, limit_batches)
    order = epoch_order(n, shuffle, seed, epoch)[start_batch * batch_size: total * batch_size]
    batches = [order[b:b + batch_size] for b in range(0, len(order), batch_size)]
    if shard is None:
        return batches
    from ..execution.distributed import shard as shard_of

    rank, world = shard
    out = []
    for whole in batches:
        part = shard_of(len(whole), rank, world)
        out.append(whole[part.start:part.stop])
    return out
