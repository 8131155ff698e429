"""Triton activations, forward and backward (the backward from the output y).

Each activation of the op registry (`compiler/ops/activation.py`) is two @triton.jit functions here,
``<name>(x)`` and ``<name>_grad(dy, y)``, fp32 in and out; `apply_act` / `act_grad_from_y` dispatch to
them on the activation's name, a compile-time constant, so every kernel that fuses an activation
(conv, batch norm, add) calls the same code. An activation the registry has and this module does not
is an import error (kernels/backend.py checks the two functions) and, should a dispatch branch be
missing, a compile-time error (`tl.static_assert`): never the identity.

Elementwise over the tensor's storage when it is dense (NCHW or channels-last alike: the output keeps
the input's layout), over a contiguous copy otherwise. Math is fp32 whatever the storage dtype.
`act_in_place` is the host-side epilogue of a layer that has already written its output (fc).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..compiler.ops.activation import ACTIVATIONS

BLOCK = 1024


def act_code(act: str) -> str:
    """The compile-time name the kernels dispatch on: `act` itself, once known to the registry."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r} (expected one of {', '.join(ACTIVATIONS)})")
    return act


@triton.jit
def relu(x):
    return tl.where(x > 0, x, 0.0)


@triton.jit
def relu_grad(dy, y):
    return tl.where(y > 0, dy, 0.0)


@triton.jit
def tanh(x):
    """Through exp2 of a non-positive argument: no overflow."""
    e = tl.exp2(-2.0 * 1.4426950408889634 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def tanh_grad(dy, y):
    return dy * (1.0 - y * y)


@triton.jit
def sigmoid(x):
    """Through exp2 of a non-positive argument: no overflow."""
    e = tl.exp2(-1.4426950408889634 * tl.abs(x))
    sp = 1.0 / (1.0 + e)
    return tl.where(x < 0, 1.0 - sp, sp)


@triton.jit
def sigmoid_grad(dy, y):
    return dy * y * (1.0 - y)


@triton.jit
def softplus(x):
    """max(x, 0) + log(1 + exp(-|x|)): no overflow; exp(-|x|) below 1e-4 takes log1p's series."""
    e = tl.exp2(-1.4426950408889634 * tl.abs(x))
    return tl.maximum(x, 0.0) + tl.where(e < 1e-4, e * (1.0 - 0.5 * e), tl.log(1.0 + e))


@triton.jit
def softplus_grad(dy, y):
    """dy * sigmoid(x) = dy * (1 - exp(-y)); below 1e-4, expm1's series (1 - exp(-y) would cancel)."""
    return dy * tl.where(y < 1e-4, y * (1.0 - 0.5 * y), 1.0 - tl.exp2(-1.4426950408889634 * y))


@triton.jit
def apply_act(x, ACT: tl.constexpr):
    """fp32 in, fp32 out: the activation named ACT ("none": x)."""
    if ACT == "relu":
        x = relu(x)
    elif ACT == "tanh":
        x = tanh(x)
    elif ACT == "sigmoid":
        x = sigmoid(x)
    elif ACT == "softplus":
        x = softplus(x)
    else:
        tl.static_assert(ACT == "none", "this activation has no branch in kernels/activation.py apply_act")
    return x


@triton.jit
def act_grad_from_y(dy, y, ACT: tl.constexpr):
    if ACT == "relu":
        dy = relu_grad(dy, y)
    elif ACT == "tanh":
        dy = tanh_grad(dy, y)
    elif ACT == "sigmoid":
        dy = sigmoid_grad(dy, y)
    elif ACT == "softplus":
        dy = softplus_grad(dy, y)
    else:
        tl.static_assert(ACT == "none", "this activation has no branch in kernels/activation.py act_grad_from_y")
    return dy


@triton.jit
def _act_fwd_kernel(x_ptr, y_ptr, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, apply_act(x, ACT).to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _act_bwd_kernel(dy_ptr, y_ptr, dx_ptr, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    dy = tl.load(dy_ptr + offs, mask=m, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(dx_ptr + offs, act_grad_from_y(dy, y, ACT).to(dx_ptr.dtype.element_ty), mask=m)


def _dense(t: torch.Tensor) -> bool:
    """Storage is exactly the elements, in some permutation of dims (so a flat walk covers them once)."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def _dense_or_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if _dense(t) else t.contiguous()


def _launch(x: torch.Tensor, y: torch.Tensor, code: str) -> torch.Tensor:
    n = x.numel()
    if n:
        _act_fwd_kernel[(triton.cdiv(n, BLOCK),)](x, y, n, ACT=code, BLOCK=BLOCK)
    return y


def act(x: torch.Tensor, *, act: str) -> torch.Tensor:
    code = act_code(act)
    if code == "none":
        return x
    x = _dense_or_contiguous(x)
    return _launch(x, torch.empty_like(x), code)


def act_in_place(t: torch.Tensor, *, act: str) -> torch.Tensor:
    """The activation written over t's own storage (t dense, e.g. a fresh GEMM output): no second buffer."""
    code = act_code(act)
    if code == "none":
        return t
    if not _dense(t):
        raise ValueError("act_in_place: the tensor must be dense (contiguous or channels-last)")
    return _launch(t, t, code)


def act_backward(dy: torch.Tensor, y: torch.Tensor, *, act: str) -> torch.Tensor:
    code = act_code(act)
    if code == "none":
        return dy
    dy, y = _dense_or_contiguous(dy), _dense_or_contiguous(y)
    if dy.stride() != y.stride():
        dy, y = dy.contiguous(), y.contiguous()
    dx = torch.empty_like(dy)
    n = dy.numel()
    if n:
        _act_bwd_kernel[(triton.cdiv(n, BLOCK),)](dy, y, dx, n, ACT=code, BLOCK=BLOCK)
    return dx
