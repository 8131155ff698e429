"""Reference elementwise ops: `add`, the sum of same-shaped tensors left to right (the Triton kernel's
order), then its activation."""
from __future__ import annotations

import torch

from ..shared import check_add_inputs
from ._common import f32

_ACT_ = {"relu": torch.relu_, "tanh": torch.tanh_, "sigmoid": torch.sigmoid_}


def add(*xs: torch.Tensor, act: str = "none") -> torch.Tensor:
    check_add_inputs(xs)
    if act != "none" and act not in _ACT_:
        raise ValueError(f"unknown activation {act!r}")   # as the Triton add's act_code refuses it
    out = f32(xs[0]) + f32(xs[1])   # a new tensor in one pass (not a clone and an add)
    for t in xs[2:]:
        out += f32(t)
    if act != "none":
        _ACT_[act](out)             # the fresh sum, in place
    return out.to(xs[0].dtype)
