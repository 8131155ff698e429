"""Data parallelism's cost: the gradient all-reduce of N processes, and its bound on a training step.

Under ``torchrun`` every process trains one replica on its shard of the global batch and the
gradients are summed over the processes in buckets (`runtime/execution/distributed.GradReducer`):
consecutive gradients in the order the backward pass produces them (`Program.grad_of`), one device's
each, at most `DEFAULT_BUCKET_MB` each (`bucket_layout`, which the runtime forms its buckets with). A
bucket's all-reduce starts when its last gradient is final; the collectives of one process group run
one after another; the SGD update follows the last of them.

A ring all-reduce of n bytes over r processes sends (and receives) 2(r-1)/r * n bytes per process,
each chunk n/r: on a link of bandwidth B it cannot take less than that over B. So a data-parallel
step is bounded by one replica's step (`roofline.step_bound` at the shard's batch) and by the end of
its last all-reduce (each bucket started no sooner than the earliest its gradients exist, in the
replica's earliest schedule, and no sooner than the previous one ended) plus the update.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Iterable

from ..passes.memory_plan import DTYPE_BYTES
from ..program import Program, master_dtype
from .devices import DeviceSpec, LinkSpec
from .node_cost import NodeCost, UpdateCost
from .roofline import Seconds, StepBound, roofline_seconds, schedule, step_bound

DEFAULT_BUCKET_MB = 25.0    # the runtime's default (`alexnetc train --bucket-mb`)


def bucket_bytes(bucket_mb: float) -> int:
    return max(1, int(min(bucket_mb, 2.0 ** 30) * 2 ** 20))


def bucket_layout(grads: Iterable[tuple[str, Hashable, int]], cap: int) -> list[tuple[Hashable, list[str]]]:
    """(device, gradient names) per bucket, in the order they fill: `grads` are (name, device, bytes)
    in backward order; a bucket holds consecutive gradients of one device, at most `cap` bytes (a
    larger gradient is a bucket alone)."""
    buckets: list[tuple[Hashable, list[str]]] = []
    open_: dict[Hashable, int] = {}      # device -> index of its open bucket
    sizes: dict[Hashable, int] = {}
    for name, dev, nbytes in grads:
        if dev not in open_ or sizes[dev] + nbytes > cap:
            open_[dev] = len(buckets)
            buckets.append((dev, []))
            sizes[dev] = 0
        buckets[open_[dev]][1].append(name)
        sizes[dev] += nbytes
    return buckets


def ring_bytes(nbytes: int, replicas: int) -> int:
    """Bytes one process sends in a ring all-reduce of `nbytes` over `replicas` processes."""
    return 2 * (replicas - 1) * math.ceil(nbytes / replicas) if replicas > 1 else 0


def gradient_bytes(program: Program, dtype: str) -> list[tuple[str, str, int]]:
    """(parameter, device, bytes of its gradient) in the order the backward pass produces them; the
    gradients (and the buckets) are in the master dtype."""
    size = DTYPE_BYTES[master_dtype(dtype)]
    params = {n.name: n for n in program.graph.params()}
    return [(name, params[name].device or "host", math.prod(params[name].shapes[0]) * size)
            for name in program.grad_of]


@dataclass(frozen=True)
class DataParallelBound:
    replicas: int
    replica: StepBound        # one replica's step at its shard's batch
    buckets: int
    bytes_sent: int           # per process and step, all buckets
    allreduce: float          # seconds of all-reduce on the link, all buckets together
    end: float                # when the last all-reduce can end at the earliest
    update: float             # the SGD update after it (the slowest device's)

    @property
    def seconds(self) -> float:
        return max(self.replica.seconds, self.end + self.update) if self.replicas > 1 else self.replica.seconds

    @property
    def limit(self) -> str:
        if self.replicas > 1 and self.end + self.update > self.replica.seconds:
            return "all-reduce"
        return self.replica.limit


def data_parallel_bound(program: Program, costs: list[NodeCost], updates: list[UpdateCost], dev: DeviceSpec,
                        link: LinkSpec, replicas: int, dtype: str = "float32",
                        bucket_mb: float = DEFAULT_BUCKET_MB, seconds: Seconds | None = None) -> DataParallelBound:
    """The bound of a step of `replicas` processes, each running `program` (at its shard's batch,
    `costs` in execution order); the all-reduce runs over `link`."""
    seconds = seconds or roofline_seconds(dev, link)
    replica = step_bound(program, costs, updates, dev, link, seconds)
    grads = gradient_bytes(program, dtype)
    layout = bucket_layout(grads, bucket_bytes(bucket_mb))
    if replicas <= 1:
        return DataParallelBound(replicas, replica, len(layout), 0, 0.0, 0.0, 0.0)
    finish = schedule(costs, seconds).finish
    heads = program.grad_heads
    ready_of = {name: finish.get(id(heads[name].node), 0.0) for name, _, _ in grads}
    size_of = {name: nbytes for name, _, nbytes in grads}
    spans = sorted((max(ready_of[n] for n in names), sum(size_of[n] for n in names)) for _, names in layout)
    end, sent = 0.0, 0
    for ready, nbytes in spans:   # one process group: its collectives run one after another
        b = ring_bytes(nbytes, replicas)
        sent += b
        end = max(end, ready) + b / link.bandwidth
    update = max((seconds(u) for u in updates), default=0.0)
    return DataParallelBound(replicas, replica, len(layout), sent, sent / link.bandwidth, end, update)
