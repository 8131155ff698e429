"""Convolution (grouped, bias + activation fused) and its backward ops: shape rules, cost, gradient.

Kernels: ``alexnetc.kernels.conv`` (Triton) and ``alexnetc.kernels.reference`` (ATen).
"""
from __future__ import annotations

from ..errors import ShapeError
from ..graph import Entry
from .registry import OpDef, backward_node, check_param, need, pair, register, window_out


def _geometry(attrs):
    return pair(attrs["kernel"]), pair(attrs.get("stride", 1)), pair(attrs.get("pad", 0))


def activation_grad(node, dy: Entry) -> Entry:
    """Gradient through an activation fused onto `node`'s output 0 (identity when there is none)."""
    act = node.attrs.get("act", "none")
    if act == "none":
        return dy
    return backward_node("act_backward", node, "act_bwd", [dy, Entry(node, 0)], {"act": act})


@register
class Conv(OpDef):
    name = "conv"
    arguments = ("data", "weight", "bias")
    params = ("weight", "bias")

    def arguments_for(self, attrs):
        return ("data", "weight") if attrs.get("no_bias") else self.arguments

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
        shapes = [x, check_param(in_shapes[1] if len(in_shapes) > 1 else None, (k, c // g, kh, kw), "weight")]
        if not attrs.get("no_bias"):
            shapes.append(check_param(in_shapes[2] if len(in_shapes) > 2 else None, (k,), "bias"))
        return shapes, [(n, k, p, q)]

    def macs(self, attrs, in_shapes, out_shapes):
        n, k, p, q = out_shapes[0]
        _, cg, kh, kw = in_shapes[1]
        return n * k * p * q * cg * kh * kw

    def gradient(self, node, ograds):
        dy = ograds[0]
        if dy is None:
            return [None] * len(node.inputs)
        dz = activation_grad(node, dy)
        x, w = node.inputs[0], node.inputs[1]
        a = node.attrs
        geo = {"kernel": pair(a["kernel"]), "stride": pair(a.get("stride", 1)), "pad": pair(a.get("pad", 0)),
               "num_group": int(a.get("num_group", 1))}
        xs = x.shape
        dx = backward_node("conv_backward_data", node, "bwd_data", [dz, w],
                           {**geo, "in_hw": (xs[2], xs[3]) if xs else None, "channels": xs[1] if xs else None})
        dw = backward_node("conv_backward_weight", node, "bwd_weight", [dz, x], {**geo, "filters": a["filters"]})
        grads = [dx, dw]
        if not a.get("no_bias"):
            grads.append(backward_node("bias_backward", node, "bwd_bias", [dz]))
        return grads


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
class ActBackward(OpDef):
    """Gradient of relu/tanh/sigmoid written in terms of the activation's output y."""

    name = "act_backward"
    arguments = ("grad", "output")

    def infer(self, attrs, in_shapes):
        dy = need(in_shapes, 0, "grad")
        return [dy, tuple(in_shapes[1] or dy)], [dy]
