"""Reference activations, forward and backward from the output y, on ATen.

Each activation of the op registry (`compiler/ops/activation.py`) is two functions here, ``<name>(x)``
and ``<name>_grad(dy, y)``; the entries `act` and `act_backward` dispatch to them by name, and so do
the fused epilogues of conv, fc, batch norm and add (`act`, `act_fresh`). An activation the registry
has and this module does not is an import error (kernels/backend.py checks the two functions, and
this module's own table is built from the registry), never the identity.
"""
from __future__ import annotations

import torch

from ...compiler.ops.activation import ACTIVATIONS
from ._common import up


def relu(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x)


def relu_grad(dy: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.threshold_backward(dy, y, 0)   # dy where y > 0, else 0: one pass


def tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


def tanh_grad(dy: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return dy * (1 - y * y)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


def sigmoid_grad(dy: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return dy * y * (1 - y)


def softplus(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softplus(x)


def softplus_grad(dy: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return dy * -torch.expm1(-y)   # sigmoid(x) from y = log(1 + exp(x))


def _table(suffix: str) -> dict:
    missing = [a for a in ACTIVATIONS[1:] if a + suffix not in globals()]
    if missing:
        raise ImportError(f"kernels/reference/activation.py lacks {', '.join(a + suffix for a in missing)}")
    return {a: globals()[a + suffix] for a in ACTIVATIONS[1:]}


_FORWARD, _GRAD = _table(""), _table("_grad")


def check(act: str) -> None:
    """ValueError unless `act` is "none" or an activation of the registry (as the Triton side's act_code)."""
    if act != "none" and act not in _FORWARD:
        raise ValueError(f"unknown activation {act!r} (expected one of {', '.join(ACTIVATIONS)})")


def act(x: torch.Tensor, *, act: str) -> torch.Tensor:
    check(act)
    return x if act == "none" else _FORWARD[act](up(x)).to(x.dtype)


def act_backward(dy: torch.Tensor, y: torch.Tensor, *, act: str) -> torch.Tensor:
    check(act)
    return dy if act == "none" else _GRAD[act](up(dy), up(y)).to(dy.dtype)


def act_fresh(t: torch.Tensor, act_name: str) -> torch.Tensor:
    """`act` of a result the caller has just computed and owns (fp32 or float64): relu over its own
    storage, the others into a new tensor."""
    return torch.relu_(t) if act_name == "relu" else act(t, act=act_name)
