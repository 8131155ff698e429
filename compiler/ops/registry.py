"""The op registry and the `OpDef` base class every operator implements."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ..errors import ShapeError
from ..graph import Entry, Node, Shape, make_node

OPS: dict[str, "OpDef"] = {}


def register(cls):
    OPS[cls.name] = cls()
    return cls


def get_op(name: str) -> "OpDef":
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown op '{name}'") from None


class OpDef:
    """How the compiler sees one operator.

    `arguments` names the inputs (None: any number, e.g. concat); `params` is the subset that are
    learnable parameters, created as variables by the constructors when not given; `outputs` names
    the outputs, of which the first `visible` are the op's results and the rest are saved for the
    backward pass (LRN's scale, max-pool's argmax).
    """

    name = ""
    arguments: tuple[str, ...] | None = ("data",)
    params: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ("output",)
    visible = 1
    # dtype of each output when it is not the input's (e.g. argmax -> int8)
    output_dtypes: Mapping[int, str] = {}

    def arguments_for(self, attrs: Mapping[str, Any]) -> tuple[str, ...]:
        """Argument names for these attrs (no bias -> no 'bias' argument)."""
        return self.arguments or ()

    def infer(self, attrs: Mapping[str, Any], in_shapes: Sequence[Shape | None]
              ) -> tuple[list[Shape], list[Shape]]:
        """Complete the input shapes (parameters from attrs) and return (input shapes, output shapes)."""
        raise NotImplementedError

    def macs(self, attrs: Mapping[str, Any], in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]) -> int:
        return 0

    def gradient(self, node: Node, ograds: Sequence[Entry | None]) -> list[Entry | None]:
        """Input gradients as new backward nodes, given the gradient of each visible output.

        The default serves ops with one differentiable input and one visible output: no gradient in,
        none out; otherwise `input_grad` builds it. Ops with several inputs or outputs override this."""
        dy = ograds[0] if ograds else None
        if dy is None:
            return [None] * len(node.inputs)
        return [self.input_grad(node, dy)]

    def input_grad(self, node: Node, dy: Entry) -> Entry:
        """The gradient of the one input, given that of the output (see `gradient`)."""
        raise NotImplementedError(f"op '{self.name}' has no gradient")


def backward_node(op: str, forward: Node, suffix: str, inputs: Sequence[Entry],
                  attrs: Mapping[str, Any] | None = None, device: str | None = None) -> Entry:
    """A backward node placed and attributed like its forward node."""
    return Entry(make_node(op, f"{forward.name}_{suffix}", attrs or {}, inputs,
                           device if device is not None else forward.device, forward.layer, forward.mark))


def need(in_shapes: Sequence[Shape | None], i: int, what: str) -> Shape:
    s = in_shapes[i] if i < len(in_shapes) else None
    if s is None:
        raise ShapeError(f"the shape of input '{what}' is unknown")
    return tuple(s)


def check_param(given: Shape | None, expected: Shape, what: str) -> Shape:
    if given is not None and tuple(given) != tuple(expected):
        raise ShapeError(f"{what} has shape {tuple(given)}, expected {tuple(expected)}")
    return tuple(expected)


def pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def window_out(n: int, k: int, s: int, p: int, rounding: str, what: str) -> int:
    """Output length of a sliding window: the one rounding rule for conv and pooling.

    span = n + 2p - k; out = floor(span / s) + 1 (floor), ceil(span / s) + 1 (ceil; as Caffe, a last
    window that would start in the right padding is dropped), or span / s + 1 when that is exact.
    """
    span = n + 2 * p - k
    if span < 0:
        raise ShapeError(f"{what}: window {k} is larger than the padded input {n} + 2*{p} = {n + 2 * p}, "
                         f"so the output size would be {span // s + 1 if span // s + 1 <= 0 else 0}")
    if rounding == "exact" and span % s:
        raise ShapeError(f"{what}: output size ({n} + 2*{p} - {k}) / {s} + 1 = {span / s + 1:g} is fractional "
                         f"under rounding 'exact'")
    out = (math.ceil(span / s) if rounding == "ceil" else span // s) + 1
    if rounding == "ceil" and (out - 1) * s >= n + p:
        out -= 1
    if out <= 0:
        raise ShapeError(f"{what}: output size would be {out}")
    return out


class SameShape(OpDef):
    """An op whose one output has the shape of its first input (activations, dropout, copies...)."""

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, (self.arguments or ("data",))[0])
        return [x] + [tuple(s) if s is not None else x for s in in_shapes[1:]], [x]


class WeightedLayer(OpDef):
    """conv and fc: data, weight and (unless ``no_bias``) bias; bias + activation fused on the output.

    Subclasses give `param_shapes` and the names of their two backward ops; the gradient rule (through
    the fused activation, then data / weight / bias gradients) is shared.
    """

    arguments = ("data", "weight", "bias")
    params = ("weight", "bias")
    backward_data_op = ""
    backward_weight_op = ""

    def arguments_for(self, attrs):
        return ("data", "weight") if attrs.get("no_bias") else self.arguments

    def complete(self, attrs, in_shapes, x: Shape, weight: Shape, units: int) -> list[Shape]:
        """The full input shape list: data, the checked weight and (unless no_bias) the bias."""
        shapes = [x, check_param(in_shapes[1] if len(in_shapes) > 1 else None, weight, "weight")]
        if not attrs.get("no_bias"):
            shapes.append(check_param(in_shapes[2] if len(in_shapes) > 2 else None, (units,), "bias"))
        return shapes

    def backward_attrs(self, node) -> tuple[dict, dict]:
        """Attributes of the (data, weight) backward nodes."""
        return {}, {}

    def gradient(self, node, ograds):
        dy = ograds[0]
        if dy is None:
            return [None] * len(node.inputs)
        dz = activation_grad(node, dy)
        x, w = node.inputs[0], node.inputs[1]
        data_attrs, weight_attrs = self.backward_attrs(node)
        grads = [backward_node(self.backward_data_op, node, "bwd_data", [dz, w], data_attrs),
                 backward_node(self.backward_weight_op, node, "bwd_weight", [dz, x], weight_attrs)]
        if not node.attrs.get("no_bias"):
            grads.append(backward_node("bias_backward", node, "bwd_bias", [dz]))
        return grads


def activation_grad(node: Node, dy: Entry) -> Entry:
    """Gradient through an activation fused onto `node`'s output 0 (identity when there is none)."""
    act = node.attrs.get("act", "none")
    if act == "none":
        return dy
    return backward_node("act_backward", node, "act_bwd", [dy, Entry(node, 0)], {"act": act})
