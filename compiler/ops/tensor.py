"""Data-movement ops: flatten, concat and slice along channels, add_n, and the cross-device copy.

`copy` is the only op that moves data between devices (MXNet's _CrossDeviceCopy): its node runs on
the destination device and its `src` attribute names the source. The placement pass inserts it; the
gradient of a copy is a copy back.
"""
from __future__ import annotations

import math

from ..errors import ShapeError
from .registry import OpDef, SameShape, backward_node, need, register


class _Reshaping(OpDef):
    """A reshape keeping the batch dimension; its gradient reshapes back to the input's shape."""

    def input_grad(self, node, dy):
        x = node.inputs[0]
        return backward_node("reshape", node, "bwd", [dy], {"shape": tuple(x.shape[1:]) if x.shape else None})


@register
class Flatten(_Reshaping):
    name = "flatten"

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, "data")
        return [x], [(x[0], math.prod(x[1:]))]


@register
class Reshape(_Reshaping):
    """`shape` is the per-sample shape."""

    name = "reshape"

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, "data")
        shape = tuple(attrs["shape"])
        if math.prod(shape) != math.prod(x[1:]):
            raise ShapeError(f"cannot reshape {x[1:]} to {shape}")
        return [x], [(x[0], *shape)]


@register
class Concat(OpDef):
    """Join inputs along axis 1 (channels or features)."""

    name = "concat"
    arguments = None

    def infer(self, attrs, in_shapes):
        shapes = [need(in_shapes, i, f"input {i}") for i in range(len(in_shapes))]
        first = shapes[0]
        for s in shapes[1:]:
            if len(s) != len(first) or s[0] != first[0] or s[2:] != first[2:]:
                raise ShapeError(f"concat inputs differ outside the channel axis: {first} vs {s}")
        return shapes, [(first[0], sum(s[1] for s in shapes), *first[2:])]

    def gradient(self, node, ograds):
        dy = ograds[0]
        if dy is None:
            return [None] * len(node.inputs)
        grads, start = [], 0
        for i, e in enumerate(node.inputs):
            end = start + e.shape[1]
            grads.append(backward_node("slice", node, f"bwd{i}", [dy], {"begin": start, "end": end}))
            start = end
        return grads


@register
class Slice(OpDef):
    """Channels [begin, end) of the input (axis 1)."""

    name = "slice"

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, "data")
        b, e = int(attrs["begin"]), int(attrs["end"])
        if not 0 <= b < e <= x[1]:
            raise ShapeError(f"slice [{b}, {e}) is outside the {x[1]} channels of the input")
        return [x], [(x[0], e - b, *x[2:])]

    def input_grad(self, node, dy):
        x = node.inputs[0]
        return backward_node("slice_backward", node, "bwd", [dy],
                             {"begin": node.attrs["begin"], "channels": x.shape[1] if x.shape else None})


@register
class SliceBackward(OpDef):
    """Zeros of the sliced input's shape with the gradient placed at channels [begin, begin + C)."""

    name = "slice_backward"
    arguments = ("grad",)

    def infer(self, attrs, in_shapes):
        dy = need(in_shapes, 0, "grad")
        return [dy], [(dy[0], int(attrs["channels"]), *dy[2:])]


@register
class AddN(OpDef):
    """Sum of same-shaped inputs: accumulates a gradient that reaches an output along several paths."""

    name = "add_n"
    arguments = None

    def infer(self, attrs, in_shapes):
        shapes = [need(in_shapes, i, f"input {i}") for i in range(len(in_shapes))]
        if any(s != shapes[0] for s in shapes):
            raise ShapeError(f"add_n inputs differ in shape: {shapes}")
        return shapes, [shapes[0]]


@register
class Copy(SameShape):
    """Cross-device copy: runs on (and its output lives on) the destination device."""

    name = "copy"

    def input_grad(self, node, dy):
        return backward_node("copy", node, "bwd", [dy], {"src": node.device}, device=node.attrs["src"])
