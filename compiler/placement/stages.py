"""What one stage of a placement costs: a run of units on one device, or as towers on m devices.

A stage [i, j) of a reference (`reference.py`) of width m runs its units either whole on one device
(every tower of every unit there) or as towers on m devices (tower t of each unit on the stage's t-th
device). Its cost, from the reference's nodes renamed to the stage's devices, in the terms of the
step bound (`cost.roofline.step_bound`: the busiest device's time, or the longest dependency chain):

* `busy`: the busiest of its devices: the bounds of the nodes it runs, and its SGD update;
* `waits`: what the stage adds to the dependency chain: the copies each unit waits for (from other
  stages, or between its towers), the longest of them per unit, forward and backward, and the towers
  it puts on one device (merged into one node, they follow each other on the chain);
* `link`: bytes over the link: every copy into the stage that stays a copy (two reference copies of
  one value into one device are one copy);
* `memory` per device: the memory plan's rule (a value lives from the step that writes it to the
  last step that reads it on that device; a value read on another device lives until its copy, the
  copy until its last reader) applied to the renamed values, plus the parameters the memory plan
  counts and their SGD momentum. Exactly the memory plan's figure where the renaming is exact (tests
  check it); the step order is the reference's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..cost import UpdateCost
from ..cost.roofline import Seconds
from .reference import AtBatch, Reference, Where


@dataclass(frozen=True)
class StageCost:
    busy: float                  # the busiest device's seconds (its nodes and its update)
    waits: float                 # seconds of copies the stage's units wait for, on the dependency chain
    update: float                # the slowest device's SGD update
    link: int                    # bytes copied into the stage's devices
    memory: tuple[int, ...]      # per device of the stage: bytes (an upper bound where `exact` is False)
    exact: bool                  # memory worked out step by step (else summed without liveness)


def _merged_update(device: str, ups: list[UpdateCost]) -> UpdateCost:
    return UpdateCost(device, sum(u.params for u in ups), sum(u.flops for u in ups), sum(u.read for u in ups),
                      sum(u.written for u in ups))


def peak(events: list[tuple[int, int]]) -> int:
    """The largest running sum of (step, bytes) events, each step's events applied together."""
    events.sort()
    live = top = 0
    for k, (s, b) in enumerate(events):
        live += b
        if k + 1 == len(events) or events[k + 1][0] != s:
            top = max(top, live)
    return top


class StageCosts:
    """Stage costs of one reference at one batch size, for one device memory limit."""

    def __init__(self, ref: Reference, at: AtBatch, seconds: Seconds, limit: float):
        self.ref, self.at, self.seconds, self.limit = ref, at, seconds, limit

    def placer(self, i: int, j: int, towers: bool) -> Callable[[Where], int | None]:
        """(unit, tower) -> the stage's device index, None outside the stage."""
        if towers:
            return lambda w: w[1] if i <= w[0] < j else None
        return lambda w: 0 if i <= w[0] < j else None

    def cost(self, i: int, j: int, towers: bool) -> StageCost:
        ref, at = self.ref, self.at
        dev = self.placer(i, j, towers)
        width = max(ref.towers[i:j]) if towers else 1
        busy = [0.0] * width
        waits = 0.0
        link = 0
        copied: dict[tuple[tuple[int, int], int], list[int]] = {}   # (value, device) -> [first step, last use, bytes]
        for u in range(i, j):
            f, b = [0.0] * width, [0.0] * width
            for t in range(ref.towers[u]):
                d = dev((u, t))
                f[d] += at.forward[u][t]
                b[d] += at.backward[u][t]
                busy[d] += at.forward[u][t] + at.backward[u][t]
            # towers sharing a device run as one node: on the chain one after the other, not side by side
            waits += max(f) - max(at.forward[u]) + max(b) - max(at.backward[u])
            longest = {"forward": 0.0, "backward": 0.0}
            for ci in ref.copies_into[u]:
                c = ref.copies[ci]
                d = dev(c.dst)
                if dev(c.src) == d:
                    continue
                longest[c.phase] = max(longest[c.phase], at.copy_seconds[ci])
                key = (c.key, d)
                if key in copied:
                    span = copied[key]
                    span[0], span[1] = min(span[0], c.step), max(span[1], c.last_use)
                else:
                    copied[key] = [c.step, c.last_use, at.copy_bytes[ci]]
                    link += at.copy_bytes[ci]
            waits += longest["forward"] + longest["backward"]
        ups: list[list[UpdateCost]] = [[] for _ in range(width)]
        fixed = [0] * width
        for w, up in ref.updates.items():
            d = dev(w)
            if d is not None:
                ups[d].append(up)
        for w, nbytes in ref.params.items():
            d = dev(w)
            if d is not None:
                fixed[d] += nbytes + ref.momentum.get(w, 0)
        update = [self.seconds(_merged_update(str(d), ups[d])) for d in range(width)]
        memory, exact = self._memory(i, j, dev, width, fixed, copied)
        return StageCost(max(b + up for b, up in zip(busy, update)), waits, max(update), link, memory, exact)

    def _memory(self, i: int, j: int, dev, width: int, fixed: list[int],
                copied: dict) -> tuple[tuple[int, ...], bool]:
        ref, at = self.ref, self.at
        total = list(fixed)
        for u in range(i, j):
            for vi in ref.values_of[u]:
                total[dev(ref.values[vi].where)] += at.value_bytes[vi]
        for (_, d), (_, _, nbytes) in copied.items():
            total[d] += nbytes
        if max(total) <= self.limit:       # fits even if every value lived all step long
            return tuple(total), False
        events: list[list[tuple[int, int]]] = [[] for _ in range(width)]
        for u in range(i, j):
            for vi in ref.values_of[u]:
                v = ref.values[vi]
                d = dev(v.where)
                end = v.end
                for ci in v.copies:
                    c = ref.copies[ci]
                    end = max(end, c.last_use if dev(c.dst) == d else c.step)
                b = at.value_bytes[vi]
                events[d] += ((v.step, b), (end + 1, -b))
        for (_, d), (first, last, nbytes) in copied.items():
            events[d] += ((first, nbytes), (last + 1, -nbytes))
        return tuple(fixed[d] + peak(events[d]) for d in range(width)), True
