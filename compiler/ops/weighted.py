"""What conv and fc share: learned weight and bias, groups (towers) on devices, the fused epilogue.

A weighted layer is split into `groups` (the paper's towers): group i runs on ``groups.devices[i]`` and
reads its own slice of the input channels (``connect: own``) or all of them (``connect: all``); the
lowering runs each run of consecutive groups on one device as one node (`Lowerer.weighted`). Bias and
activation are fused into the op's epilogue; the gradient goes back through the activation, then to
the data, the weight and the bias. The spec attributes declared here (initialisers, learning-rate and
decay multipliers) become the parameter variables' attributes, not the op node's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from ..errors import ShapeError
from ..graph import Entry, Node, Shape
from .activation import ACT, act_flops, activation_grad
from .attrs import BOOLEAN, IDENT, Attr, integer
from .registry import OpDef, backward_node, check_param, numel

if TYPE_CHECKING:
    from ..lower import Lowerer, Value

INIT_SCHEMA = {
    "description": "Initialiser: {type: gaussian, std: S[, mean: M]}, {type: constant, value: V}, "
                   "{type: kaiming} (N(0, 2/fan_in)), {type: uniform, scale: A}; a bare number means a constant.",
    "anyOf": [
        {"type": "number"},
        {"type": "object", "required": ["type"], "additionalProperties": False,
         "properties": {
             "type": {"enum": ["gaussian", "constant", "kaiming", "uniform"]},
             "std": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
             "mean": {"type": "number"},
             "value": {"type": "number"},
             "scale": {"type": "number", "exclusiveMinimum": 0, "maximum": 100,
                       "description": "uniform: U(-scale, scale)"}},
         "allOf": [
             {"if": {"properties": {"type": {"const": "gaussian"}}}, "then": {"required": ["std"]}},
             {"if": {"properties": {"type": {"const": "constant"}}}, "then": {"required": ["value"]}},
             {"if": {"properties": {"type": {"const": "uniform"}}}, "then": {"required": ["scale"]}}]}]}
MULT_SCHEMA = {"description": "Multiplier for the learning rate or weight decay: one number for weights and bias, "
                              "or {weight: W, bias: B}.",
               "anyOf": [{"type": "number", "minimum": 0, "maximum": 1000},
                         {"type": "object", "additionalProperties": False,
                          "properties": {"weight": {"type": "number", "minimum": 0, "maximum": 1000},
                                         "bias": {"type": "number", "minimum": 0, "maximum": 1000}}}]}
GROUPS_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["count"],
    "description": "Split the layer into `count` groups (towers). Group i runs on devices[i]; `connect: own` "
                   "reads only the i-th slice of the input's channels (the paper's conv2/conv4/conv5), "
                   "`connect: all` reads every input channel (conv3, fc6, fc7, fc8).",
    "properties": {
        "count": integer(1, 64),
        "devices": {"type": "array", "items": IDENT, "minItems": 1, "maxItems": 64},
        "connect": {"enum": ["own", "all"], "default": "own"}}}

DEFAULT_WEIGHT_INIT = {"type": "gaussian", "std": 0.01}  # the paper: N(0, 0.01)
DEFAULT_BIAS_INIT = {"type": "constant", "value": 0}

# Spec-only: consumed while lowering. `groups` here means towers; an op's channel groups are `num_group`.
GROUPS = Attr("groups", GROUPS_SCHEMA, node=False, default=None)
DEVICE = Attr("device", IDENT, node=False, default=None)
WEIGHT_INIT = Attr("weight_init", INIT_SCHEMA, node=False, default=DEFAULT_WEIGHT_INIT)
BIAS_INIT = Attr("bias_init", INIT_SCHEMA, node=False, default=DEFAULT_BIAS_INIT)
LR_MULT = Attr("lr_mult", MULT_SCHEMA, node=False, default=None)
DECAY_MULT = Attr("decay_mult", MULT_SCHEMA, node=False, default=None)
BIAS = Attr("bias", BOOLEAN, "Learn a bias (default true).", node=False, default=True)
# Node-only: set by the compiler.
NO_BIAS = Attr("no_bias", BOOLEAN, spec=False, default=False)

PARAM_ATTRS = (ACT, GROUPS, DEVICE, WEIGHT_INIT, BIAS_INIT, LR_MULT, DECAY_MULT, BIAS, NO_BIAS)
# What a spec's `defaults:` section may set for every weighted layer.
SPEC_DEFAULTS = (ACT, WEIGHT_INIT, BIAS_INIT, LR_MULT, DECAY_MULT)


def init_spec(value: Any) -> dict:
    """A spec initialiser as a variable's `init` attribute (a bare number: a constant)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"type": "constant", "value": float(value)}
    return dict(value)


def multipliers(value: Any) -> tuple[float, float]:
    """A spec multiplier as (for the weight, for the bias)."""
    if value is None:
        return 1.0, 1.0
    if isinstance(value, (int, float)):
        return float(value), float(value)
    return float(value.get("weight", 1.0)), float(value.get("bias", 1.0))


