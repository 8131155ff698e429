"""Reference elementwise ops: `add`, the sum of same-shaped tensors left to right (the Triton kernel's
order), then its activation: on fp32 CPU maps of one layout with relu or none, one pass of
`csrc/elementwise.c` (bit for bit ATen's result), else ATen's add and the activation over the sum."""
from __future__ import annotations

import torch

from ..shared import check_add_inputs
from . import activation, native
from ._common import f32


def add(*xs: torch.Tensor, act: str = "none") -> torch.Tensor:
    check_add_inputs(xs)
    activation.check(act)   # an unknown activation fails before the sum, as the Triton add's does
    if act in native.ACT_CODES and native.takes(*xs):
        out = torch.empty_like(xs[0])
        native.library().alx_add(native.pointers(xs), len(xs), out.numel(), native.ACT_CODES[act], native.threads(),
                                 out.data_ptr())
        return out
    out = f32(xs[0]) + f32(xs[1])   # a new tensor in one pass (not a clone and an add)
    for t in xs[2:]:
        out += f32(t)
    return activation.act_fresh(out, act).to(xs[0].dtype)

