"""Fully connected layer (bias and activation fused), its backward ops, and the bias gradient that conv
shares. Kernels: ``kernels/fc.py`` (cuBLAS through torch.matmul), reference ``kernels/reference/fc.py``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import ShapeError
from ..graph import Node
from .activation import ACT, apply_act, onnx_with_act
from .attrs import Attr, integer
from .registry import EagerContext, Kernel, OpDef, need, numel, register
from .weighted import GROUPS, PARAM_ATTRS, WeightedLayer

if TYPE_CHECKING:
    from ..lower import Lowerer, Value
    from ..onnx_export import OnnxBuilder

def cublas_precision(dtype: str) -> str:
    """The peak an fc GEMM runs at: cuBLAS through torch.mm keeps fp32 in IEEE precision (PyTorch's
    default `torch.backends.cuda.matmul.allow_tf32` is off), half precision on tensor cores."""
    return {"float64": "fp64", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[dtype]


UNITS = Attr("units", integer(1, 1 << 20), "Output features (all groups together).")
IN_FEATURES = Attr("in_features", integer(1, 1 << 30),
                   "Optional: the input size you expect; checked against the inferred one.", node=False, default=None)


@register
class FullyConnected(WeightedLayer):
    name = "fc"
    doc = "y = act(x W^T + b) over (N, features)."
    attrs = (UNITS, IN_FEATURES, *PARAM_ATTRS)
    out_attr = UNITS.name
    backward_data_op = "fc_backward_data"
    backward_weight_op = "fc_backward_weight"
    kernel = Kernel("fc")

    def math_precision(self, dtype: str) -> str:
        return cublas_precision(dtype)

    def prepare_input(self, lw: "Lowerer", layer: Mapping[str, Any], value: "Value") -> "Value":
        from .tensor import flatten_value  # here: importing it above would register the tensor ops before fc's

        value = flatten_value(lw, value, layer, f"{layer['name']}_flatten")
        expected = layer.get(IN_FEATURES.name)
        if expected is not None and expected != value.shape[0]:
            raise ShapeError(f"in_features is {expected} but the input has {value.shape[0]} features",
                             key=IN_FEATURES.name)
        return value

    def run_attrs(self, attrs, outputs, groups, connect):
        if connect == "own" and groups > 1:
            raise ShapeError("fc with connect: own needs one group per device run; give each group "
                             "its own device or use connect: all", key=GROUPS.name)
        return {**attrs, UNITS.name: outputs}

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, "data")
        if len(x) != 2:
            raise ShapeError(f"fc expects a 2-d input (N, features), got {x}; flatten first")
        u = int(attrs[UNITS.name])
        return self.complete(attrs, in_shapes, x, (u, x[1]), u), [(x[0], u)]

    def macs(self, attrs, in_shapes, out_shapes):
        return in_shapes[0][0] * in_shapes[0][1] * out_shapes[0][1]

    def kernel_args(self, node: Node) -> dict[str, Any]:
        return {ACT.name: node.attrs[ACT.name]}

    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        import torch.nn.functional as F

        return [apply_act(F.linear(xs[0], xs[1], xs[2] if len(xs) > 2 else None), node.attrs[ACT.name])]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        # y = x W^T + b: Gemm with the weight as stored, (units, features), transposed.
        onnx_with_act(b, node, "Gemm", [b.x(node, i) for i in range(len(node.inputs))], transB=1)


@register
class FcBackwardData(OpDef):
    name = "fc_backward_data"
    arguments = ("grad", "weight")
    kernel = Kernel("fc_backward_data")
    math = "matmul"

    def math_precision(self, dtype: str) -> str:
        return cublas_precision(dtype)

    def infer(self, attrs, in_shapes):
        dy, w = need(in_shapes, 0, "grad"), need(in_shapes, 1, "weight")
        return [dy, w], [(dy[0], w[1])]

    def macs(self, attrs, in_shapes, out_shapes):
        return in_shapes[0][0] * in_shapes[0][1] * in_shapes[1][1]


@register
class FcBackwardWeight(OpDef):
    name = "fc_backward_weight"
    arguments = ("grad", "data")
    kernel = Kernel("fc_backward_weight")
    math = "matmul"

    def math_precision(self, dtype: str) -> str:
        return cublas_precision("float64" if dtype == "float64" else "float32")   # both operands upcast to fp32

    def infer(self, attrs, in_shapes):
        dy, x = need(in_shapes, 0, "grad"), need(in_shapes, 1, "data")
        return [dy, x], [(dy[1], x[1])]

    def macs(self, attrs, in_shapes, out_shapes):
        return in_shapes[0][0] * in_shapes[0][1] * in_shapes[1][1]


@register
class BiasBackward(OpDef):
    """db: the gradient summed over every axis but the channel (conv) or feature (fc) axis 1."""

    name = "bias_backward"
    arguments = ("grad",)
    kernel = Kernel("bias_backward")

    def infer(self, attrs, in_shapes):
        dy = need(in_shapes, 0, "grad")
        return [dy], [(dy[1],)]

    def flops(self, attrs, in_shapes, out_shapes):
        return numel(in_shapes[0])   # one add per element of dy