class WeightedLayer(OpDef):
    """conv and fc: data, weight and (unless ``no_bias``) bias; bias + activation fused on the output.

    Subclasses give `out_attr` (the attribute counting output channels, split among groups), `infer`,
    `run_attrs` (a device run's node attributes) and their two backward ops; the gradient rule is shared.
    """

    in_spec = True
    arguments = ("data", "weight", "bias")
    params = ("weight", "bias")
    math = "matmul"
    out_attr: ClassVar[str] = ""
    backward_data_op: ClassVar[str] = ""
    backward_weight_op: ClassVar[str] = ""

    def arguments_for(self, attrs: Mapping[str, Any]) -> tuple[str, ...]:
        return ("data", "weight") if attrs.get(NO_BIAS.name) else ("data", "weight", "bias")

    # -- lowering -------------------------------------------------------------------------------------
    def lower(self, lw: "Lowerer", layer: Mapping[str, Any], inputs: Sequence["Value"]) -> "Value":
        return lw.weighted(self, layer, inputs[0])

    def prepare_input(self, lw: "Lowerer", layer: Mapping[str, Any], value: "Value") -> "Value":
        """The layer's input as this op reads it (fc flattens; conv checks for feature maps)."""
        return value

    def run_attrs(self, attrs: dict[str, Any], outputs: int, groups: int, connect: str) -> dict[str, Any]:
        """Node attributes of one device run holding `groups` consecutive groups, `outputs` channels."""
        raise NotImplementedError

    def node_attrs(self, layer: Mapping[str, Any], spec_defaults: Mapping[str, Any]) -> dict[str, Any]:
        out = super().node_attrs(layer, spec_defaults)
        out[NO_BIAS.name] = not layer.get(BIAS.name, BIAS.default)
        return out

    def param_attrs(self, layer: Mapping[str, Any], spec_defaults: Mapping[str, Any]) -> dict[str, dict]:
        """Attributes of the weight and bias variables: initialiser, learning-rate and decay multipliers."""
        def pick(a: Attr) -> Any:
            return layer.get(a.name, spec_defaults.get(a.name, a.default))

        wl, bl = multipliers(pick(LR_MULT))
        wd, bd = multipliers(pick(DECAY_MULT))
        return {"weight": {"init": init_spec(pick(WEIGHT_INIT)), "lr_mult": wl, "decay_mult": wd},
                "bias": {"init": init_spec(pick(BIAS_INIT)), "lr_mult": bl, "decay_mult": bd}}

    # -- shapes ---------------------------------------------------------------------------------------
    def complete(self, attrs: Mapping[str, Any], in_shapes: Sequence[Shape | None], x: Shape, weight: Shape,
                 units: int) -> list[Shape]:
        """The full input shape list: data, the checked weight and (unless no_bias) the bias."""
        shapes = [x, check_param(in_shapes[1] if len(in_shapes) > 1 else None, weight, "weight")]
        if not attrs.get(NO_BIAS.name):
            shapes.append(check_param(in_shapes[2] if len(in_shapes) > 2 else None, (units,), "bias"))
        return shapes

    def flops(self, attrs: Mapping[str, Any], in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]) -> int:
        """The GEMM (2 per multiply-add) and its epilogue: one add per output for the bias, the fused
        activation's own count."""
        out = numel(out_shapes[0])
        return (2 * self.macs(attrs, in_shapes, out_shapes) + (out if len(in_shapes) > 2 else 0)
                + act_flops(attrs.get(ACT.name, "none"), out))

    # -- gradient and fusion --------------------------------------------------------------------------
    def backward_attrs(self, node: Node) -> tuple[dict, dict]:
        """Attributes of the (data, weight) backward nodes."""
        return {}, {}

    def gradient(self, node: Node, ograds: Sequence[Entry | None]) -> list[Entry | None]:
        dy = ograds[0]
        if dy is None:
            return [None] * len(node.inputs)
        dz = activation_grad(node, dy)
        x, w = node.inputs[0], node.inputs[1]
        data_attrs, weight_attrs = self.backward_attrs(node)
        grads = [backward_node(self.backward_data_op, node, "bwd_data", [dz, w], data_attrs),
                 backward_node(self.backward_weight_op, node, "bwd_weight", [dz, x], weight_attrs)]
        if not node.attrs.get(NO_BIAS.name):
            grads.append(backward_node("bias_backward", node, "bwd_bias", [dz]))
        return grads

    def fuse_activation(self, node: Node, act: str) -> Node | None:
        if node.attrs.get(ACT.name, "none") != "none":
            return None
        return node.with_(attrs={**node.attrs, ACT.name: act})


def param_multipliers(param: Node) -> tuple[float, float]:
    """(learning-rate multiplier, weight-decay multiplier) of a parameter variable."""
    return float(param.attrs.get(LR_MULT.name, 1.0)), float(param.attrs.get(DECAY_MULT.name, 1.0))


def divide(total: int, count: int, what: str) -> int:
    if total % count:
        raise ShapeError(f"{total} {what} are not divisible into {count} groups", key=(GROUPS.name, what))
    return total // count
