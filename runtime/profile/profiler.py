"""Measure a training step layer by layer: `alexnetc profile`'s engine (Caffe's `caffe time`, per layer
and device, with the cost model beside the times).

`profile_training` binds the network for training, then alternates plain steps (forward, backward,
the SGD update; timed whole) with instrumented ones (every node timed, `timing.NodeTimer`), so both
see the same machine load; the rows' sum is compared with the plain step to show what the profile
can account for, and the difference between the instrumented and plain steps is the instrumentation's
cost. Times are means over the iterations (as Caffe's); the rows carry the cost model's FLOPs,
bytes, link bytes and memory held for the backward (`compiler/cost`) for the same nodes.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

import torch

from ...compiler import CompiledNet
from ...compiler.cost import CostRow, cost_rows, program_costs, update_costs
from ...compiler.ops.weighted import param_multipliers
from ..execution.executor import Executor
from ..execution.optim import SGD
from .peak import Peaks, peaks_for
from .timing import Iteration, NodeTimer, Span


@dataclass
class MeasuredRow:
    row: CostRow
    seconds: dict[str, float] = field(default_factory=lambda: {"forward": 0.0, "backward": 0.0})

    @property
    def total(self) -> float:
        return self.seconds["forward"] + self.seconds["backward"]


@dataclass
class Profile:
    net: CompiledNet
    rows: list[MeasuredRow]
    iterations: list[Iteration]          # the instrumented ones, every span (for --trace)
    plain_steps: list[float]             # seconds of each uninstrumented step
    instrumented_steps: list[float]
    peaks: dict[str, Peaks | None]       # logical device -> its peaks (None: unknown)
    binding: Mapping[str, torch.device]
    backend: str
    dtype: str
    node_names: dict[int, str]           # id(node) -> name, for the trace
    load: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())   # load averages before and after

    @property
    def step_s(self) -> float:
        return statistics.fmean(self.plain_steps)

    @property
    def instrumented_s(self) -> float:
        return statistics.fmean(self.instrumented_steps)

    @property
    def rows_s(self) -> float:
        return sum(r.total for r in self.rows)

    def phase_s(self, phase: str) -> float:
        return sum(r.seconds[phase] for r in self.rows)


def _time_call(fn, devices: Collection[torch.device]) -> float:
    for d in devices:
        if d.type == "cuda":
            torch.cuda.synchronize(d)
    t0 = time.perf_counter()
    fn()
    for d in devices:
        if d.type == "cuda":
            torch.cuda.synchronize(d)
    return time.perf_counter() - t0


def profile_training(net: CompiledNet, group2ctx: Mapping[str, torch.device], *, params: Mapping[str, torch.Tensor],
                     state: Mapping[str, torch.Tensor] | None = None, backend: str | None = None,
                     dtype: str = "float32", iterations: int = 20, warmup: int = 5, lr: float = 0.01,
                     expand: bool | Collection[str] = False, seed: int = 0, progress: Any = None) -> Profile:
    """Profile `iterations` training steps of `net` (at its batch size) on synthetic data after
    `warmup` steps; every node is timed in the instrumented steps, which alternate with plain ones."""
    ex = Executor(net, group2ctx, for_training=True, params=params, state=state, backend=backend, dtype=dtype)
    opt = SGD(ex.params, {n.name: param_multipliers(n) for n in ex.param_nodes})
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(net.batch, *net.input_shape, generator=gen)
    y = torch.randint(0, net.classes, (net.batch,), generator=gen)
    first = next(iter(ex.group2ctx.values()))
    x, y = x.to(first), y.to(first)
    devices = set(ex.group2ctx.values())
    timer = NodeTimer(ex)
    load_before = os.getloadavg()

    def step() -> None:
        ex.forward(x, y, is_train=True)
        ex.backward()
        opt.step(ex.grads, lr)
        ex.step_count += 1

    def instrumented() -> Iteration:
        it = Iteration()
        timer.install()
        try:
            timer.begin()
            t0 = time.perf_counter()
            ex.forward(x, y, is_train=True)
            ex.backward()
            it.update_s = _time_call(lambda: opt.step(ex.grads, lr), devices)
            ex.step_count += 1
            for d in devices:
                if d.type == "cuda":
                    torch.cuda.synchronize(d)
            it.step_s = time.perf_counter() - t0
            it.spans = timer.end()
            it.spans.append(Span(("update", None), it.step_s - it.update_s, it.update_s, "optimizer", "main"))
        finally:
            timer.remove()
        return it

    for _ in range(warmup):
        step()
        instrumented()
    plain, its = [], []
    for i in range(iterations):
        plain.append(_time_call(step, devices))
        its.append(instrumented())
        if progress is not None:
            progress(i + 1, iterations)

    program = net.training()
    costs = program_costs(program, dtype)
    layer_ops = {info.name: info.op for info in net.layers}
    rows = [MeasuredRow(r) for r in cost_rows(costs, layer_ops, update_costs(program, dtype), expand)]
    by_node: dict[int, tuple[MeasuredRow, str]] = {}
    for r in rows:
        for phase, nodes in r.row.nodes.items():
            for c in nodes:
                by_node[id(c.node)] = (r, phase)
    bucket_rows: dict[str, MeasuredRow] = {}
    update_row = next(r for r in rows if r.row.kind == "update") if any(r.row.kind == "update" for r in rows) else None
    n = len(its)
    for it in its:
        for span in it.spans:
            if isinstance(span.key, int):
                r, phase = by_node[span.key]
                r.seconds[phase] += span.seconds / n
            elif span.key[0] == "buckets":
                if span.key[1] not in bucket_rows:
                    bucket_rows[span.key[1]] = MeasuredRow(CostRow("gradient buckets", "buckets", "grad copy", span.key[1]))
                bucket_rows[span.key[1]].seconds["backward"] += span.seconds / n
            elif span.key[0] == "update" and update_row is not None:
                update_row.seconds["backward"] += span.seconds / n
    # One SGD update runs for every device at once: its rows share the measured time by parameter bytes.
    updates = [r for r in rows if r.row.kind == "update"]
    if len(updates) > 1:
        total = update_row.seconds["backward"]
        weight = sum(r.row.bytes["backward"] for r in updates) or 1
        for r in updates:
            r.seconds["backward"] = total * r.row.bytes["backward"] / weight
    rows = [r for r in rows if r.row.kind != "update"] + list(bucket_rows.values()) + updates
    by_real = {dev: peaks_for(dev, dtype) for dev in set(ex.group2ctx.values())}
    peaks = {logical: by_real[dev] for logical, dev in ex.group2ctx.items()}
    names = {id(n): n.name for n in program.graph.nodes()}
    return Profile(net, rows, its, plain, [it.step_s for it in its], peaks, dict(ex.group2ctx),
                   ex.backend_name or _backend_name(ex), dtype, names, (load_before, os.getloadavg()))


def _backend_name(ex: Executor) -> str:
    from ...kernels.backend import get_backend

    return ", ".join(sorted({get_backend(d, ex.backend_name).name for d in ex.group2ctx.values()}))
