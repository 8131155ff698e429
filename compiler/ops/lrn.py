"""Local response normalisation across channels (the paper's section 3.3) and its backward.

b_c = a_c / (k + alpha' * sum_{c' in window(c)} a_c'^2)^beta, window = [c - n//2, c + n//2] clipped,
alpha' = alpha / n when `alpha_over_n` (cuda-convnet, Caffe, PyTorch) else alpha (the paper as printed).
The forward saves the denominator base (`scale`) so the backward is a single pass. With `groups` = g > 1
the channels form g equal groups and windows never cross a group boundary (two towers merged onto one
device keep the two-tower function); the executor runs that as g independent LRNs.
Kernels: ``alexnetc.kernels.lrn`` and the reference backend.
"""
from __future__ import annotations

from ..errors import ShapeError
from ..graph import Entry
from .registry import OpDef, backward_node, need, register

LRN_ATTRS = ("size", "k", "alpha", "beta", "alpha_over_n", "groups")


@register
class LRN(OpDef):
    name = "lrn"
    outputs = ("output", "scale")
    visible = 1

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, "data")
        if len(x) != 4:
            raise ShapeError(f"lrn expects a 4-d input (N, C, H, W), got {x}")
        if x[1] % int(attrs.get("groups", 1)):
            raise ShapeError(f"{x[1]} channels are not divisible into {attrs['groups']} LRN groups")
        return [x], [x, x]

    def input_grad(self, node, dy):
        attrs = {k: node.attrs[k] for k in LRN_ATTRS if k in node.attrs}
        return backward_node("lrn_backward", node, "bwd", [dy, node.inputs[0], Entry(node, 0), Entry(node, 1)],
                             attrs)


@register
class LRNBackward(OpDef):
    name = "lrn_backward"
    arguments = ("grad", "data", "output", "scale")

    def infer(self, attrs, in_shapes):
        dy = need(in_shapes, 0, "grad")
        return [dy, dy, dy, dy], [dy]
