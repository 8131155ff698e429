"""Softmax output with cross-entropy loss (mean over the batch) and its backward.

Outputs: the scalar loss and the class probabilities (visible, used for accuracy and prediction).
The gradient pass seeds d(loss) = 1. Kernels: ``alexnetc.kernels.softmax_xent``.
"""
from __future__ import annotations

from ..errors import ShapeError
from ..graph import Entry
from .registry import OpDef, backward_node, need, register


@register
class SoftmaxLoss(OpDef):
    name = "softmax_loss"
    arguments = ("data", "label")
    outputs = ("loss", "prob")
    visible = 2

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, "data")
        if len(x) != 2:
            raise ShapeError(f"softmax_loss expects (N, classes) scores, got {x}")
        label = in_shapes[1] if len(in_shapes) > 1 and in_shapes[1] is not None else (x[0],)
        if tuple(label) != (x[0],):
            raise ShapeError(f"label shape {tuple(label)} does not match batch {x[0]}")
        return [x, (x[0],)], [(), x]

    def gradient(self, node, ograds):
        # The loss is the head: its gradient is 1 regardless of ograds.
        return [backward_node("softmax_loss_backward", node, "bwd", [Entry(node, 1), node.inputs[1]]), None]


@register
class SoftmaxLossBackward(OpDef):
    name = "softmax_loss_backward"
    arguments = ("prob", "label")

    def infer(self, attrs, in_shapes):
        p = need(in_shapes, 0, "prob")
        return [p, (p[0],)], [p]
