"""Pass: device placement. Inserts an explicit `copy` node wherever an edge crosses logical devices.

Every op node already carries the logical device it runs on (from the spec's groups or `device:`).
An input produced on another device reaches it only through a copy node placed on the consumer's
device, attributed to the consumer's layer (so `alexnet.yaml` shows copies into conv3, fc6, fc7 and
fc8 and nowhere else). One copy per (value, destination): two consumers on the same device share it.
Network inputs (``data``, ``label``) have no device: the executor feeds them to every device that
reads them, as cuda-convnet loads each batch onto both GPUs.
"""
from __future__ import annotations

from ..graph import Entry, Graph, Node, make_node
from ..ops.tensor import SRC, copy_source


def place_devices(graph: Graph) -> Graph:
    copies: dict[tuple[int, int, str], Node] = {}

    def fn(node: Node, inputs: tuple[Entry, ...]) -> Node | None:
        if node.is_variable or node.op == "copy" or node.device is None:
            return node.with_(inputs=inputs) if inputs != node.inputs else None
        new_inputs = []
        for e in inputs:
            src = e.node.device
            if src is None or src == node.device:
                new_inputs.append(e)
                continue
            key = (id(e.node), e.index, node.device)
            if key not in copies:
                suffix = f"_{e.index}" if e.index else ""
                copies[key] = make_node("copy", f"{e.node.name}{suffix}_to_{node.device}", {SRC.name: src},
                                        [e], node.device, node.layer, node.mark, group=node.group)
            new_inputs.append(Entry(copies[key], 0))
        new_inputs = tuple(new_inputs)
        return node.with_(inputs=new_inputs) if new_inputs != node.inputs else None

    return graph.rewrite(fn)


def check_placement(graph: Graph) -> list[str]:
    """Edges that cross devices without a copy node (empty when the graph is correctly placed)."""
    problems = []
    for node in graph.nodes():
        if node.is_variable or node.device is None:
            continue
        for e in node.inputs:
            src = e.node.device
            if node.op == "copy":
                if src is not None and src != copy_source(node):
                    problems.append(f"{node.name}: copies from {copy_source(node)} but its input is on {src}")
            elif src is not None and src != node.device:
                problems.append(f"{node.name} on {node.device} reads {e.node.name} on {src} without a copy")
    return problems


def copy_nodes(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes() if n.op == "copy"]
