"""Elementwise ops over several inputs: `add`, the sum of same-shaped layers (ResNet's shortcut).

The inputs must have equal shapes: a mismatch is an error at the layer's ``inputs`` naming both shapes
(Darknet's ``[shortcut]`` silently adds the channels two maps share; we refuse and suggest the 1x1
projection that makes them equal). Its lowering gathers each input whole onto the add's device (its
``device``, else the device of its first input), so inputs from other devices arrive through the
placement pass's copy nodes, and the gradient pass's copy-back puts each input's gradient on the
device that input lives on (MXNet's elemwise_add lost it across devices under group2ctx). The
gradient is an identity fan-out: every input receives dy itself (after the fused activation's
backward, when there is one), no backward kernel.

A ResNet block's ``relu`` after its add is folded into the add by the fusion pass (one pass over the
map instead of two), or written on the layer itself (``act: relu``). Unlike conv and fc, an add does not
take the spec's ``defaults: act``: a sum is linear unless a layer says otherwise.
Kernels: ``kernels/elementwise.py``, reference ``kernels/reference/elementwise.py``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import ShapeError
from ..graph import Entry, Node
from .activation import ACT, act_flops, activation_grad, apply_act, onnx_with_act
from .registry import EagerContext, Kernel, OpDef, need, numel, register
from .weighted import DEVICE

if TYPE_CHECKING:
    from ..lower import Lowerer, Value
    from ..onnx_export import OnnxBuilder

INPUTS = "inputs"   # the common layer key the shape error points at (not an op attribute)
# The sum's activation; "none" unless the layer says so (not the spec's defaults.act, see above).
ADD_ACT = replace(ACT, doc="Activation applied to the sum (default none; a following relu layer is folded "
                  "into it).", default="none")


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


@register
class Add(OpDef):
    name = "add"
    doc = ("Elementwise sum of two or more layers of equal shape (a residual shortcut); a mismatch is an error, "
           "never a silent broadcast or truncation.")
    in_spec = True
    inputs = (2, None)
    arguments = None
    attrs = (DEVICE, ADD_ACT)
    kernel = Kernel("add")

    def lower(self, lw: "Lowerer", layer: Mapping[str, Any], inputs: Sequence["Value"]) -> "Value":
        from ..lower import Part, Value

        names = list(layer[INPUTS])
        first = inputs[0]
        for ref, v in zip(names[1:], inputs[1:]):
            if tuple(v.shape) != tuple(first.shape):
                hint = (f"; make them equal with a 1x1 conv projection of {ref} (op: conv, filters: "
                        f"{first.shape[0]}, kernel: 1, and a stride where the maps differ in size)"
                        if len(v.shape) == len(first.shape) == 3 else "")
                raise ShapeError(f"add inputs differ in shape: {names[0]} is {_shape_text(first.shape)} but {ref} "
                                 f"is {_shape_text(v.shape)}{hint}", key=INPUTS)
        name = layer["name"]
        dev = layer.get(DEVICE.name) or first.parts[0].device or lw.devices[0]
        entries = [lw.gather(v, 0, v.shape[0], dev, layer, f"{name}_in{k}") for k, v in enumerate(inputs)]
        node = lw.node(self.name, entries, name=name, device=dev, layer=layer, **self.node_attrs(layer, lw.defaults))
        return Value(tuple(first.shape), [Part(Entry(node, 0), dev, 0, first.shape[0])])

    def infer(self, attrs, in_shapes):
        shapes = [need(in_shapes, i, f"input {i}") for i in range(len(in_shapes))]
        for s in shapes[1:]:
            if tuple(s) != tuple(shapes[0]):
                raise ShapeError(f"add inputs differ in shape: {tuple(shapes[0])} vs {tuple(s)}", key=INPUTS)
        return shapes, [tuple(shapes[0])]

    def flops(self, attrs, in_shapes, out_shapes):
        n = numel(out_shapes[0])
        return (len(in_shapes) - 1) * n + act_flops(attrs.get(ADD_ACT.name, "none"), n)

    def gradient(self, node: Node, ograds: Sequence[Entry | None]) -> list[Entry | None]:
        # d(sum)/d(input) = 1 for every input: each one receives dy itself (copied back to its device by
        # the copy node's own gradient when the input came from another device).
        dy = ograds[0] if ograds else None
        return [activation_grad(node, dy) if dy is not None else None] * len(node.inputs)

    def fuse_activation(self, node: Node, act: str) -> Node | None:
        if node.attrs.get(ADD_ACT.name, "none") != "none":
            return None
        return node.with_(attrs={**node.attrs, ADD_ACT.name: act})

    def kernel_args(self, node: Node) -> dict[str, Any]:
        return {ADD_ACT.name: node.attrs.get(ADD_ACT.name, "none")}

    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        return [apply_act(sum(xs[1:], xs[0]), node.attrs.get(ADD_ACT.name, "none"))]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        onnx_with_act(b, node, "Sum", [b.x(node, i) for i in range(len(node.inputs))])
