"""The search: dynamic programming over the units in execution order, stages of units on disjoint
devices, for every data-parallel width; exact for its objective, no sampling.

For r processes (data parallelism, r dividing the N devices) each replica gets k = N / r devices and
a shard of ceil(B / r) samples. A replica's placement cuts the units (`units.py`, block instances
whole) into consecutive *stages*, each on devices of its own: one device (every unit whole there) or
m devices as towers (`stages.py`), for m in 2, 4, 8. Over a reference of width m (`reference.py`),
with labels per (units placed, devices used), the dynamic program keeps every placement that is not
beaten in both of the step bound's terms (Pareto):

* the busiest device's time (a maximum over stages: devices are disjoint), and
* the dependency chain: the network's own (copies free; it depends on no placement) plus the copies
  each stage's units wait for and the first stage's update (a sum over stages);

and ends with the placement of least max(busiest, chain), ties to fewer bytes over the link, then to
fewer devices. A stage whose memory (parameters, momentum, the plan's liveness) exceeds the device's
is never formed; a stage only grows in memory as it takes more units, so the search stops extending
it there. With r > 1 the all-reduce is added as in `cost.allreduce` (all-reduce starts after the
forward pass and cannot end before the last bucket is reduced after the backward).

Widths are searched in order m = 1, 2, 4, 8; a wider reference is compiled only if a lower bound of
what it could reach (the total work over k devices, and the chain less everything its towers could
take off it) beats the best placement found so far.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from ..cost import LinkSpec, ring_bytes
from ..cost.allreduce import DEFAULT_BUCKET_MB, bucket_bytes, bucket_layout, gradient_bytes
from ..cost.roofline import Seconds
from .reference import AtBatch, Reference
from .spec_edits import Placement
from .stages import StageCost, StageCosts
from .units import Unit

TOWER_WIDTHS = (2, 4, 8)
_TIE = 1e-9     # relative: two predicted times closer than this are a tie


@dataclass(frozen=True)
class Stage:
    first: int
    end: int
    towers: bool
    base: int           # its first device's index in the replica
    width: int          # devices it runs on


@dataclass(frozen=True)
class Candidate:
    replicas: int
    m: int              # the reference's width
    batch: int          # each replica's shard
    stages: tuple[Stage, ...]
    devices: int        # devices each replica uses
    busy: float
    chain: float
    allreduce: float    # when the all-reduce can end, plus the update after it (0: one process)
    link: int           # bytes over the link per replica and step (copies)
    memory: int         # the fullest device's bytes, as the stages work it out

    @property
    def seconds(self) -> float:
        return max(self.busy, self.chain, self.allreduce)

    def placement(self, ref_towers: list[int]) -> Placement:
        towers: list[tuple[str, ...]] = []
        for s in self.stages:
            for u in range(s.first, s.end):
                n = ref_towers[u] if s.towers else 1
                towers.append(tuple(f"gpu{s.base + t}" for t in range(n)))
        return Placement(tuple(f"gpu{d}" for d in range(self.devices)), tuple(towers), self.replicas)


def better(a: tuple[float, int, int], b: tuple[float, int, int]) -> bool:
    """(seconds, link bytes, devices): a is better than b (times within _TIE are a tie)."""
    if abs(a[0] - b[0]) > _TIE * max(a[0], b[0]):
        return a[0] < b[0]
    return a[1:] < b[1:]


@dataclass
class _Label:
    busy: float
    waits: float
    link: int
    memory: int
    update: float                   # the first stage's update (on the chain)
    stages: tuple[Stage, ...] = ()


def _dominated(x: _Label, labels: list[_Label]) -> bool:
    return any(l.busy <= x.busy and l.waits + l.update <= x.waits + x.update and l.link <= x.link for l in labels)


@dataclass
class ReplicaSearch:
    """One replica's placements over one reference at one batch size."""

    ref: Reference
    at: AtBatch
    costs: StageCosts
    memo: dict[tuple[int, int, bool], StageCost] = field(default_factory=dict)

    def stage(self, i: int, j: int, towers: bool) -> StageCost:
        key = (i, j, towers)
        if key not in self.memo:
            self.memo[key] = self.costs.cost(i, j, towers)
        return self.memo[key]

    def labels(self, k: int, limit: float) -> list[list[list[_Label]]]:
        """Pareto labels per (units placed, devices used), stages within `limit` bytes per device."""
        ref = self.ref
        n = len(ref.units)
        labels: list[list[list[_Label]]] = [[[] for _ in range(k + 1)] for _ in range(n + 1)]
        labels[0][0].append(_Label(0.0, 0.0, 0, 0, 0.0))
        widths = {}
        for i in range(n):
            for towers in ((False, True) if ref.m > 1 else (False,)):
                for j in range(i + 1, n + 1):
                    width = max(ref.towers[i:j]) if towers else 1
                    if towers and width == 1:
                        continue
                    widths[(i, j, towers)] = width
        for i in range(n):
            for d in range(k):
                if not labels[i][d]:
                    continue
                for towers in ((False, True) if ref.m > 1 else (False,)):
                    for j in range(i + 1, n + 1):
                        width = widths.get((i, j, towers))
                        if width is None or d + width > k:
                            continue
                        s = self.stage(i, j, towers)
                        if max(s.memory) > limit:
                            break       # taking more units only needs more memory
                        stage = Stage(i, j, towers, d, width)
                        for l in labels[i][d]:
                            new = _Label(max(l.busy, s.busy), l.waits + s.waits, l.link + s.link,
                                         max(l.memory, max(s.memory)), s.update if i == 0 else l.update,
                                         l.stages + (stage,))
                            bucket = labels[j][d + width]
                            if not _dominated(new, bucket):
                                bucket[:] = [b for b in bucket if not _dominated(b, [new])] + [new]
        return labels


