"""Sliding-window geometry shared by convolution and pooling: its attributes and the output-size rule.

`window_out` is the one rounding rule (floor, ceil, exact) for conv and pooling alike; docs/spec.md
explains where Caffe, MXNet and cuda-convnet disagree and why a spec names its choice.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from ..errors import ShapeError
from .attrs import Attr, enum, pair, pair_schema

ROUNDINGS = ("floor", "ceil", "exact")


def _spec_rounding(layer: Mapping[str, Any], spec_defaults: Mapping[str, Any]) -> str:
    return spec_defaults.get("rounding", "floor")


def _same_as_kernel(layer: Mapping[str, Any], spec_defaults: Mapping[str, Any]) -> Any:
    return layer.get("kernel")


KERNEL = Attr("kernel", pair_schema(1), "Window size: n or [h, w].", convert=pair)
STRIDE = Attr("stride", pair_schema(1), "Stride: n or [h, w] (default 1).", default=1, convert=pair)
POOL_STRIDE = Attr("stride", pair_schema(1), "Stride s (default: the window size).", default=_same_as_kernel,
                   convert=pair)
PAD = Attr("pad", pair_schema(0), "Zero padding on each side: n or [h, w] (default 0).", default=0, convert=pair)
IN_HW = Attr("in_hw", spec=False)   # a backward op's forward input size (H, W)
ROUNDING = Attr("rounding", enum(*ROUNDINGS),
                "Output-size rounding: floor (MXNet, Caffe conv), ceil (Caffe pooling, cuda-convnet), exact "
                "(the division must be exact). Default: the spec's top-level rounding, else floor.",
                default=_spec_rounding)


def geometry(attrs: Mapping[str, Any]) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kernel, stride, pad) of a node's attributes, each as (h, w)."""
    return (pair(attrs[KERNEL.name]), pair(attrs.get(STRIDE.name, 1)), pair(attrs.get(PAD.name, 0)))


def rounding_of(attrs: Mapping[str, Any]) -> str:
    return attrs.get(ROUNDING.name, "floor")


def window_out(n: int, k: int, s: int, p: int, rounding: str, what: str) -> int:
    """Output length of a sliding window: the one rounding rule for conv and pooling.

    span = n + 2p - k; out = floor(span / s) + 1 (floor), ceil(span / s) + 1 (ceil; as Caffe, a last
    window that would start in the right padding is dropped), or span / s + 1 when that is exact.
    """
    span = n + 2 * p - k
    if span < 0:
        raise ShapeError(f"{what}: window {k} is larger than the padded input {n} + 2*{p} = {n + 2 * p}, "
                         f"so the output size would be {span // s + 1 if span // s + 1 <= 0 else 0}", key=KERNEL.name)
    if rounding == "exact" and span % s:
        raise ShapeError(f"{what}: output size ({n} + 2*{p} - {k}) / {s} + 1 = {span / s + 1:g} is fractional "
                         f"under rounding 'exact'", key=KERNEL.name)
    out = (math.ceil(span / s) if rounding == "ceil" else span // s) + 1
    if rounding == "ceil" and (out - 1) * s >= n + p:
        out -= 1
    if out <= 0:
        raise ShapeError(f"{what}: output size would be {out}", key=KERNEL.name)
    return out


def extra_pad(n: int, out: int, k: int, s: int, p: int) -> int:
    """Cells of bottom/right padding beyond `p` that `out` windows read (ceil rounding)."""
    return max(0, (out - 1) * s + k - (n + 2 * p))


def explicit_pads(node: Any) -> list[int]:
    """ONNX ``pads`` [top, left, bottom, right] under which floor rounding gives exactly the node's
    output size: the spec's padding before, and after it as much (possibly less, never negative) as
    the last window reads. So ceil rounding, Caffe's drop-the-window-in-the-padding rule and floor's
    unread rows all come out exactly as ours, with no ``ceil_mode`` (whose rule differs)."""
    (kh, kw), (sh, sw), (ph, pw) = geometry(node.attrs)
    _, _, h, w = node.inputs[0].shape
    p, q = node.shapes[0][2], node.shapes[0][3]
    ends = []
    for n, out, k, s, pad in ((h, p, kh, sh, ph), (w, q, kw, sw, pw)):
        end = max(0, (out - 1) * s + k - n - pad)
        if (n + pad + end - k) // s + 1 != out:  # cannot happen under window_out's rule; never export a wrong size
            raise ValueError(f"{node.name}: no padding gives {out} windows over {n} (k={k}, s={s}, pad={pad})")
        ends.append(end)
    return [ph, pw, *ends]
