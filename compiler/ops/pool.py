"""Max and average pooling (overlapping windows allowed), global max and average pooling, and their
backward ops.

Max pooling saves, per output, the offset of the winning cell inside its window (int8 for windows of
up to 127 cells) so the backward is a gather with no atomics. Average pooling divides by the number
of window cells inside the input (padding excluded). Output sizes use the shared rounding rule
(`window.window_out`). Global pooling (`globalavgpool`, `globalmaxpool`) reduces each channel's whole
map to 1x1; global max saves the flat offset h*W + w of each maximum (int32). Kernels:
``kernels/pool.py``, reference ``kernels/reference/pool.py``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ..errors import ShapeError
from ..graph import Entry, Node, Shape
from .registry import EagerContext, Kernel, OpDef, backward_node, need, need_maps, numel, out_hw, register
from .window import IN_HW, KERNEL, PAD, POOL_STRIDE, ROUNDING, explicit_pads, geometry, rounding_of, window_out

if TYPE_CHECKING:
    from ..onnx_export import OnnxBuilder

POOL_ATTRS = (KERNEL, POOL_STRIDE, PAD, ROUNDING)


def _window_cells(attrs) -> int:
    (kh, kw), _, _ = geometry(attrs)
    return kh * kw


def _geometry_args(node: Node) -> dict[str, Any]:
    kernel, stride, pad = geometry(node.attrs)
    return {KERNEL.name: kernel, POOL_STRIDE.name: stride, PAD.name: pad}


class _Pool(OpDef):
    in_spec = True
    maps_only = True
    attrs = POOL_ATTRS

    def pool_infer(self, attrs, in_shapes) -> tuple[Shape, Shape]:
        x = need_maps(self.name, need(in_shapes, 0, "data"))
        (kh, kw), (sh, sw), (ph, pw) = geometry(attrs)
        if ph >= kh or pw >= kw:
            raise ShapeError(f"{self.name}: padding {(ph, pw)} must be smaller than the window {(kh, kw)}",
                             key=KERNEL.name)
        rounding = rounding_of(attrs)
        p = window_out(x[2], kh, sh, ph, rounding, f"{self.name} height")
        q = window_out(x[3], kw, sw, pw, rounding, f"{self.name} width")
        return x, (x[0], x[1], p, q)

    def flops(self, attrs, in_shapes, out_shapes):
        return numel(out_shapes[0]) * _window_cells(attrs)   # a compare (max) or an add (mean) per cell

    def backward(self, node: Node, op: str, inputs: list[Entry]) -> Entry:
        x = node.inputs[0]
        return backward_node(op, node, "bwd", inputs,
                             {**_geometry_args(node), IN_HW.name: tuple(x.shape[2:]) if x.shape else None})

    def kernel_args(self, node):
        return {**_geometry_args(node), "out_size": out_hw(node)}

    def onnx_pool(self, node: Node, b: "OnnxBuilder", op_type: str, **attrs: Any) -> None:
        """One ONNX pooling op with explicit pads (exact for every rounding; see `explicit_pads`)."""
        kernel, stride, _ = geometry(node.attrs)
        b.emit(op_type, [b.x(node)], [b.y(node)], kernel_shape=list(kernel), strides=list(stride),
               pads=explicit_pads(node), **attrs)


class _PoolBackward(OpDef):
    attrs = (KERNEL, POOL_STRIDE, PAD, IN_HW)

    def flops(self, attrs, in_shapes, out_shapes):
        # max: one add per window, into its winner; mean: dy/count added to each of the window's cells
        return numel(in_shapes[0]) * (1 if self.name == "maxpool_backward" else _window_cells(attrs))

    def infer(self, attrs, in_shapes):
        dy = need(in_shapes, 0, "grad")
        h, w = attrs[IN_HW.name]
        return [dy] * len(in_shapes), [(dy[0], dy[1], h, w)]

    def kernel_args(self, node):
        return {**_geometry_args(node), IN_HW.name: tuple(node.attrs[IN_HW.name])}


@register
class MaxPool(_Pool):
    name = "maxpool"
    doc = "Maximum over each (overlapping) window."
    outputs = ("output", "argmax")
    output_dtypes = {1: "int8"}
    kernel = Kernel("maxpool")

    def infer(self, attrs, in_shapes):
        x, y = self.pool_infer(attrs, in_shapes)
        return [x], [y, y]

    def input_grad(self, node, dy):
        return self.backward(node, "maxpool_backward", [dy, Entry(node, 1)])

    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        import torch.nn.functional as F

        kernel, stride, pad = geometry(node.attrs)
        return [F.max_pool2d(xs[0], kernel, stride, pad, ceil_mode=rounding_of(node.attrs) == "ceil"), None]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        self.onnx_pool(node, b, "MaxPool")   # padding never wins a max in ONNX either; no argmax output


@register
class MaxPoolBackward(_PoolBackward):
    name = "maxpool_backward"
    arguments = ("grad", "argmax")
    kernel = Kernel("maxpool_backward")


@register
class AvgPool(_Pool):
    name = "avgpool"
    doc = "Mean over each window's cells inside the input (padding excluded)."
    kernel = Kernel("avgpool")

    def infer(self, attrs, in_shapes):
        x, y = self.pool_infer(attrs, in_shapes)
        return [x], [y]

    def input_grad(self, node, dy):
        return self.backward(node, "avgpool_backward", [dy])

    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        import torch.nn.functional as F

        kernel, stride, pad = geometry(node.attrs)
        return [F.avg_pool2d(xs[0], kernel, stride, pad, ceil_mode=rounding_of(node.attrs) == "ceil",
                             count_include_pad=False)]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        self.onnx_pool(node, b, "AveragePool", count_include_pad=0)   # padding excluded, as ours


@register
class AvgPoolBackward(_PoolBackward):
    name = "avgpool_backward"
    arguments = ("grad",)
    kernel = Kernel("avgpool_backward")


# -- global pooling: one window covering the whole map -----------------------------------------------------
class _GlobalPool(OpDef):
    """A pool whose window is the whole input map: (N, C, H, W) -> (N, C, 1, 1), whatever H and W.

    Its own op rather than a window size, so a spec need not repeat the map size (which changes with
    the input size) and the kernels reduce over H*W without unrolling a window."""

    in_spec = True
    maps_only = True

    def pool_infer(self, in_shapes) -> tuple[Shape, Shape]:
        x = need_maps(self.name, need(in_shapes, 0, "data"))
        return x, (x[0], x[1], 1, 1)

    def flops(self, attrs, in_shapes, out_shapes):
        return numel(in_shapes[0])   # a compare or an add per cell

    def backward(self, node: Node, op: str, inputs: list[Entry]) -> Entry:
        x = node.inputs[0]
        return backward_node(op, node, "bwd", inputs, {IN_HW.name: tuple(x.shape[2:]) if x.shape else None})


class _GlobalPoolBackward(OpDef):
    attrs = (IN_HW,)

    def flops(self, attrs, in_shapes, out_shapes):
        return numel(out_shapes[0])   # each cell gets its share of dy (mean) or zero/dy (max)

    def infer(self, attrs, in_shapes):
        dy = need(in_shapes, 0, "grad")
        h, w = attrs[IN_HW.name]
        return [dy] * len(in_shapes), [(dy[0], dy[1], h, w)]

    def kernel_args(self, node):
        return {IN_HW.name: tuple(node.attrs[IN_HW.name])}


@register
class GlobalMaxPool(_GlobalPool):
    name = "globalmaxpool"
    doc = "Maximum over each channel's whole map: (C, H, W) -> (C, 1, 1)."
    outputs = ("output", "argmax")
    output_dtypes = {1: "int32"}    # the flat offset h*W + w of each maximum
    kernel = Kernel("globalmaxpool")

    def infer(self, attrs, in_shapes):
        x, y = self.pool_infer(in_shapes)
        return [x], [y, y]

    def input_grad(self, node, dy):
        return self.backward(node, "globalmaxpool_backward", [dy, Entry(node, 1)])

    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        return [xs[0].amax(dim=(2, 3), keepdim=True), None]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        b.emit("GlobalMaxPool", [b.x(node)], [b.y(node)])   # no argmax output: inference only


@register
class GlobalMaxPoolBackward(_GlobalPoolBackward):
    name = "globalmaxpool_backward"
    arguments = ("grad", "argmax")
    kernel = Kernel("globalmaxpool_backward")


@register
class GlobalAvgPool(_GlobalPool):
    name = "globalavgpool"
    doc = "Mean over each channel's whole map (NiN, GoogLeNet): (C, H, W) -> (C, 1, 1)."
    kernel = Kernel("globalavgpool")

    def infer(self, attrs, in_shapes):
        x, y = self.pool_infer(in_shapes)
        return [x], [y]

    def input_grad(self, node, dy):
        return self.backward(node, "globalavgpool_backward", [dy])

    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        return [xs[0].mean(dim=(2, 3), keepdim=True)]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        b.emit("GlobalAveragePool", [b.x(node)], [b.y(node)])


@register
class GlobalAvgPoolBackward(_GlobalPoolBackward):
    name = "globalavgpool_backward"
    arguments = ("grad",)
    kernel = Kernel("globalavgpool_backward")
