"""Softmax output with cross-entropy loss (mean over the batch) and its backward.

Outputs: the scalar loss and the class probabilities (visible, used for accuracy and prediction).
It is the head the gradient pass seeds (``role = "loss"``: d(loss) = 1). Its lowering flattens the
scores if needed, checks them against the spec's ``classes`` and gathers them onto one device.
Kernels: ``kernels/loss.py``, reference ``kernels/reference/loss.py``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import ShapeError
from ..graph import Entry, Node
from .registry import EagerContext, Kernel, OpDef, backward_node, need, register

if TYPE_CHECKING:
    from ..lower import Lowerer, Value
    from ..onnx_export import OnnxBuilder


@register
class SoftmaxLoss(OpDef):
    name = "softmax_loss"
    doc = "Softmax over the classes and mean cross-entropy against the labels: the network's output."
    in_spec = True
    role = "loss"
    arguments = ("data", "label")
    outputs = ("loss", "prob")
    visible = 2
    output_dtypes = {0: "float32", 1: "float32"}   # always fp32, whatever the compute dtype
    kernel = Kernel("softmax_loss")

    def lower(self, lw: "Lowerer", layer: Mapping[str, Any], inputs: Sequence["Value"]) -> "Value":
        return lw.loss(self, layer, inputs[0])

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

    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        import torch
        import torch.nn.functional as F

        return [F.cross_entropy(xs[0], xs[1]), torch.softmax(xs[0], 1)]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        # Inference has no label: only the probabilities (output 1); the exporter adds the logits.
        b.emit("Softmax", [b.x(node)], [b.y(node, 1)], axis=1)


@register
class SoftmaxLossBackward(OpDef):
    name = "softmax_loss_backward"
    arguments = ("prob", "label")
    output_dtypes = {0: "float32"}
    kernel = Kernel("softmax_loss_backward")

    def infer(self, attrs, in_shapes):
        p = need(in_shapes, 0, "prob")
        return [p, (p[0],)], [p]
