"""Activations: relu, tanh and sigmoid as layers of their own, and the one backward rule they share.

An activation written as its own layer is usually folded into the conv or fc that feeds it by the fusion
pass (`activation = True` here, `fuse_activation` on the producer); the backward of an activation, fused
or not, is `act_backward`, written in terms of the activation's *output* y so nothing else is saved.
Kernels: ``kernels/activation.py``, reference ``kernels/reference/activation.py``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from ..graph import Entry, Node
from .attrs import Attr, enum
from .registry import EagerContext, Kernel, SameShape, backward_node, get_op, numel, register

if TYPE_CHECKING:
    from ..onnx_export import OnnxBuilder

ACTIVATIONS = ("none", "relu", "tanh", "sigmoid")


def _default_act(layer, spec_defaults) -> str:
    return spec_defaults.get("act", "none")


# The activation applied in a producer's epilogue (conv, fc), and the one an act_backward node undoes.
ACT = Attr("act", enum(*ACTIVATIONS), "Activation fused onto the layer's output (default: defaults.act, else none).",
           default=_default_act)


def apply_act(x: Any, act: str) -> Any:
    """`act` on an ATen tensor (the eager rules of every op with a fused activation)."""
    import torch

    return {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}.get(act, lambda t: t)(x)


ONNX_OPS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def onnx_with_act(b: "OnnxBuilder", node: Node, op_type: str, inputs: list[str], **attrs: Any) -> None:
    """Emit `op_type` for `node`, followed by the activation fused onto its output (if any)."""
    act = node.attrs.get(ACT.name, "none")
    if act == "none":
        b.emit(op_type, inputs, [b.y(node)], **attrs)
        return
    pre = b.fresh(f"{node.name}_pre_{act}")
    b.emit(op_type, inputs, [pre], **attrs)
    b.emit(ONNX_OPS[act], [pre], [b.y(node)])


def act_flops(act: str, elements: int, grad: bool = False) -> int:
    """FLOPs of activation `act` (or of its gradient) over `elements` values, from its descriptor's
    per-element counts; none costs nothing."""
    if act == "none":
        return 0
    op = get_op(act)
    return elements * (op.grad_flops_per_element if grad else op.flops_per_element)


def activation_grad(node: Node, dy: Entry) -> Entry:
    """Gradient through the activation fused onto `node`'s output 0 (the identity when there is none)."""
    act = node.attrs.get(ACT.name, "none")
    if act == "none":
        return dy
    return backward_node("act_backward", node, "act_bwd", [dy, Entry(node, 0)], {ACT.name: act})


class _Activation(SameShape):
    in_spec = True
    activation = True
    kernel = Kernel("act")
    # Cost per element (compiler/cost): of the activation, and of its gradient from y (act_backward).
    flops_per_element: ClassVar[int] = 1
    grad_flops_per_element: ClassVar[int] = 1

    def flops(self, attrs, in_shapes, out_shapes):
        return act_flops(self.name, numel(out_shapes[0]))

    def input_grad(self, node: Node, dy: Entry) -> Entry:
        return backward_node("act_backward", node, "bwd", [dy, Entry(node, 0)], {ACT.name: self.name})

    def kernel_args(self, node: Node) -> dict[str, Any]:
        return {ACT.name: self.name}

    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        return [apply_act(xs[0], self.name)]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        b.emit(ONNX_OPS[self.name], [b.x(node)], [b.y(node)])


@register
class ReLU(_Activation):
    name = "relu"
    doc = "max(x, 0)."
    flops_per_element = 1        # a max
    grad_flops_per_element = 1   # a select


@register
class Tanh(_Activation):
    name = "tanh"
    doc = "tanh(x) (the saturating nonlinearity the paper compares ReLU against)."
    flops_per_element = 4        # an exponential, an add, a division and a multiply (2x)
    grad_flops_per_element = 3   # dy * (1 - y*y)


@register
class Sigmoid(_Activation):
    name = "sigmoid"
    doc = "1 / (1 + exp(-x))."
    flops_per_element = 4        # a negation, an exponential, an add and a division
    grad_flops_per_element = 3   # dy * y * (1 - y)


@register
class ActBackward(SameShape):
    """dx from dy and the activation's output y: relu dy*[y>0], tanh dy*(1-y^2), sigmoid dy*y*(1-y)."""

    name = "act_backward"
    attrs = (Attr(ACT.name, enum(*ACTIVATIONS[1:]), spec=False),)
    arguments = ("grad", "output")
    kernel = Kernel("act_backward")

    def flops(self, attrs, in_shapes, out_shapes):
        return act_flops(attrs[ACT.name], numel(out_shapes[0]), grad=True)

    def kernel_args(self, node: Node) -> dict[str, Any]:
        return {ACT.name: node.attrs[ACT.name]}
