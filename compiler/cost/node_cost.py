"""Cost of every node of a program: FLOPs, bytes read and written, the precision that bounds its
arithmetic, bytes crossing a device link, and bytes held for the backward pass.

Everything comes from the op descriptors (`OpDef.flops`, `OpDef.traffic`, `OpDef.math_precision`,
`OpDef.transfers`) and the one dtype rule of the memory plan (`memory_plan.value_dtype`): nothing
here knows an op by name. The profiler (measured time per node), `alexnetc profile --predict` (a
roofline bound per node) and the placement planner read these same records.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..graph import Entry, Node, topo_order
from ..ops import get_op
from ..passes.memory_plan import DTYPE_BYTES, value_dtype
from ..program import Program, master_dtype


@dataclass(frozen=True)
class NodeCost:
    """One op node's cost at the program's batch size."""

    node: Node
    phase: str           # "forward" or "backward"
    flops: int
    read: int            # bytes, every input once
    written: int         # bytes, every output once
    precision: str       # the peak column its FLOPs run at (devices.DeviceSpec.peaks)
    link: int            # bytes sent across a device link (cross-device copies), else 0
    kept: int            # bytes of its outputs that a backward node reads (held from forward to backward)

    @property
    def bytes(self) -> int:
        return self.read + self.written


def entry_bytes(e: Entry, dtype: str) -> int:
    return math.prod(e.node.shapes[e.index]) * DTYPE_BYTES[value_dtype(e.node, e.index, dtype)]


def program_costs(program: Program, dtype: str = "float32") -> list[NodeCost]:
    """A NodeCost per op node of `program` (shapes inferred), in execution order; `dtype` is the
    run's train dtype (the values between ops)."""
    nodes = program.graph.nodes()
    if any(n.shapes is None for n in nodes):
        raise ValueError("program_costs() needs a shape-annotated graph")
    forward = {id(n) for n in topo_order(program.forward_heads)}
    read_by_backward: set[tuple[int, int]] = set()
    for n in nodes:
        if id(n) not in forward:
            read_by_backward.update((id(e.node), e.index) for e in n.inputs)
    out = []
    for n in nodes:
        if n.is_variable:
            continue
        op = get_op(n.op)
        ins = [entry_bytes(e, dtype) for e in n.inputs]
        outs = [entry_bytes(Entry(n, k), dtype) for k in range(len(n.shapes))]
        read, written = op.traffic(n.attrs, ins, outs)
        in_forward = id(n) in forward
        kept = sum(b for k, b in enumerate(outs) if in_forward and (id(n), k) in read_by_backward)
        out.append(NodeCost(n, "forward" if in_forward else "backward",
                            op.flops(n.attrs, [e.shape for e in n.inputs], n.shapes), read, written,
                            op.math_precision(dtype), sum(outs) if op.transfers else 0, kept))
    return out


@dataclass(frozen=True)
class UpdateCost:
    """The SGD update of the parameters on one logical device (optim.SGD): per parameter it reads
    w, v and the gradient and writes w and v, all in the master dtype; 6 FLOPs (v*m, two multiply-adds,
    w + v)."""

    device: str
    params: int
    flops: int
    read: int
    written: int

    @property
    def bytes(self) -> int:
        return self.read + self.written


def update_costs(program: Program, dtype: str = "float32") -> list[UpdateCost]:
    size = DTYPE_BYTES[master_dtype(dtype)]
    params = {n.name: n for n in program.graph.params()}
    per_device: dict[str, int] = {}
    for name in program.grad_of:
        p = params[name]
        per_device[p.device or "host"] = per_device.get(p.device or "host", 0) + math.prod(p.shapes[0])
    return [UpdateCost(d, n, 6 * n, 3 * n * size, 2 * n * size) for d, n in sorted(per_device.items())]
