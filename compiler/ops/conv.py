"""Convolution (channel groups, bias and activation fused) and its two backward ops.

``num_group`` g splits the input channels and the filters into g independent convolutions (Caffe's
``group``): it is how two towers merged onto one device keep the two-tower function. Output sizes
use the shared sliding-window rule (`window.window_out`). Kernels: ``kernels/conv.py`` (Triton implicit
GEMM), reference ``kernels/reference/conv.py`` (ATen).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import ShapeError
from ..graph import Node
from .activation import ACT, apply_act, onnx_with_act
from .attrs import NUM_GROUP, Attr, integer, pair
from .registry import EagerContext, Kernel, OpDef, need, need_maps, out_hw, register
from .weighted import GROUPS, PARAM_ATTRS, WeightedLayer, divide
from .window import IN_HW, KERNEL, PAD, ROUNDING, STRIDE, explicit_pads, extra_pad, geometry, rounding_of, window_out

if TYPE_CHECKING:
    from ..lower import Lowerer, Value
    from ..onnx_export import OnnxBuilder

FILTERS = Attr("filters", integer(1, 65536), "Output channels (all groups together).")


@register
class Conv(WeightedLayer):
    name = "conv"
    doc = "2-d convolution over (N, C, H, W) with learned filters, bias and a fused activation."
    attrs = (FILTERS, KERNEL, STRIDE, PAD, ROUNDING, *PARAM_ATTRS, NUM_GROUP)
    out_attr = FILTERS.name
    backward_data_op = "conv_backward_data"
    backward_weight_op = "conv_backward_weight"
    kernel = Kernel("conv")

    def prepare_input(self, lw: "Lowerer", layer: Mapping[str, Any], value: "Value") -> "Value":
        if len(value.shape) != 3:
            raise ShapeError(f"conv needs feature maps (C, H, W) but its input has shape {value.shape}")
        return value

    def run_attrs(self, attrs, outputs, groups, connect):
        return {**attrs, FILTERS.name: outputs, NUM_GROUP.name: groups if connect == "own" else 1}

    def infer(self, attrs, in_shapes):
        x = need_maps("conv", need(in_shapes, 0, "data"))
        n, c, h, w = x
        (kh, kw), (sh, sw), (ph, pw) = geometry(attrs)
        g, k = int(attrs.get(NUM_GROUP.name, 1)), int(attrs[FILTERS.name])
        if c % g:
            raise ShapeError(f"{c} input channels are not divisible into {g} groups", key=GROUPS.name)
        divide(k, g, FILTERS.name)
        rounding = rounding_of(attrs)
        p = window_out(h, kh, sh, ph, rounding, "conv height")
        q = window_out(w, kw, sw, pw, rounding, "conv width")
        return self.complete(attrs, in_shapes, x, (k, c // g, kh, kw), k), [(n, k, p, q)]

    def macs(self, attrs, in_shapes, out_shapes):
        n, k, p, q = out_shapes[0]
        _, cg, kh, kw = in_shapes[1]
        return n * k * p * q * cg * kh * kw

    def backward_attrs(self, node):
        kernel, stride, pad = geometry(node.attrs)
        geo = {KERNEL.name: kernel, STRIDE.name: stride, PAD.name: pad,
               NUM_GROUP.name: int(node.attrs.get(NUM_GROUP.name, 1))}
        xs = node.inputs[0].shape
        return {**geo, IN_HW.name: (xs[2], xs[3]) if xs else None}, {**geo, FILTERS.name: node.attrs[FILTERS.name]}

    def kernel_args(self, node: Node) -> dict[str, Any]:
        _, stride, pad = geometry(node.attrs)
        return {STRIDE.name: stride, PAD.name: pad, NUM_GROUP.name: node.attrs[NUM_GROUP.name],
                "out_size": out_hw(node), ACT.name: node.attrs[ACT.name]}

    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        import torch.nn.functional as F

        x, w = xs[0], xs[1]
        (kh, kw), (sh, sw), (ph, pw) = geometry(node.attrs)
        p, q = out_hw(node)
        # ceil rounding can ask for a last window reaching past the padding: more zeros there
        eh, ew = extra_pad(x.shape[2], p, kh, sh, ph), extra_pad(x.shape[3], q, kw, sw, pw)
        xin = F.pad(x, (0, ew, 0, eh)) if eh or ew else x
        y = F.conv2d(xin, w, xs[2] if len(xs) > 2 else None, stride=(sh, sw), padding=(ph, pw),
                     groups=node.attrs[NUM_GROUP.name])
        return [apply_act(y[:, :, :p, :q], node.attrs[ACT.name])]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        # One (grouped) Conv; the padding after the input is what the last window reads (ceil rounding).
        (kh, kw), (sh, sw), _ = geometry(node.attrs)
        onnx_with_act(b, node, "Conv", [b.x(node, i) for i in range(len(node.inputs))], kernel_shape=[kh, kw],
                      strides=[sh, sw], pads=explicit_pads(node), dilations=[1, 1],
                      group=int(node.attrs[NUM_GROUP.name]))


class _ConvBackward(OpDef):
    attrs = (KERNEL, STRIDE, PAD, NUM_GROUP)
    math = "matmul"

    def macs(self, attrs, in_shapes, out_shapes):
        n, k, p, q = in_shapes[0]
        _, cg, kh, kw = (in_shapes[1] if self.name == "conv_backward_data" else out_shapes[0])
        return n * k * p * q * cg * kh * kw

    def kernel_args(self, node: Node) -> dict[str, Any]:
        _, stride, pad = geometry(node.attrs)
        return {STRIDE.name: stride, PAD.name: pad, NUM_GROUP.name: node.attrs[NUM_GROUP.name]}


@register
class ConvBackwardData(_ConvBackward):
    name = "conv_backward_data"
    attrs = (*_ConvBackward.attrs, IN_HW)
    arguments = ("grad", "weight")
    kernel = Kernel("conv_backward_data")

    def infer(self, attrs, in_shapes):
        dy, w = need(in_shapes, 0, "grad"), need(in_shapes, 1, "weight")
        if attrs.get(IN_HW.name) is None:
            raise ShapeError("conv_backward_data needs the forward input size (in_hw)")
        h, wd = attrs[IN_HW.name]
        return [dy, w], [(dy[0], w[1] * int(attrs.get(NUM_GROUP.name, 1)), h, wd)]

    def kernel_args(self, node):
        return {**super().kernel_args(node), IN_HW.name: tuple(node.attrs[IN_HW.name])}


@register
class ConvBackwardWeight(_ConvBackward):
    name = "conv_backward_weight"
    attrs = (*_ConvBackward.attrs, FILTERS)
    arguments = ("grad", "data")
    kernel = Kernel("conv_backward_weight")

    def infer(self, attrs, in_shapes):
        dy, x = need(in_shapes, 0, "grad"), need(in_shapes, 1, "data")
        kh, kw = pair(attrs[KERNEL.name])
        g = int(attrs.get(NUM_GROUP.name, 1))
        return [dy, x], [(int(attrs[FILTERS.name]), x[1] // g, kh, kw)]

    def kernel_args(self, node):
        return {**super().kernel_args(node), KERNEL.name: pair(node.attrs[KERNEL.name])}
