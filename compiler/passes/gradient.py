"""Pass: reverse-mode gradient over the symbolic graph (MXNet's Gradient pass).

Walks the forward graph backwards from the loss, asks each op's `gradient` rule (compiler/ops) for
backward nodes, sums gradients that reach a value along several paths with `add_n`, and returns a
`Program` whose graph's outputs are the forward outputs followed by one gradient per learnable
parameter, last layer first (`Program.grad_of` names them). The heads it seeds are the ops whose descriptor has
``role == "loss"``, each with its weight in the total loss (the op's own `gradient` rule). Backward
nodes run on their forward node's device; a copy's gradient is a copy back, so every parameter's
gradient is computed on its parameter's device. Only values that
depend on a parameter get gradients (no gradient is computed for the input images).
"""
from __future__ import annotations

from collections import defaultdict

from ..graph import Entry, Graph, make_node
from ..ops import get_op
from ..program import Program
from .infer_shape import infer_shapes


def _is_loss(node) -> bool:
    return not node.is_variable and get_op(node.op).role == "loss"


def gradient(graph: Graph) -> Program:
    nodes = graph.nodes()
    if any(n.shapes is None for n in nodes):
        raise ValueError("gradient() needs a shape-annotated graph: run infer_shapes first")
    losses = [n for n in nodes if _is_loss(n)]
    if not losses:
        raise ValueError("gradient() needs a loss node, found none")

    depends: dict[int, bool] = {}
    for n in nodes:
        depends[id(n)] = n.is_param or any(depends[id(e.node)] for e in n.inputs)

    grads: dict[tuple[int, int], list[Entry]] = defaultdict(list)

    def summed(node, index) -> Entry | None:
        parts = grads.get((id(node), index))
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        suffix = f"_{index}" if index else ""
        return Entry(make_node("add_n", f"{node.name}{suffix}_grad_sum", {}, parts, node.device, node.layer,
                               node.mark, group=node.group))

    for node in reversed(nodes):
        if node.is_variable or not depends[id(node)]:
            continue
        op = get_op(node.op)
        ograds = [summed(node, i) for i in range(op.visible)]
        if not _is_loss(node) and all(g is None for g in ograds):
            continue
        in_grads = op.gradient(node, ograds)
        for e, g in zip(node.inputs, in_grads):
            if g is not None and depends[id(e.node)]:
                grads[(id(e.node), e.index)].append(g)

    params = [n for n in nodes if n.is_param]
    outs, names = list(graph.outputs), []
    # Last layer first: the graph's (DFS) node order then computes each layer's parameter gradients as
    # soon as that layer's output gradient exists (fc8's first, conv1's last), so data parallelism can
    # all-reduce them while the rest of the backward pass runs.
    for p in reversed(params):
        g = summed(p, 0)
        if g is None:
            continue
        outs.append(g)
        names.append(p.name)
    known = {n.name: n.shapes[0] for n in nodes if n.is_variable and not n.is_param}
    full = infer_shapes(Graph(tuple(outs), dict(graph.attrs)), **known)
    return Program(full, len(graph.outputs), tuple(names))
