"""A placement's figures, exactly: the placed spec compiled, its memory plan and the cost model's bound.

What `alexnetc place` prints for every row comes from here, from the compiled placement and nothing
else: memory per device is the memory plan's (`alexnetc compile` prints the same), plus the SGD
momentum the memory plan does not hold (one more copy of the parameters in the master dtype); bytes
over the link are the copy nodes' (`NodeCost.link`); the step is `cost.allreduce.data_parallel_bound`
(the roofline's step bound, with the gradient all-reduce when there are several processes).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..cost import DataParallelBound, DeviceSpec, LinkSpec, data_parallel_bound, program_costs, update_costs
from ..cost.roofline import Seconds
from ..passes.memory_plan import DTYPE_BYTES
from ..pipeline import CompiledNet
from ..program import master_dtype
from .spec_edits import Placement


@dataclass
class Evaluation:
    label: str                    # what the table calls it
    kind: str                     # "search", "as written", "shipped", "one device", "data parallel"
    net: CompiledNet              # the placed net at one replica's batch
    replicas: int
    bound: DataParallelBound
    memory: dict[str, int]        # logical device -> the memory plan's bytes (activations, gradients, parameters)
    momentum: dict[str, int]      # logical device -> SGD momentum bytes
    link: int                     # bytes copied between devices per replica and step
    placement: Placement | None = None
    source: str | None = None     # the spec file of a shipped or as-written placement

    @property
    def seconds(self) -> float:
        return self.bound.seconds

    @property
    def devices(self) -> list[str]:
        return sorted(self.memory)

    def need(self, device: str) -> int:
        return self.memory[device] + self.momentum.get(device, 0)

    @property
    def fullest(self) -> int:
        return max(self.need(d) for d in self.memory)

    def fits(self, limit: float) -> bool:
        return self.fullest <= limit

    @property
    def allreduce_bytes(self) -> int:
        return self.bound.bytes_sent

    @property
    def total_devices(self) -> int:
        return len(self.memory) * self.replicas

    def key(self) -> tuple[float, int, int]:
        """How rows rank: predicted step, then bytes over links, then devices used."""
        return (self.seconds, self.link + self.allreduce_bytes, self.total_devices)


def evaluate(label: str, kind: str, net: CompiledNet, dev: DeviceSpec, link: LinkSpec, dtype: str,
             replicas: int = 1, seconds: Seconds | None = None, placement: Placement | None = None,
             source: str | None = None) -> Evaluation:
    """`net` (placed, at one replica's batch) trained by `replicas` processes on devices `dev`."""
    program = net.with_dtype(dtype).training()
    costs = program_costs(program, dtype)
    updates = update_costs(program, dtype)
    bound = data_parallel_bound(program, costs, updates, dev, link, replicas, dtype, seconds=seconds)
    memory = {d: m.peak_activation_bytes + m.param_bytes for d, m in program.memory.devices.items()}
    size = DTYPE_BYTES[master_dtype(dtype)]
    momentum = {u.device: u.params * size for u in updates}
    return Evaluation(label, kind, net, replicas, bound, memory, momentum, sum(c.link for c in costs), placement, source)
