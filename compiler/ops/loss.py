"""Softmax output with cross-entropy loss (mean over the batch) and its backward.

Outputs: the scalar loss and the class probabilities (visible, used for accuracy and prediction).
It is a head the gradient pass seeds (``role = "loss"``: d(total)/d(loss) = its ``loss_weight``). A
network may have several (GoogLeNet's auxiliary classifiers at 0.3): the total loss is their sum
weighted by ``loss_weight``, the *main* head is the one without ``aux: true`` (exactly one), and it
alone gives the probabilities, the reported error and the inference graph (auxiliary heads are
dropped there). Its lowering flattens
the scores if needed, checks them against the spec's ``classes`` and gathers them onto one device.
Kernels: ``kernels/loss.py``, reference ``kernels/reference/loss.py``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import ShapeError
from ..graph import Entry, Node
from .attrs import BOOLEAN, Attr, number
from .registry import EagerContext, Kernel, OpDef, backward_node, need, numel, register
from .tensor import flatten_value

if TYPE_CHECKING:
    from ..lower import Lowerer, Value
    from ..onnx_export import OnnxBuilder


# Caffe's name for it (GoogLeNet's prototxt: loss_weight: 0.3); a bare "weight" would read as the
# weighted layers' parameter.
WEIGHT = Attr("loss_weight", number(0, 1e6, lo_open=True),
              "This head's weight in the total loss (default 1; GoogLeNet's auxiliary heads: 0.3).", default=1.0,
              convert=float)
AUX = Attr("aux", BOOLEAN, "An auxiliary head: trained, but not the network's output (its probabilities are not "
           "reported, and the inference graph drops it). Exactly one softmax_loss is not aux.", default=False)


def loss_weight(node: Node) -> float:
    """The weight of a loss head in the total loss."""
    return float(node.attrs.get(WEIGHT.name, 1.0))


def is_aux(node: Node) -> bool:
    return bool(node.attrs.get(AUX.name, False))


def total_loss(heads: Sequence[tuple[Node, Any]]) -> Any:
    """The network's loss from each head's (node, loss value), the main head first: the weighted sum,
    in head order. One head is returned as is (not multiplied by its weight): a single-loss network's
    loss is bit for bit the head's."""
    if len(heads) == 1:
        return heads[0][1]
    main = heads[0][1]
    total = main * loss_weight(heads[0][0])
    for node, value in heads[1:]:
        value = value.to(main.device) if hasattr(value, "to") else value   # a head on another device
        total = total + value * loss_weight(node)
    return total


@register
class SoftmaxLoss(OpDef):
    name = "softmax_loss"
    doc = ("Softmax over the classes and mean cross-entropy against the labels: the network's output, or with "
           "aux: true an auxiliary head.")
    in_spec = True
    role = "loss"
    attrs = (WEIGHT, AUX)
    arguments = ("data", "label")
    outputs = ("loss", "prob")
    visible = 2
    output_dtypes = {0: "float32", 1: "float32"}   # fp32 under bf16 compute (float64 runs keep float64)
    kernel = Kernel("softmax_loss")

    def lower(self, lw: "Lowerer", layer: Mapping[str, Any], inputs: Sequence["Value"]) -> "Value":
        """The loss head: scores flattened, checked against `classes`, gathered onto one device."""
        from ..lower import Part, Value

        name, value = layer["name"], inputs[0]
        value = flatten_value(lw, value, layer, f"{name}_flatten")
        classes = lw.spec["classes"]
        if value.shape[0] != classes:
            raise ShapeError(f"the scores reaching the loss have {value.shape[0]} features but the spec "
                             f"has classes: {classes}")
        dev = value.parts[0].device or lw.devices[0]
        scores = lw.gather(value, 0, value.shape[0], dev, layer, name)
        node = lw.node(self.name, [scores, lw.label], name=name, device=dev, layer=layer,
                       **self.node_attrs(layer, lw.defaults))
        return Value((classes,), [Part(Entry(node, 1), dev, 0, classes)])

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, "data")
        if len(x) != 2:
            raise ShapeError(f"softmax_loss expects (N, classes) scores, got {x}")
        label = in_shapes[1] if len(in_shapes) > 1 and in_shapes[1] is not None else (x[0],)
        if tuple(label) != (x[0],):
            raise ShapeError(f"label shape {tuple(label)} does not match batch {x[0]}")
        return [x, (x[0],)], [(), x]

    def flops(self, attrs, in_shapes, out_shapes):
        # Per score: the row max, the shift, exp, the row sum and the division (5); the log-likelihood is per row.
        return 5 * numel(in_shapes[0])

    def gradient(self, node, ograds):
        # The loss is a head: its gradient is its weight in the total loss, regardless of ograds.
        return [backward_node("softmax_loss_backward", node, "bwd", [Entry(node, 1), node.inputs[1]],
                              {WEIGHT.name: loss_weight(node)}), None]

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
    attrs = (Attr(WEIGHT.name, spec=False, default=1.0),)   # the head's weight: the seed d(total)/d(loss)
    # The logit gradient is a value between ops like any other: in the compute dtype (the kernels
    # compute it from the fp32 probabilities; the executor keeps it in the compute dtype).
    kernel = Kernel("softmax_loss_backward")

    def kernel_args(self, node):
        return {"dloss": float(node.attrs.get(WEIGHT.name, 1.0))}

    def infer(self, attrs, in_shapes):
        p = need(in_shapes, 0, "prob")
        return [p, (p[0],)], [p]

    def flops(self, attrs, in_shapes, out_shapes):
        return 2 * numel(in_shapes[0])   # (p - onehot) * weight / N
