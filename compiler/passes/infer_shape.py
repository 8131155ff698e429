"""Pass: shape inference. Annotates every node with its output shapes and fills in parameter shapes.

Variables get their shape from the caller (``data=(N, C, H, W)``), from their own ``shape`` attribute,
or from the op that consumes them (weights and biases). A failure raises `ShapeError` naming the node,
its spec layer and that layer's file:line:col.
"""
from __future__ import annotations

from ..errors import ShapeError
from ..graph import Graph, Shape
from ..ops import get_op


def infer_shapes(graph: Graph, **known: Shape) -> Graph:
    shapes: dict[int, tuple[Shape, ...] | None] = {}
    for node in graph.nodes():
        if node.is_variable:
            given = known.get(node.name, node.attrs.get("shape"))
            shapes[id(node)] = (tuple(given),) if given is not None else None
            continue
        op = get_op(node.op)
        in_shapes = [shapes[id(e.node)][e.index] if shapes.get(id(e.node)) else None for e in node.inputs]
        try:
            full_in, outs = op.infer(node.attrs, in_shapes)
        except ShapeError as exc:
            raise ShapeError(exc.reason, node_name=node.name, layer=node.layer, mark=node.mark) from None
        for e, s in zip(node.inputs, full_in):
            if not e.node.is_variable:
                continue
            prev = shapes.get(id(e.node))
            if prev is None:
                shapes[id(e.node)] = (tuple(s),)
            elif tuple(prev[0]) != tuple(s):
                raise ShapeError(f"variable '{e.node.name}' has shape {prev[0]} but {node.op} needs {tuple(s)}",
                                 node_name=node.name, layer=node.layer, mark=node.mark)
        shapes[id(node)] = tuple(tuple(s) for s in outs)
    missing = [n.name for n in graph.nodes() if shapes.get(id(n)) is None]
    if missing:
        raise ShapeError(f"cannot infer the shape of {', '.join(missing)}: give it, e.g. "
                         f"infer_shape({missing[0]}=(...))")
    return graph.rewrite(lambda node, inputs: node.with_(inputs=inputs, shapes=shapes[id(node)]))