@dataclass(frozen=True)
class AllReduce:
    """What the search knows of data parallelism's all-reduce (bytes do not depend on the placement)."""

    total: int            # gradient bytes of one replica
    last: int             # bytes of the last bucket to fill (the first layers' gradients)

    def seconds(self, replicas: int, link: LinkSpec) -> tuple[float, float]:
        """(all buckets, the last bucket) on the link, per process."""
        return ring_bytes(self.total, replicas) / link.bandwidth, ring_bytes(self.last, replicas) / link.bandwidth


def allreduce_of(ref: Reference, dtype: str, bucket_mb: float = DEFAULT_BUCKET_MB) -> AllReduce:
    grads = gradient_bytes(ref.net.training(), dtype)
    layout = bucket_layout([(name, 0, nbytes) for name, _, nbytes in grads], bucket_bytes(bucket_mb))
    size = dict((name, nbytes) for name, _, nbytes in grads)
    return AllReduce(sum(size.values()), sum(size[n] for n in layout[-1][1]) if layout else 0)


def best_candidate(search: ReplicaSearch, k: int, limit: float, replicas: int, allreduce: AllReduce,
                   link: LinkSpec) -> Candidate | None:
    """The replica placement on at most `k` devices of least predicted step, None when none fits."""
    labels = search.labels(k, limit)
    at = search.at
    total, last = allreduce.seconds(replicas, link)
    best, best_key = None, None
    for d in range(1, k + 1):
        for l in labels[len(search.ref.units)][d]:
            chain = at.chain + l.waits + l.update
            ar = 0.0
            if replicas > 1:   # all-reduce: after the forward pass at the earliest, the last bucket after the backward
                ar = max(at.chain + l.waits + last, at.forward_chain + total) + l.update
            c = Candidate(replicas, search.ref.m, at.batch, l.stages, d, l.busy, chain, ar, l.link, l.memory)
            key = (c.seconds, c.link, d)
            if best is None or better(key, best_key):
                best, best_key = c, key
    return best


def divisors(n: int) -> list[int]:
    return [r for r in range(1, n + 1) if n % r == 0]


def lower_bound(one: AtBatch, units: list[Unit], m: int, k: int) -> float:
    """What a reference of width m could reach at best, from the width-1 reference's figures: the
    total work spread over k devices, and the chain less all its towers could take off it."""
    work = [sum(one.forward[u]) + sum(one.backward[u]) for u in range(len(units))]
    saved = sum(w * (1 - 1 / units[u].tower_count(m)) for u, w in enumerate(work) if units[u].tower_count(m) > 1)
    return max(sum(work) / k, one.chain - saved)


@dataclass
class SearchResult:
    candidates: list[Candidate]            # the best of each (replicas, width) searched, that fits
    references: dict[int, Reference]
    searched: list[tuple[int, int]]        # (replicas, width) searched
    pruned: list[tuple[int, int]]          # (replicas, width) skipped by the lower bound
    widths_possible: list[int]


def search(reference: Callable[[int], Reference], units: list[Unit], n: int, batch: int, limit: float,
           seconds: Seconds, link: LinkSpec, dtype: str, key: object = None) -> SearchResult:
    """The best placement of each data-parallel width r (dividing `n`, at most `batch`) and reference
    width, as `Candidate`s; `reference(m)` compiles (or returns) the reference of width m."""
    refs: dict[int, Reference] = {}

    def ref(m: int) -> Reference:
        if m not in refs:
            refs[m] = reference(m)
        return refs[m]

    widths = [m for m in TOWER_WIDTHS if m <= n and any(u.tower_count(m) > 1 for u in units)]
    rs = [r for r in divisors(n) if r <= batch]
    found: list[Candidate] = []
    searched, pruned = [], []
    best = None
    allreduce = None
    for m in [1, *widths]:
        for r in rs:
            k = n // r
            if m > k:
                continue
            b = math.ceil(batch / r)
            one = ref(1).at(b, seconds, key)
            if allreduce is None:
                allreduce = allreduce_of(ref(1), dtype)
            if m > 1 and best is not None and lower_bound(one, units, m, k) >= best.seconds:
                pruned.append((r, m))
                continue
            at = ref(m).at(b, seconds, key)
            cand = best_candidate(ReplicaSearch(ref(m), at, StageCosts(ref(m), at, seconds, limit)), k, limit, r,
                                  allreduce, link)
            searched.append((r, m))
            if cand is None:
                continue
            found.append(cand)
            if best is None or better((cand.seconds, cand.link, cand.devices * r),
                                      (best.seconds, best.link, best.devices * best.replicas)):
                best = cand
    return SearchResult(found, refs, searched, pruned, widths)


def least_memory(ref: Reference, at: AtBatch, seconds: Seconds, k: int) -> int:
    """The least memory of the fullest device over every placement of `ref` on at most `k` devices
    (a bottleneck dynamic program over the same stages)."""
    costs = StageCosts(ref, at, seconds, 0)   # limit 0: every stage's memory worked out step by step
    n = len(ref.units)
    best: list[list[float]] = [[math.inf] * (k + 1) for _ in range(n + 1)]
    best[0][0] = 0
    for i in range(n):
        for d in range(k):
            if best[i][d] == math.inf:
                continue
            for towers in ((False, True) if ref.m > 1 else (False,)):
                for j in range(i + 1, n + 1):
                    width = max(ref.towers[i:j]) if towers else 1
                    if (towers and width == 1) or d + width > k:
                        continue
                    need = max(best[i][d], max(costs.cost(i, j, towers).memory))
                    best[j][d + width] = min(best[j][d + width], need)
    return int(min(best[n]))
