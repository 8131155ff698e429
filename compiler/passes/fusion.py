"""Passes that fold a cheap op into the op that feeds it, so a map is written and read once less.

`fuse_activations`: a standalone activation into its producer's epilogue. An op is folded when its
descriptor says it is an activation (`OpDef.activation`) and the producer's descriptor accepts it
(`OpDef.fuse_activation`: conv, fc, batch norm and add without an activation yet).

`fuse_residual_adds`: a two-input add (ResNet's ``add(bn2, shortcut)``, with the activation the
previous pass gave it) into the batch norm that feeds it: batch norm adds the other input in its
normalising pass and applies the add's activation (`BatchNorm` with ``residual``); its backward writes
the residual's gradient in the pass that reads dy anyway, where the add's activation needed a pass of
its own. The batch norm must have no activation of its own (the sum comes before any).

Either fold applies when the folded op is its producer's only consumer and on the same device; the
fused node keeps the producer's name, so parameters are unchanged. `absorbed_into` says which node
took a folded one (a layer's outputs, `keep=` names).
"""
from __future__ import annotations

from collections import Counter

from ..graph import Entry, Graph, Node
from ..ops import get_op
from ..ops.activation import ACT
from ..ops.batchnorm import RESIDUAL, has_residual


def _uses(graph: Graph) -> Counter:
    uses: Counter = Counter()
    for node in graph.nodes():
        for e in node.inputs:
            uses[(id(e.node), e.index)] += 1
    for e in graph.outputs:
        uses[(id(e.node), e.index)] += 1
    return uses


def _sole_producer(entry: Entry, orig: Entry, uses: Counter, device: str | None) -> bool:
    """`entry` (the rewritten `orig`) is an op's first output, read only here, on `device`."""
    return (not entry.node.is_variable and entry.index == 0 and uses[(id(orig.node), 0)] == 1
            and entry.node.device == device)


def fuse_activations(graph: Graph) -> Graph:
    uses = _uses(graph)

    def fn(node: Node, inputs: tuple[Entry, ...]) -> Node | None:
        if node.is_variable or not get_op(node.op).activation or len(inputs) != 1:
            return None
        if not _sole_producer(inputs[0], node.inputs[0], uses, node.device):
            return None
        return get_op(inputs[0].node.op).fuse_activation(inputs[0].node, node.op)

    return graph.rewrite(fn)


def _takes_residual(node: Node) -> bool:
    return node.op == "batchnorm" and not has_residual(node) and node.attrs.get(ACT.name, "none") == "none"


def _residual_pick(node: Node, inputs: tuple[Entry, ...], uses: Counter) -> int | None:
    """Which input of add `node` (its inputs rewritten to `inputs`) is the batch norm that takes the
    other one as its residual: the first that can, or None."""
    if node.is_variable or node.op != "add" or len(inputs) != 2:
        return None
    for k in (0, 1):
        if _takes_residual(inputs[k].node) and _sole_producer(inputs[k], node.inputs[k], uses, node.device):
            return k
    return None


def fuse_residual_adds(graph: Graph) -> Graph:
    uses = _uses(graph)

    def fn(node: Node, inputs: tuple[Entry, ...]) -> Node | None:
        k = _residual_pick(node, inputs, uses)
        if k is None:
            return None
        bn = inputs[k].node
        attrs = {**bn.attrs, RESIDUAL.name: True, ACT.name: node.attrs.get(ACT.name, "none")}
        return bn.with_(inputs=(*bn.inputs, inputs[1 - k]), attrs=attrs)

    return graph.rewrite(fn)


def absorbed_into(before: Graph, after: Graph) -> dict[str, str]:
    """For each non-variable node of `before` (the graph the passes above ran on, in order) that is
    not in `after`, the name of the node of `after` that computes its output now (followed through
    chains: relu -> add -> batch norm)."""
    kept = {n.name for n in after.nodes()}
    uses = _uses(before)
    took: dict[str, str] = {}
    for node in before.nodes():
        if node.is_variable or node.name in kept or not node.inputs:
            continue
        k = _residual_pick(node, node.inputs, uses)
        took[node.name] = node.inputs[k or 0].node.name   # the batch norm that took an add, an activation's producer
    out = {}
    for name in took:
        target, hops = took[name], 0
        while target not in kept and target in took and hops < len(took):
            target, hops = took[target], hops + 1
        out[name] = target
    return out
