"""Pass: fold a standalone activation into the op that feeds it (bias + activation epilogue).

An op is folded when its descriptor says it is an activation (`OpDef.activation`) and the producer's
descriptor accepts it (`OpDef.fuse_activation`: conv, fc, batch norm and add without an activation
yet). It applies when
the activation is the producer's only consumer, on the same device; the fused node keeps the
producer's name, so parameters are unchanged.
"""
from __future__ import annotations

from collections import Counter

from ..graph import Entry, Graph, Node
from ..ops import get_op


def fuse_activations(graph: Graph) -> Graph:
    uses: Counter = Counter()
    for node in graph.nodes():
        for e in node.inputs:
            uses[(id(e.node), e.index)] += 1
    for e in graph.outputs:
        uses[(id(e.node), e.index)] += 1

    def fn(node: Node, inputs: tuple[Entry, ...]) -> Node | None:
        if node.is_variable or not get_op(node.op).activation or len(inputs) != 1:
            return None
        src, orig = inputs[0].node, node.inputs[0].node
        if src.is_variable or inputs[0].index != 0 or uses[(id(orig), 0)] != 1 or src.device != node.device:
            return None
        return get_op(src.op).fuse_activation(src, node.op)

    return graph.rewrite(fn)
