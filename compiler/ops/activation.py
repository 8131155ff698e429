"""Activations (one descriptor each, below) as layers of their own, the attribute that fuses one onto a
producer, and the one backward rule they share.

Each activation is one descriptor below and nothing else lists them: `ACTIVATIONS` (the values of the
``act`` attribute), the eager rule (`apply_act`), the ONNX operator, the schema and both kernel
backends read these classes. An activation written as its own layer is usually folded into the conv,
fc, batch norm or add that feeds it by the fusion pass (`activation = True` here, `fuse_activation` on
the producer); the backward of an activation, fused or not, is `act_backward`, written in terms of the
activation's *output* y so nothing else is saved.

Kernels: ``kernels/activation.py``, reference ``kernels/reference/activation.py``. The entries `act`
and `act_backward` dispatch on the activation's name to two functions each backend's module defines
per activation, ``<name>(x)`` and ``<name>_grad(dy, y)`` (`Kernel.requires`): ``kernels/backend.py``
checks at import that both backends define them for every activation here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from ..graph import Entry, Node
from .attrs import Attr, enum
from .registry import OPS, EagerContext, Kernel, SameShape, backward_node, get_op, numel, register

if TYPE_CHECKING:
    from ..onnx_export import OnnxBuilder


class _Activation(SameShape):
    """An elementwise nonlinearity: its eager rule `rule` and derivative from the output `grad_from_y`,
    its ONNX operator, and the functions its kernels define (`Kernel.requires`, see the module
    docstring)."""

    in_spec = True
    activation = True
    onnx_op: ClassVar[str] = ""
    # Cost per element (compiler/cost): of the activation, and of its gradient from y (act_backward).
    flops_per_element: ClassVar[int] = 1
    grad_flops_per_element: ClassVar[int] = 1

    @property
    def kernel(self) -> Kernel:
        return Kernel("act", requires=(self.name, f"{self.name}_grad"))

    def rule(self, x: Any) -> Any:
        """The activation on an ATen tensor (the eager oracle's, differentiated by torch.autograd)."""
        raise NotImplementedError

    def grad_from_y(self, dy: Any, y: Any) -> Any:
        """dx from dy and the output y = rule(x) on ATen tensors: the formula act_backward's kernels
        implement, the oracle of their tests (tests/test_op_completeness.py holds it to autograd)."""
        raise NotImplementedError

    def flops(self, attrs, in_shapes, out_shapes):
        return act_flops(self.name, numel(out_shapes[0]))

    def input_grad(self, node: Node, dy: Entry) -> Entry:
        return backward_node("act_backward", node, "bwd", [dy, Entry(node, 0)], {ACT.name: self.name})

    def kernel_args(self, node: Node) -> dict[str, Any]:
        return {ACT.name: self.name}

    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        return [self.rule(xs[0])]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        b.emit(self.onnx_op, [b.x(node)], [b.y(node)])


@register
class ReLU(_Activation):
    name = "relu"
    doc = "max(x, 0)."
    onnx_op = "Relu"
    flops_per_element = 1        # a max
    grad_flops_per_element = 1   # a select

    def rule(self, x: Any) -> Any:
        import torch

        return torch.relu(x)

    def grad_from_y(self, dy: Any, y: Any) -> Any:
        return dy * (y > 0)


@register
class Tanh(_Activation):
    name = "tanh"
    doc = "tanh(x) (the saturating nonlinearity the paper compares ReLU against)."
    onnx_op = "Tanh"
    flops_per_element = 4        # an exponential, an add, a division and a multiply (2x)
    grad_flops_per_element = 3   # dy * (1 - y*y)

    def rule(self, x: Any) -> Any:
        import torch

        return torch.tanh(x)

    def grad_from_y(self, dy: Any, y: Any) -> Any:
        return dy * (1 - y * y)


@register
class Sigmoid(_Activation):
    name = "sigmoid"
    doc = "1 / (1 + exp(-x))."
    onnx_op = "Sigmoid"
    flops_per_element = 4        # a negation, an exponential, an add and a division
    grad_flops_per_element = 3   # dy * y * (1 - y)

    def rule(self, x: Any) -> Any:
        import torch

        return torch.sigmoid(x)

    def grad_from_y(self, dy: Any, y: Any) -> Any:
        return dy * y * (1 - y)


@register
class Softplus(_Activation):
    name = "softplus"
    doc = "log(1 + exp(x)), a smooth relu (x itself above 20, as PyTorch)."
    onnx_op = "Softplus"
    flops_per_element = 4        # an exponential, an add, a logarithm and a max
    grad_flops_per_element = 3   # dy * (1 - exp(-y))

    def rule(self, x: Any) -> Any:
        import torch.nn.functional as F

        return F.softplus(x)

    def grad_from_y(self, dy: Any, y: Any) -> Any:
        import torch

        return dy * -torch.expm1(-y)   # sigmoid(x) = 1 - exp(-y)


# The values of the `act` attribute: "none" and every activation registered above.
ACTIVATIONS: tuple[str, ...] = ("none", *(op.name for op in OPS.values() if op.activation))


def _default_act(layer, spec_defaults) -> str:
    return spec_defaults.get("act", "none")


# The activation applied in a producer's epilogue (conv, fc, batch norm, add), and the one an
# act_backward node undoes.
ACT = Attr("act", enum(*ACTIVATIONS), "Activation fused onto the layer's output (default: defaults.act, else none).",
           default=_default_act)


def apply_act(x: Any, act: str) -> Any:
    """`act` on an ATen tensor (the eager rules of every op with a fused activation)."""
    return x if act == "none" else OPS[act].rule(x)


def onnx_with_act(b: "OnnxBuilder", node: Node, op_type: str, inputs: list[str], **attrs: Any) -> None:
    """Emit `op_type` for `node`, followed by the activation fused onto its output (if any)."""
    act = node.attrs.get(ACT.name, "none")
    if act == "none":
        b.emit(op_type, inputs, [b.y(node)], **attrs)
        return
    pre = b.fresh(f"{node.name}_pre_{act}")
    b.emit(op_type, inputs, [pre], **attrs)
    b.emit(OPS[act].onnx_op, [pre], [b.y(node)])


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


@register
class ActBackward(SameShape):
    """dx from dy and the activation's output y: each activation's derivative written in terms of y
    (its descriptor's `grad_from_y`, its kernels' ``<name>_grad``)."""

    name = "act_backward"
    attrs = (Attr(ACT.name, enum(*ACTIVATIONS[1:]), spec=False),)
    arguments = ("grad", "output")
    kernel = Kernel("act_backward")

    def flops(self, attrs, in_shapes, out_shapes):
        return act_flops(attrs[ACT.name], numel(out_shapes[0]), grad=True)

    def kernel_args(self, node: Node) -> dict[str, Any]:
        return {ACT.name: node.attrs[ACT.name]}
