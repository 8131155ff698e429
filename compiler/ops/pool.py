"""Max and average pooling (overlapping windows allowed) and their backward ops.

Max pooling saves, per output, the offset of the winning cell inside its window (int8 for windows of
up to 127 cells) so the backward is a gather with no atomics. Average pooling divides by the number
of window cells inside the input (padding excluded). Output sizes use the shared rounding rule
(`registry.window_out`). Kernels: ``alexnetc.kernels.pool`` and the reference backend.
"""
from __future__ import annotations

from ..errors import ShapeError
from ..graph import Entry
from .registry import OpDef, backward_node, need, pair, register, window_out


def _pool_infer(kind, attrs, in_shapes):
    x = need(in_shapes, 0, "data")
    if len(x) != 4:
        raise ShapeError(f"{kind} expects a 4-d input (N, C, H, W), got {x}")
    (kh, kw), (sh, sw), (ph, pw) = pair(attrs["kernel"]), pair(attrs["stride"]), pair(attrs.get("pad", 0))
    if ph >= kh or pw >= kw:
        raise ShapeError(f"{kind}: padding {(ph, pw)} must be smaller than the window {(kh, kw)}")
    rounding = attrs.get("rounding", "floor")
    p = window_out(x[2], kh, sh, ph, rounding, f"{kind} height")
    q = window_out(x[3], kw, sw, pw, rounding, f"{kind} width")
    return x, (x[0], x[1], p, q)


def _geometry(attrs):
    return {"kernel": pair(attrs["kernel"]), "stride": pair(attrs["stride"]), "pad": pair(attrs.get("pad", 0))}


@register
class MaxPool(OpDef):
    name = "maxpool"
    outputs = ("output", "argmax")
    visible = 1

    @property
    def output_dtypes(self):
        return {1: "int8"}

    def infer(self, attrs, in_shapes):
        x, y = _pool_infer("maxpool", attrs, in_shapes)
        return [x], [y, y]

    def input_grad(self, node, dy):
        x = node.inputs[0]
        return backward_node("maxpool_backward", node, "bwd", [dy, Entry(node, 1)],
                             {**_geometry(node.attrs), "in_hw": tuple(x.shape[2:]) if x.shape else None})


@register
class MaxPoolBackward(OpDef):
    name = "maxpool_backward"
    arguments = ("grad", "argmax")

    def infer(self, attrs, in_shapes):
        dy = need(in_shapes, 0, "grad")
        h, w = attrs["in_hw"]
        return [dy, dy], [(dy[0], dy[1], h, w)]


@register
class AvgPool(OpDef):
    name = "avgpool"

    def infer(self, attrs, in_shapes):
        x, y = _pool_infer("avgpool", attrs, in_shapes)
        return [x], [y]

    def input_grad(self, node, dy):
        x = node.inputs[0]
        return backward_node("avgpool_backward", node, "bwd", [dy],
                             {**_geometry(node.attrs), "in_hw": tuple(x.shape[2:]) if x.shape else None})


@register
class AvgPoolBackward(OpDef):
    name = "avgpool_backward"
    arguments = ("grad",)

    def infer(self, attrs, in_shapes):
        dy = need(in_shapes, 0, "grad")
        h, w = attrs["in_hw"]
        return [dy], [(dy[0], dy[1], h, w)]
