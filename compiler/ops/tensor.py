"""Data-movement ops: flatten, reshape, concat and slice along axis 1, add_n, and the cross-device copy.

Flatten lowers each part of its input on the part's device (`flatten_value`, which fc and the loss
call for their inputs too); concat lowers to no node at all, its inputs' parts side by side (the
consumer gathers the channels it reads). Nothing is computed, so one implementation serves every backend (``kernels/tensor.py``,
`Kernel(all_backends=True)`). `copy` is the only op that moves data between devices (MXNet's
_CrossDeviceCopy): its node runs on the destination device and its `src` attribute names the source;
the placement pass inserts it, the executor runs it itself (it owns the streams), and the gradient of a
copy is a copy back.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import ShapeError
from ..graph import Entry, Node
from .attrs import Attr
from .registry import EagerContext, Kernel, OpDef, SameShape, backward_node, need, numel, register

if TYPE_CHECKING:
    from ..lower import Lowerer, Value
    from ..onnx_export import OnnxBuilder

SHAPE = Attr("sample_shape", spec=False)       # reshape: the per-sample shape
BEGIN = Attr("begin", spec=False)              # slice: channels [begin, end)
END = Attr("end", spec=False)
CHANNELS = Attr("in_channels", spec=False)     # slice_backward: the sliced input's channel count
SRC = Attr("src", spec=False)                  # copy: the source device


class _Reshaping(OpDef):
    """A reshape keeping the batch dimension; its gradient reshapes back to the input's shape."""

    def traffic(self, attrs, in_bytes, out_bytes):
        return 0, 0   # a view: nothing moves

    def input_grad(self, node, dy):
        x = node.inputs[0]
        return backward_node("reshape", node, "bwd", [dy], {SHAPE.name: tuple(x.shape[1:]) if x.shape else None})


@register
class Flatten(_Reshaping):
    name = "flatten"
    doc = "(N, C, H, W) -> (N, C*H*W)."
    in_spec = True
    kernel = Kernel("flatten", all_backends=True)

    def lower(self, lw: "Lowerer", layer: Mapping[str, Any], inputs: Sequence["Value"]) -> "Value":
        return flatten_value(lw, inputs[0], layer, layer["name"])

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, "data")
        return [x], [(x[0], math.prod(x[1:]))]

    def eager(self, node, xs, ctx):
        return [xs[0].reshape(xs[0].shape[0], -1)]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        b.emit("Flatten", [b.x(node)], [b.y(node)], axis=1)


def flatten_value(lw: "Lowerer", value: "Value", layer: Mapping[str, Any], name: str) -> "Value":
    """Flatten's lowering, also the input step of fc and the loss: each part of `value` flattened to
    (features,) on its device; a value that is already flat is returned as is."""
    from ..lower import Part, Value

    if len(value.shape) == 1:
        return value
    c = value.shape[0]
    per = math.prod(value.shape[1:])
    parts = []
    for k, part in enumerate(value.parts):
        nm = name if len(value.parts) == 1 else f"{name}_g{k}"
        node = lw.node(Flatten.name, [part.entry], name=nm, device=part.device or lw.devices[0], layer=layer,
                       group=part.group)
        parts.append(Part(Entry(node, 0), node.device, part.lo * per, part.hi * per, part.groups, part.group))
    return Value((c * per,), parts)


@register
class Reshape(_Reshaping):
    name = "reshape"
    attrs = (SHAPE,)
    kernel = Kernel("reshape", all_backends=True)

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, "data")
        shape = tuple(attrs[SHAPE.name])
        if math.prod(shape) != math.prod(x[1:]):
            raise ShapeError(f"cannot reshape {x[1:]} to {shape}")
        return [x], [(x[0], *shape)]

    def kernel_args(self, node):
        return {"shape": tuple(node.attrs[SHAPE.name])}

    def eager(self, node, xs, ctx):
        return [xs[0].reshape(xs[0].shape[0], *node.attrs[SHAPE.name])]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        shape = b.ints(f"{node.name}_shape", [0, *node.attrs[SHAPE.name]])   # 0: keep the batch dimension
        b.emit("Reshape", [b.x(node), shape], [b.y(node)])


