"""Local response normalisation across channels (the paper's section 3.3) and its backward.

b_c = a_c / (k + alpha' * sum_{c' in window(c)} a_c'^2)^beta, window = [c - n//2, c + n//2] clipped,
alpha' = alpha / n when `alpha_over_n` (cuda-convnet, Caffe, PyTorch) else alpha (the paper as printed);
the kernels take alpha' (`kernel_args`). The forward saves the denominator base (`scale`) so the
backward is a single pass. With ``num_group`` g > 1 the channels form g equal groups and windows never
cross a group boundary (two towers merged onto one device keep the two-tower function); the executor
runs that as g independent LRNs (`Kernel(grouped=True)`).
Kernels: ``kernels/lrn.py``, reference ``kernels/reference/lrn.py``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import ShapeError
from ..graph import Entry, Node
from .attrs import BOOLEAN, NUM_GROUP, Attr, integer, number
from .registry import EagerContext, Kernel, NoOnnxForm, OpDef, backward_node, need, need_maps, numel, register

if TYPE_CHECKING:
    from ..onnx_export import OnnxBuilder

# Python defaults are the paper's values; a spec must still write each one (spec_required), because
# implementations disagree on alpha's meaning and a spec must say which convention it follows.
SIZE = Attr("size", integer(1, 1023), "Window n (odd): channels c-n//2 .. c+n//2.", default=5, spec_required=True)
K = Attr("k", number(0, 1e6), default=2.0, spec_required=True)
ALPHA = Attr("alpha", number(0, 1e6), default=1e-4, spec_required=True)
BETA = Attr("beta", number(0, 100), default=0.75, spec_required=True)
ALPHA_OVER_N = Attr("alpha_over_n", BOOLEAN,
                    "true: the sum is scaled by alpha/n (cuda-convnet, Caffe, PyTorch, MXNet, cuDNN, ONNX); "
                    "false: by alpha as written (the paper's formula, TensorFlow).", default=False, spec_required=True)
LRN_ATTRS = (SIZE, K, ALPHA, BETA, ALPHA_OVER_N, NUM_GROUP)


def effective_alpha(attrs: Mapping[str, Any]) -> float:
    """alpha' of the formula: the coefficient of the window's sum of squares."""
    a = float(attrs[ALPHA.name])
    return a / int(attrs[SIZE.name]) if attrs[ALPHA_OVER_N.name] else a


def _kernel_args(node: Node) -> dict[str, Any]:
    a = node.attrs
    return {SIZE.name: int(a[SIZE.name]), K.name: float(a[K.name]), ALPHA.name: effective_alpha(a),
            BETA.name: float(a[BETA.name])}


def _groups(node: Node) -> int:
    return int(node.attrs.get(NUM_GROUP.name, 1))


def lrn_formula(x: Any, attrs: Mapping[str, Any]) -> Any:
    """The formula written out on ATen (the float64 oracle), channel groups kept apart."""
    import torch.nn.functional as F

    g = int(attrs.get(NUM_GROUP.name, 1))
    n, c, h, w = x.shape
    x = x.reshape(n * g, c // g, h, w)
    size = int(attrs[SIZE.name])
    sq = F.pad(x.pow(2), (0, 0, 0, 0, size // 2, size // 2))
    win = sum(sq[:, i:i + x.shape[1]] for i in range(size))
    return (x / (attrs[K.name] + effective_alpha(attrs) * win).pow(attrs[BETA.name])).reshape(n, c, h, w)


def lrn_torch(x: Any, attrs: Mapping[str, Any]) -> Any:
    """The same LRN through F.local_response_norm (which always divides its alpha by n)."""
    import torch.nn.functional as F

    g = int(attrs.get(NUM_GROUP.name, 1))
    n, c, h, w = x.shape
    size = int(attrs[SIZE.name])
    y = F.local_response_norm(x.reshape(n * g, c // g, h, w), size, alpha=effective_alpha(attrs) * size,
                              beta=attrs[BETA.name], k=attrs[K.name])
    return y.reshape(n, c, h, w)


@register
class LRN(OpDef):
    name = "lrn"
    doc = "Local response normalisation across channels, as the paper's section 3.3."
    in_spec = True
    attrs = LRN_ATTRS
    maps_only = True
    outputs = ("output", "scale")
    visible = 1
    kernel = Kernel("lrn", grouped=True)

    def check(self, layer):
        size = layer.get(SIZE.name)
        if isinstance(size, int) and not isinstance(size, bool) and size % 2 == 0:
            return [(SIZE.name, f"LRN size must be odd (a window centred on the channel), got {size}")]
        return []

    def part_attrs(self, name: str, groups: int) -> dict[str, Any]:
        return {NUM_GROUP.name: groups}  # normalise within each group of the producing layer

    def infer(self, attrs, in_shapes):
        x = need_maps("lrn", need(in_shapes, 0, "data"))
        g = int(attrs.get(NUM_GROUP.name, 1))
        if x[1] % g:
            raise ShapeError(f"{x[1]} channels are not divisible into {g} LRN groups")
        return [x], [x, x]

    def flops(self, attrs, in_shapes, out_shapes):
        # Per element: the window's n squares summed (2n), s = k + a*sum (2), s^-b as exp2(-b*log2 s) (3),
        # times x (1).
        return numel(in_shapes[0]) * (2 * int(attrs[SIZE.name]) + 6)

    def input_grad(self, node, dy):
        attrs = {a.name: node.attrs[a.name] for a in LRN_ATTRS if a.name in node.attrs}
        return backward_node("lrn_backward", node, "bwd", [dy, node.inputs[0], Entry(node, 0), Entry(node, 1)],
                             attrs)

    def kernel_args(self, node):
        return _kernel_args(node)

    def channel_groups(self, node):
        return _groups(node)

    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        return [(lrn_formula if ctx.formula else lrn_torch)(xs[0], node.attrs), None]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        # ONNX's LRN always divides its alpha by size, so it gets alpha' * size. Channel groups (towers
        # merged onto one device) are normalised apart: Split, one LRN each, Concat.
        a = node.attrs
        size = int(a[SIZE.name])
        if size % 2 == 0:
            raise NoOnnxForm(f"an LRN window of even size {size} is centred differently in ONNX")
        attrs = dict(size=size, alpha=effective_alpha(a) * size, beta=float(a[BETA.name]), bias=float(a[K.name]))
        g = _groups(node)
        if g == 1:
            b.emit("LRN", [b.x(node)], [b.y(node)], **attrs)
            return
        towers = [b.fresh(f"{node.name}_in{i}") for i in range(g)]
        normed = [b.fresh(f"{node.name}_out{i}") for i in range(g)]
        b.emit("Split", [b.x(node)], towers, axis=1, **({"num_outputs": g} if b.opset >= 18 else {}))
        for t, y in zip(towers, normed):
            b.emit("LRN", [t], [y], **attrs)
        b.emit("Concat", normed, [b.y(node)], axis=1)


@register
class LRNBackward(OpDef):
    name = "lrn_backward"
    attrs = LRN_ATTRS
    arguments = ("grad", "data", "output", "scale")
    kernel = Kernel("lrn_backward", grouped=True)

    def infer(self, attrs, in_shapes):
        dy = need(in_shapes, 0, "grad")
        return [dy, dy, dy, dy], [dy]

    def flops(self, attrs, in_shapes, out_shapes):
        # Per element: dy*y/s (2), its window sum (n), s^-b (3), dy*s^-b (1), 2*a*b*x*sum (2), the difference (1).
        return numel(in_shapes[0]) * (int(attrs[SIZE.name]) + 9)

    def kernel_args(self, node):
        return _kernel_args(node)

    def channel_groups(self, node):
        return _groups(node)
