"""Roofline lower bounds: how fast a node, a layer and a training step could run on a named device.

A node cannot finish sooner than its FLOPs at the peak of the precision it runs in, nor sooner than
its bytes at the memory bandwidth (`devices.DeviceSpec`): its bound is the larger of the two, and
which one it is says what limits it. A cross-device copy is bounded by its bytes over the link. A
step is bounded by the busiest device's sum of node bounds (one device runs its nodes one at a
time at best, if each ran at its own bound) and by the longest dependency chain through the graph
(copies included); its bound is the larger. Every bound is optimistic: a measured time below it
means the cost model is wrong, a time far above it is room left.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..program import Program
from .devices import DeviceSpec, LinkSpec
from .node_cost import NodeCost, UpdateCost


@dataclass(frozen=True)
class Bound:
    compute: float = 0.0   # seconds at the peak FLOP/s
    memory: float = 0.0    # seconds at the memory bandwidth
    link: float = 0.0      # seconds on the link

    @property
    def seconds(self) -> float:
        return max(self.compute, self.memory, self.link)

    @property
    def limit(self) -> str:
        """What bounds it: compute, memory or link ("-" for nothing at all)."""
        if self.seconds == 0:
            return "-"
        return max(("compute", self.compute), ("memory", self.memory), ("link", self.link), key=lambda kv: kv[1])[0]

    def __add__(self, other: "Bound") -> "Bound":
        return Bound(self.compute + other.compute, self.memory + other.memory, self.link + other.link)


def node_bound(cost: NodeCost | UpdateCost, dev: DeviceSpec, link: LinkSpec) -> Bound:
    if isinstance(cost, NodeCost) and cost.link:
        return Bound(link=cost.link / link.bandwidth)
    precision = cost.precision if isinstance(cost, NodeCost) else "fp32"
    return Bound(compute=cost.flops / dev.peak(precision) if cost.flops else 0.0,
                 memory=cost.bytes / dev.bandwidth)


@dataclass(frozen=True)
class StepBound:
    per_device: dict[str, float]   # logical device -> seconds of its nodes' bounds (and its SGD update)
    critical_path: float           # the longest chain of dependent node bounds
    link: float                    # seconds of all cross-device copies together

    @property
    def seconds(self) -> float:
        return max(self.critical_path, *self.per_device.values())

    @property
    def limit(self) -> str:
        if self.critical_path >= max(self.per_device.values()):
            return "dependency chain"
        return "busiest device " + max(self.per_device, key=self.per_device.get)


Seconds = Callable[[NodeCost | UpdateCost], float]


@dataclass(frozen=True)
class Schedule:
    """Every node started as soon as its inputs exist (each at its bound): when each finishes."""

    finish: dict[int, float]       # id(node) -> earliest finish
    per_device: dict[str, float]   # logical device -> seconds of its nodes (copies not counted)
    last: dict[str, float]         # logical device -> when its last node can finish at the earliest
    link: float                    # seconds of all cross-device copies together


def schedule(costs: list[NodeCost], seconds: Seconds) -> Schedule:
    """The earliest schedule of `costs` (execution order), each node taking `seconds(cost)`."""
    per_device: dict[str, float] = {}
    finish: dict[int, float] = {}
    last: dict[str, float] = {}
    link_s = 0.0
    for c in costs:
        b = seconds(c)
        start = max((finish.get(id(e.node), 0.0) for e in c.node.inputs), default=0.0)
        finish[id(c.node)] = start + b
        d = c.node.device or "host"
        last[d] = max(last.get(d, 0.0), start + b)
        if c.link:
            link_s += b
        else:
            per_device[d] = per_device.get(d, 0.0) + b
    return Schedule(finish, per_device, last, link_s)


def roofline_seconds(dev: DeviceSpec, link: LinkSpec) -> Seconds:
    return lambda c: node_bound(c, dev, link).seconds


def step_bound(program: Program, costs: list[NodeCost], updates: list[UpdateCost], dev: DeviceSpec,
               link: LinkSpec, seconds: Seconds | None = None) -> StepBound:
    """The step's bound (each logical device a `dev`, joined by `link`); `costs` in execution order.
    `seconds`: each node's time (default: its roofline bound; the planner passes measured ones)."""
    seconds = seconds or roofline_seconds(dev, link)
    s = schedule(costs, seconds)
    per_device = dict(s.per_device)
    chain = max(s.finish.values(), default=0.0)
    for u in updates:   # a device's update follows its last gradient
        b = seconds(u)
        per_device[u.device] = per_device.get(u.device, 0.0) + b
        chain = max(chain, s.last.get(u.device, 0.0) + b)
    return StepBound(per_device or {"host": 0.0}, chain, s.link)