@register
class Concat(OpDef):
    """Join inputs along axis 1 (channels or features)."""

    name = "concat"
    doc = "Join the inputs along the channel (or feature) axis; they must agree on every other axis."
    in_spec = True
    inputs = (2, None)
    arguments = None
    kernel = Kernel("concat", all_backends=True)

    def lower(self, lw: "Lowerer", layer: Mapping[str, Any], inputs: Sequence["Value"]) -> "Value":
        """The inputs' parts side by side along the channel axis (no node: consumers gather)."""
        from ..lower import Part, Value

        first = inputs[0]
        parts, offset = [], 0
        for v in inputs:
            if v.shape[1:] != first.shape[1:] or len(v.shape) != len(first.shape):
                raise ShapeError(f"concat inputs differ outside the channel axis: {first.shape} vs {v.shape}",
                                 key="inputs")
            parts += [Part(p.entry, p.device, p.lo + offset, p.hi + offset, p.groups, p.group) for p in v.parts]
            offset += v.shape[0]
        return Value((offset, *first.shape[1:]), parts)

    def infer(self, attrs, in_shapes):
        shapes = [need(in_shapes, i, f"input {i}") for i in range(len(in_shapes))]
        first = shapes[0]
        for s in shapes[1:]:
            if len(s) != len(first) or s[0] != first[0] or s[2:] != first[2:]:
                raise ShapeError(f"concat inputs differ outside the channel axis: {first} vs {s}", key="inputs")
        return shapes, [(first[0], sum(s[1] for s in shapes), *first[2:])]

    def gradient(self, node, ograds):
        dy = ograds[0]
        if dy is None:
            return [None] * len(node.inputs)
        grads, start = [], 0
        for i, e in enumerate(node.inputs):
            end = start + e.shape[1]
            grads.append(backward_node("slice", node, f"bwd{i}", [dy], {BEGIN.name: start, END.name: end}))
            start = end
        return grads

    def eager(self, node, xs, ctx):
        import torch

        return [torch.cat(list(xs), 1)]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        b.emit("Concat", [b.x(node, i) for i in range(len(node.inputs))], [b.y(node)], axis=1)


@register
class Slice(OpDef):
    """Channels [begin, end) of the input (axis 1)."""

    name = "slice"
    attrs = (BEGIN, END)
    kernel = Kernel("slice", all_backends=True)

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, "data")
        b, e = int(attrs[BEGIN.name]), int(attrs[END.name])
        if not 0 <= b < e <= x[1]:
            raise ShapeError(f"slice [{b}, {e}) is outside the {x[1]} channels of the input")
        return [x], [(x[0], e - b, *x[2:])]

    def traffic(self, attrs, in_bytes, out_bytes):
        return 0, 0   # a view: nothing moves

    def input_grad(self, node, dy):
        x = node.inputs[0]
        return backward_node("slice_backward", node, "bwd", [dy],
                             {BEGIN.name: node.attrs[BEGIN.name], CHANNELS.name: x.shape[1] if x.shape else None})

    def kernel_args(self, node):
        return {BEGIN.name: int(node.attrs[BEGIN.name]), END.name: int(node.attrs[END.name])}

    def eager(self, node, xs, ctx):
        return [xs[0][:, node.attrs[BEGIN.name]:node.attrs[END.name]]]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        bounds = [b.ints(f"{node.name}_{what}", [int(node.attrs[a.name])]) for what, a in (("from", BEGIN), ("to", END))]
        b.emit("Slice", [b.x(node), *bounds, b.ints(f"{node.name}_axes", [1])], [b.y(node)])


@register
class SliceBackward(OpDef):
    """Zeros of the sliced input's shape with the gradient placed at channels [begin, begin + C)."""

    name = "slice_backward"
    attrs = (BEGIN, CHANNELS)
    arguments = ("grad",)
    kernel = Kernel("slice_backward", all_backends=True)

    def infer(self, attrs, in_shapes):
        dy = need(in_shapes, 0, "grad")
        return [dy], [(dy[0], int(attrs[CHANNELS.name]), *dy[2:])]

    def kernel_args(self, node):
        return {BEGIN.name: int(node.attrs[BEGIN.name]), "channels": int(node.attrs[CHANNELS.name])}


@register
class AddN(OpDef):
    """Sum of same-shaped inputs: accumulates a gradient that reaches an output along several paths."""

    name = "add_n"
    arguments = None
    kernel = Kernel("add_n", all_backends=True)

    def infer(self, attrs, in_shapes):
        shapes = [need(in_shapes, i, f"input {i}") for i in range(len(in_shapes))]
        if any(s != shapes[0] for s in shapes):
            raise ShapeError(f"add_n inputs differ in shape: {shapes}")
        return shapes, [shapes[0]]

    def flops(self, attrs, in_shapes, out_shapes):
        return (len(in_shapes) - 1) * numel(out_shapes[0])

    def eager(self, node, xs, ctx):
        return [sum(xs[1:], xs[0])]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        b.emit("Sum", [b.x(node, i) for i in range(len(node.inputs))], [b.y(node)])


@register
class Copy(SameShape):
    """Cross-device copy: runs on (and its output lives on) the destination device. No kernel: the
    executor runs it, since it owns the devices and their streams."""

    name = "copy"
    attrs = (SRC,)
    transfers = True   # read on the source device, written on this one: the bytes cross a link

    def input_grad(self, node, dy):
        return backward_node("copy", node, "bwd", [dy], {SRC.name: node.device}, device=node.attrs[SRC.name])

    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        return [xs[0]]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        b.emit("Identity", [b.x(node)], [b.y(node)])   # one device in ONNX: nothing moves


def copy_source(node: Node) -> str:
    """The logical device a copy node reads from."""
    return node.attrs[SRC.name]
