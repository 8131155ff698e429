"""Reference relu / tanh / sigmoid, forward and backward from the output y."""
from __future__ import annotations

import torch

from ._common import up


def _unknown(act: str) -> ValueError:
    return ValueError(f"unknown activation {act!r} (expected none, relu, tanh or sigmoid)")


def act(x: torch.Tensor, *, act: str) -> torch.Tensor:
    if act == "none":
        return x
    if act == "relu":
        return torch.relu(x)
    if act == "tanh":
        return torch.tanh(up(x)).to(x.dtype)
    if act == "sigmoid":
        return torch.sigmoid(up(x)).to(x.dtype)
    raise _unknown(act)


def act_backward(dy: torch.Tensor, y: torch.Tensor, *, act: str) -> torch.Tensor:
    if act == "none":
        return dy
    if act == "relu":
        return torch.ops.aten.threshold_backward(dy, y, 0)   # dy where y > 0, else 0: one pass
    d, o = up(dy), up(y)
    if act == "tanh":
        return (d * (1 - o * o)).to(dy.dtype)
    if act == "sigmoid":
        return (d * o * (1 - o)).to(dy.dtype)
    raise _unknown(act)
