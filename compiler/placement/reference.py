"""A reference placement: the network compiled once with every unit's tower on a device of its own, so
that any placement of the search is this graph with its devices renamed.

In the reference of width m every unit runs as `Unit.tower_count(m)` towers, tower j of unit u on
its own logical device ``u<u>t<j>``; so every edge between units, and between towers, is a copy
node whose bytes the compiler counted. A stage of the search puts a run of units on one device (all
their towers' devices become that one) or on m devices (tower j on the stage's j-th device): each
node then runs on the device its reference device is renamed to, and a copy between two reference
devices renamed to the same device disappears. Nodes keep their costs (`compiler/cost`), at any batch
size (`cost.batch`: the reference is compiled at batches 1 and 2), and values keep their place in the
execution order, which is what the memory of a stage is worked out from (`stages.py`).

Renaming is exact for copies, FLOPs and bytes of every node that exists in both graphs; where a
stage puts a unit's towers on one device, the compiled placement merges them into one node (a grouped
convolution) and drops the slices and concatenations between them: the reference's figures are then
a close upper estimate, and the planner compiles the placements it reports (`evaluate.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..cost import NodeCost, UpdateCost, affine, cost_at_batch, program_costs, update_costs
from ..cost.node_cost import entry_bytes
from ..cost.roofline import Seconds, schedule
from ..graph import Entry
from ..ops.tensor import copy_source
from ..passes.infer_shape import infer_shapes
from ..passes.memory_plan import DTYPE_BYTES
from ..pipeline import CompiledNet, compile_loaded
from ..program import Program, master_dtype
from ..source import SpecMap
from .spec_edits import Placement, placed_spec
from .units import Unit

Where = tuple[int, int]     # (unit, tower)


def ref_device(unit: int, tower: int) -> str:
    return f"u{unit}t{tower}"


@dataclass(frozen=True)
class Copy:
    step: int
    src: Where
    dst: Where
    key: tuple[int, int]      # what it copies: (step of the producing node, output index)
    phase: str
    cost1: NodeCost
    cost2: NodeCost
    last_use: int             # the last step reading the copy (on `dst`)


@dataclass(frozen=True)
class Value:
    """An op node's output (copies are `Copy`): where it lives and until when its own device reads it."""

    step: int
    where: Where
    bytes1: int
    bytes2: int
    end: int                  # last step reading it on its own device (its own step when none does)
    copies: tuple[int, ...]   # the copies reading it (indices into Reference.copies)


@dataclass
class AtBatch:
    """The reference's figures at one batch size, with one way of timing nodes."""

    batch: int
    forward: list[list[float]]       # [unit][tower] seconds of its forward nodes (copies not included)
    backward: list[list[float]]
    copy_bytes: list[int]            # per copy
    copy_seconds: list[float]
    value_bytes: list[int]           # per value
    chain: float                     # the longest dependency chain, every copy free (it depends on no placement)
    forward_chain: float             # the same through the forward pass only


@dataclass
class Reference:
    m: int
    units: list[Unit]
    towers: list[int]                       # per unit: its tower count in this reference
    net: CompiledNet                        # at batch 1
    steps: int                              # nodes in the execution order
    ordered: list[tuple[NodeCost, NodeCost]]         # every op node's cost at batch 1 and 2, in execution order
    nodes: list[tuple[Where, NodeCost, NodeCost]]    # op nodes that are not copies
    copies: list[Copy]
    values: list[Value]
    values_of: list[list[int]]              # per unit: its values
    copies_into: list[list[int]]            # per unit: the copies whose destination is one of its towers
    params: dict[Where, int]                # bytes the memory plan counts (parameters, their compute copy, state)
    momentum: dict[Where, int]              # SGD momentum (one more copy of the parameters, master dtype)
    updates: dict[Where, UpdateCost]
    _cache: dict = field(default_factory=dict, repr=False)

    def at(self, batch: int, seconds: Seconds, key: object = None) -> AtBatch:
        """The figures at `batch`, each node timed by `seconds` (cached under `key`)."""
        k = (batch, key)
        if k in self._cache:
            return self._cache[k]
        fwd = [[0.0] * t for t in self.towers]
        bwd = [[0.0] * t for t in self.towers]
        for (u, t), c1, c2 in self.nodes:
            s = seconds(cost_at_batch(c1, c2, batch))
            (fwd if c1.phase == "forward" else bwd)[u][t] += s
        cb = [affine(c.cost1.link, c.cost2.link, batch) for c in self.copies]
        cs = [seconds(cost_at_batch(c.cost1, c.cost2, batch)) for c in self.copies]
        vb = [affine(v.bytes1, v.bytes2, batch) for v in self.values]
        finish = schedule([cost_at_batch(c1, c2, batch) for c1, c2 in self.ordered],
                          lambda c: 0.0 if c.link else seconds(c)).finish
        chain = max(finish.values(), default=0.0)
        forward = max((finish[id(c1.node)] for c1, _ in self.ordered if c1.phase == "forward"), default=0.0)
        out = self._cache[k] = AtBatch(batch, fwd, bwd, cb, cs, vb, chain, forward)
        return out


