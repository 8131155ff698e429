"""Data parallelism over torch.distributed: average the executor's gradient buckets across processes.

Each process (e.g. one per machine under torchrun) binds the same graph, computes gradients on its
own shard of the batch, then calls `allreduce_gradients(executor)` before the optimizer step. The
executor keeps all gradients of a real device in one flat buffer, so this is one all-reduce per
device, not one per parameter.
"""
from __future__ import annotations

import torch.distributed as dist

from .executor import Executor


def allreduce_gradients(executor: Executor, group=None) -> None:
    """Replace every gradient with its mean over the processes of `group` (default: the world)."""
    world = dist.get_world_size(group)
    if world == 1:
        return
    works = [dist.all_reduce(bucket, op=dist.ReduceOp.SUM, group=group, async_op=True)
             for bucket in executor.grad_buckets()]
    for work, bucket in zip(works, executor.grad_buckets()):
        work.wait()
        bucket.div_(world)


def shard(n: int, rank: int, world: int) -> range:
    """The indices of a global batch of `n` that process `rank` of `world` computes (contiguous)."""
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return range(start, start + per + (1 if rank < extra else 0))
