"""Fully connected layer (bias + activation fused) and its backward ops.

Kernels: ``alexnetc.kernels.linear`` (cuBLAS through torch.matmul) and the reference backend.
"""
from __future__ import annotations

from ..errors import ShapeError
from ..graph import Entry
from .conv import activation_grad
from .registry import OpDef, backward_node, check_param, need, register


@register
class FullyConnected(OpDef):
    name = "fc"
    arguments = ("data", "weight", "bias")
    params = ("weight", "bias")

    def arguments_for(self, attrs):
        return ("data", "weight") if attrs.get("no_bias") else self.arguments

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, "data")
        if len(x) != 2:
            raise ShapeError(f"fc expects a 2-d input (N, features), got {x}; flatten first")
        u = int(attrs["units"])
        shapes = [x, check_param(in_shapes[1] if len(in_shapes) > 1 else None, (u, x[1]), "weight")]
        if not attrs.get("no_bias"):
            shapes.append(check_param(in_shapes[2] if len(in_shapes) > 2 else None, (u,), "bias"))
        return shapes, [(x[0], u)]

    def macs(self, attrs, in_shapes, out_shapes):
        return in_shapes[0][0] * in_shapes[0][1] * out_shapes[0][1]

    def gradient(self, node, ograds):
        dy = ograds[0]
        if dy is None:
            return [None] * len(node.inputs)
        dz = activation_grad(node, dy)
        x, w = node.inputs[0], node.inputs[1]
        grads = [backward_node("linear_backward_data", node, "bwd_data", [dz, w]),
                 backward_node("linear_backward_weight", node, "bwd_weight", [dz, x])]
        if not node.attrs.get("no_bias"):
            grads.append(backward_node("bias_backward", node, "bwd_bias", [dz]))
        return grads


@register
class LinearBackwardData(OpDef):
    name = "linear_backward_data"
    arguments = ("grad", "weight")

    def infer(self, attrs, in_shapes):
        dy, w = need(in_shapes, 0, "grad"), need(in_shapes, 1, "weight")
        return [dy, w], [(dy[0], w[1])]

    def macs(self, attrs, in_shapes, out_shapes):
        return in_shapes[0][0] * in_shapes[0][1] * in_shapes[1][1]


@register
class LinearBackwardWeight(OpDef):
    name = "linear_backward_weight"
    arguments = ("grad", "data")

    def infer(self, attrs, in_shapes):
        dy, x = need(in_shapes, 0, "grad"), need(in_shapes, 1, "data")
        return [dy, x], [(dy[1], x[1])]

    def macs(self, attrs, in_shapes, out_shapes):
        return in_shapes[0][0] * in_shapes[0][1] * in_shapes[1][1]
