"""Dropout and its backward. The mask comes from a counter-based hash keyed by (run seed, step, this
node's `seed_offset`, element index in the global batch), so the backward regenerates it instead of storing it and both
backends draw the same mask. Outside training the op is the identity (`Kernel(train_only=True)`).
Kernels: ``kernels/dropout.py``, reference ``kernels/reference/dropout.py``.
"""
from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING, Any, Sequence

from ..graph import Node
from .attrs import Attr, number
from .registry import EagerContext, Kernel, RunSampleOffset, RunSeed, RunStep, SameShape, backward_node, numel, register

if TYPE_CHECKING:
    from ..onnx_export import OnnxBuilder

P = Attr("p", number(0, 1, hi_open=True), "Probability of dropping a unit while training.", default=0.5,
         spec_required=True, convert=float)
SEED_OFFSET = Attr("seed_offset", spec=False, default=0)   # this node's RNG stream, from its name


def _kernel_args(node: Node) -> dict[str, Any]:
    return {P.name: node.attrs[P.name], "seed": RunSeed(int(node.attrs.get(SEED_OFFSET.name, 0))),
            "step": RunStep(), "offset": RunSampleOffset(math.prod(node.shapes[0][1:]))}


@register
class Dropout(SameShape):
    name = "dropout"
    doc = "Zero each unit with probability p while training, scaling the rest by 1/(1-p)."
    in_spec = True
    attrs = (P, SEED_OFFSET)
    kernel = Kernel("dropout", train_only=True)

    def part_attrs(self, name: str, groups: int) -> dict[str, Any]:
        return {SEED_OFFSET.name: zlib.crc32(name.encode())}  # a stable, per-node RNG stream

    def flops(self, attrs, in_shapes, out_shapes):
        return numel(in_shapes[0])   # the kept values' scaling (the mask's hash is integer work)

    def input_grad(self, node, dy):
        return backward_node("dropout_backward", node, "bwd", [dy],
                             {P.name: node.attrs[P.name], SEED_OFFSET.name: node.attrs.get(SEED_OFFSET.name, 0)})

    def kernel_args(self, node):
        return _kernel_args(node)

    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        import torch.nn.functional as F

        # torch's own RNG: masks differ from ours; gradient comparisons use specs without dropout
        return [F.dropout(xs[0], node.attrs[P.name], ctx.training)]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        b.alias(node, 0, b.x(node))   # the identity at inference: no operator at all


@register
class DropoutBackward(SameShape):
    name = "dropout_backward"
    attrs = (P, SEED_OFFSET)
    arguments = ("grad",)
    kernel = Kernel("dropout_backward")

    def flops(self, attrs, in_shapes, out_shapes):
        return numel(in_shapes[0])

    def kernel_args(self, node):
        return _kernel_args(node)
