"""`alexnetc profile --predict DEVICE`: a training step's roofline table without running it.

Each row (a layer on a device, a copy, an SGD update) gets the sum of its nodes' bounds
(`roofline.node_bound`) forward and backward, with what limits most of it (compute, memory or the
link) and its arithmetic intensity; the step gets `roofline.step_bound`, the memory plan's peak per
device against the device's memory, and the images/s the bound allows. Pure Python: it needs neither
torch nor a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection

from ..pipeline import CompiledNet
from .devices import DeviceSpec, LinkSpec
from .node_cost import program_costs, update_costs
from .roofline import Bound, StepBound, node_bound, step_bound
from .rows import CostRow, cost_rows


@dataclass
class PredictedRow:
    row: CostRow
    bounds: dict[str, Bound] = field(default_factory=lambda: {"forward": Bound(), "backward": Bound()})

    @property
    def seconds(self) -> float:
        return self.bounds["forward"].seconds + self.bounds["backward"].seconds

    @property
    def limit(self) -> str:
        return (self.bounds["forward"] + self.bounds["backward"]).limit

    @property
    def intensity(self) -> float | None:
        b = self.row.bytes["forward"] + self.row.bytes["backward"]
        f = self.row.flops["forward"] + self.row.flops["backward"]
        return f / b if b and f else None


@dataclass
class Prediction:
    net: CompiledNet
    device: DeviceSpec
    link: LinkSpec
    dtype: str
    rows: list[PredictedRow]
    step: StepBound
    memory: dict[str, int]            # logical device -> planned bytes (activations + parameters)

    @property
    def images_per_second(self) -> float:
        return self.net.batch / self.step.seconds if self.step.seconds else float("inf")


def predict(net: CompiledNet, dev: DeviceSpec, link: LinkSpec, dtype: str = "float32",
            expand: bool | Collection[str] = False) -> Prediction:
    """The roofline prediction of `net`'s training step at its batch size, each logical device a `dev`."""
    if dtype == "float64":
        raise ValueError("float64 runs on the CPU reference kernels only; predict float32 or bfloat16")
    program = net.with_dtype(dtype).training()
    costs = program_costs(program, dtype)
    updates = update_costs(program, dtype)
    layer_ops = {info.name: info.op for info in net.layers}
    rows = []
    for r in cost_rows(costs, layer_ops, updates, expand):
        p = PredictedRow(r)
        for phase, nodes in r.nodes.items():
            for c in nodes:
                p.bounds[phase] = p.bounds[phase] + node_bound(c, dev, link)
        rows.append(p)
    by_device = {u.device: u for u in updates}
    for p in rows:
        if p.row.kind == "update":
            p.bounds["backward"] = node_bound(by_device[p.row.device], dev, link)
    mem = {d: m.peak_activation_bytes + m.param_bytes for d, m in program.memory.devices.items()}
    return Prediction(net, dev, link, dtype, rows, step_bound(program, costs, updates, dev, link), mem)
