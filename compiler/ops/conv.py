"""Convolution (grouped, bias + activation fused) and its backward ops: shape rules, cost, gradient.

Kernels: ``alexnetc.kernels.conv`` (Triton) and ``alexnetc.kernels.reference`` (ATen).
"""
from __future__ import annotations

from ..errors import ShapeError
from .registry import OpDef, SameShape, WeightedLayer, need, pair, register, window_out


def _geometry(attrs):
    return pair(attrs["kernel"]), pair(attrs.get("stride", 1)), pair(attrs.get("pad", 0))


@register
class Conv(WeightedLayer):
    name = "conv"
    backward_data_op = "conv_backward_data"
    backward_weight_op = "conv_backward_weight"

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, "data")
        if len(x) != 4:
            raise ShapeError(f"conv expects a 4-d input (N, C, H, W), got {x}")
        n, c, h, w = x
        (kh, kw), (sh, sw), (ph, pw) = _geometry(attrs)
        g, k = int(attrs.get("num_group", 1)), int(attrs["filters"])
        if c % g:
            raise ShapeError(f"{c} input channels are not divisible into {g} groups")
        if k % g:
            raise ShapeError(f"{k} filters are not divisible into {g} groups")
        rounding = attrs.get("rounding", "floor")
        p = window_out(h, kh, sh, ph, rounding, "conv height")
        q = window_out(w, kw, sw, pw, rounding, "conv width")
        return self.complete(attrs, in_shapes, x, (k, c // g, kh, kw), k), [(n, k, p, q)]

    def macs(self, attrs, in_shapes, out_shapes):
        n, k, p, q = out_shapes[0]
        _, cg, kh, kw = in_shapes[1]
        return n * k * p * q * cg * kh * kw

    def backward_attrs(self, node):
        a, xs = node.attrs, node.inputs[0].shape
        kernel, stride, pad = _geometry(a)
        geo = {"kernel": kernel, "stride": stride, "pad": pad, "num_group": int(a.get("num_group", 1))}
        data = {**geo, "in_hw": (xs[2], xs[3]) if xs else None, "channels": xs[1] if xs else None}
        return data, {**geo, "filters": a["filters"]}


@register
class ConvBackwardData(OpDef):
    name = "conv_backward_data"
    arguments = ("grad", "weight")

    def infer(self, attrs, in_shapes):
        dy, w = need(in_shapes, 0, "grad"), need(in_shapes, 1, "weight")
        if attrs.get("in_hw") is None:
            raise ShapeError("conv_backward_data needs the forward input size (in_hw)")
        h, wd = attrs["in_hw"]
        return [dy, w], [(dy[0], w[1] * int(attrs.get("num_group", 1)), h, wd)]

    def macs(self, attrs, in_shapes, out_shapes):
        n, k, p, q = in_shapes[0]
        _, cg, kh, kw = in_shapes[1]
        return n * k * p * q * cg * kh * kw


@register
class ConvBackwardWeight(OpDef):
    name = "conv_backward_weight"
    arguments = ("grad", "data")

    def infer(self, attrs, in_shapes):
        dy, x = need(in_shapes, 0, "grad"), need(in_shapes, 1, "data")
        kh, kw = pair(attrs["kernel"])
        g = int(attrs.get("num_group", 1))
        return [dy, x], [(int(attrs["filters"]), x[1] // g, kh, kw)]

    def macs(self, attrs, in_shapes, out_shapes):
        n, k, p, q = in_shapes[0]
        _, cg, kh, kw = out_shapes[0]
        return n * k * p * q * cg * kh * kw


@register
class BiasBackward(OpDef):
    name = "bias_backward"
    arguments = ("grad",)

    def infer(self, attrs, in_shapes):
        dy = need(in_shapes, 0, "grad")
        return [dy], [(dy[1],)]


@register
class ActBackward(SameShape):
    """Gradient of relu/tanh/sigmoid written in terms of the activation's output y."""

    name = "act_backward"
    arguments = ("grad", "output")