def build_reference(spec: SpecMap, source: str, units: list[Unit], m: int, dtype: str) -> Reference:
    """Compile the reference of width `m` of the expanded `spec` (at batches 1 and 2)."""
    towers = [u.tower_count(m) for u in units]
    names = tuple(ref_device(u, t) for u, n in enumerate(towers) for t in range(n))
    where = {ref_device(u, t): (u, t) for u, n in enumerate(towers) for t in range(n)}
    placement = Placement(names, tuple(tuple(ref_device(u, t) for t in range(n)) for u, n in enumerate(towers)))
    net = compile_loaded(placed_spec(spec, units, placement), source, 1).with_dtype(dtype)
    p1 = net.training()
    # the same graph at batch 2: shapes inferred again, no second gradient pass or memory plan
    c, h, w = net.input_shape
    p2 = Program(infer_shapes(p1.graph, data=(2, c, h, w), label=(2,)), p1.forward_outputs, p1.grad_of)
    costs1, costs2 = program_costs(p1, dtype), program_costs(p2, dtype)
    graph_nodes, nodes2 = p1.graph.nodes(), p2.graph.nodes()
    if len(graph_nodes) != len(nodes2) or any(a.name != b.name for a, b in zip(graph_nodes, nodes2)):
        raise AssertionError("the reference's graph differs between batch 1 and 2")
    step = {id(n): i for i, n in enumerate(graph_nodes)}
    same = {id(a): b for a, b in zip(graph_nodes, nodes2)}
    last = len(graph_nodes)
    keep = {(id(e.node), e.index) for e in p1.graph.outputs}
    readers: dict[tuple[int, int], list] = {}
    for n in graph_nodes:
        for e in n.inputs:
            readers.setdefault((id(e.node), e.index), []).append(n)

    def last_use(node, k: int) -> int:
        if (id(node), k) in keep:
            return last
        return max((step[id(r)] for r in readers.get((id(node), k), ()) if r.op != "copy"), default=step[id(node)])

    copies: list[Copy] = []
    copy_index: dict[int, int] = {}
    cost2_of = {id(c.node): c for c in costs2}
    nodes = []
    for c1 in costs1:
        n = c1.node
        c2 = cost2_of[id(same[id(n)])]
        if n.op == "copy":
            src = n.inputs[0]
            copy_index[id(n)] = len(copies)
            copies.append(Copy(step[id(n)], where[copy_source(n)], where[n.device], (step[id(src.node)], src.index),
                               c1.phase, c1, c2, last_use(n, 0)))
        else:
            nodes.append((where[n.device], c1, c2))
    values, values_of = [], [[] for _ in units]
    for c1 in costs1:
        n = c1.node
        if n.op == "copy":
            continue
        n2 = same[id(n)]
        for k in range(len(n.shapes)):
            reading = tuple(copy_index[id(r)] for r in readers.get((id(n), k), ()) if r.op == "copy")
            v = Value(step[id(n)], where[n.device], entry_bytes(Entry(n, k), dtype), entry_bytes(Entry(n2, k), dtype),
                      last_use(n, k), reading)
            values_of[v.where[0]].append(len(values))
            values.append(v)
    copies_into = [[] for _ in units]
    for i, c in enumerate(copies):
        copies_into[c.dst[0]].append(i)
    master = DTYPE_BYTES[master_dtype(dtype)]
    plan = p1.memory.devices
    updates = {where[u.device]: u for u in update_costs(p1, dtype)}
    return Reference(m, units, towers, net, last, list(zip(costs1, (cost2_of[id(same[id(c.node)])] for c in costs1))),
                     nodes, copies, values, values_of, copies_into,
                     {where[d]: plan[d].param_bytes for d in plan if d in where},
                     {w: u.params * master for w, u in updates.items()}, updates)
