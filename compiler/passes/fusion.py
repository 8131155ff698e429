"""Pass: fuse a standalone activation into the conv or fc that feeds it (bias + activation epilogue).

Applies when the activation is the producer's only consumer, on the same device, and the producer has
no activation yet; the fused node keeps the producer's name, so parameters are unchanged.
"""
from __future__ import annotations

from collections import Counter

from ..graph import Entry, Graph, Node

FUSABLE = ("relu", "tanh", "sigmoid")


def fuse_activations(graph: Graph) -> Graph:
    uses: Counter = Counter()
    for node in graph.nodes():
        for e in node.inputs:
            uses[(id(e.node), e.index)] += 1
    for e in graph.outputs:
        uses[(id(e.node), e.index)] += 1

    def fn(node: Node, inputs: tuple[Entry, ...]) -> Node | None:
        if node.op in FUSABLE and len(inputs) == 1:
            src = inputs[0].node
            orig = node.inputs[0].node
            if (src.op in ("conv", "fc") and src.attrs.get("act", "none") == "none"
                    and uses[(id(orig), 0)] == 1 and src.device == node.device):
                return src.with_(attrs={**src.attrs, "act": node.op})
        return None

    return graph.rewrite(fn)
