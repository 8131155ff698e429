"""Fully connected layer (bias + activation fused) and its backward ops.

Kernels: ``alexnetc.kernels.linear`` (cuBLAS through torch.matmul) and the reference backend.
"""
from __future__ import annotations

from ..errors import ShapeError
from .registry import OpDef, WeightedLayer, need, register


@register
class FullyConnected(WeightedLayer):
    name = "fc"
    backward_data_op = "linear_backward_data"
    backward_weight_op = "linear_backward_weight"

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, "data")
        if len(x) != 2:
            raise ShapeError(f"fc expects a 2-d input (N, features), got {x}; flatten first")
        u = int(attrs["units"])
        return self.complete(attrs, in_shapes, x, (u, x[1]), u), [(x[0], u)]

    def macs(self, attrs, in_shapes, out_shapes):
        return in_shapes[0][0] * in_shapes[0][1] * out_shapes[0][1]


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
