"""Triton relu / tanh / sigmoid, forward and backward (the backward from the output y).

Elementwise over the tensor's storage when it is dense (NCHW or channels-last alike: the output keeps
the input's layout), over a contiguous copy otherwise. Math is fp32 whatever the storage dtype.
`apply_act` / `act_grad_from_y` are @triton.jit helpers other kernels call in their epilogues (conv);
`act_in_place` is the host-side epilogue of a layer that has already written its output (fc).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

ACT_CODES = {"none": 0, "relu": 1, "tanh": 2, "sigmoid": 3}
BLOCK = 1024


def act_code(act: str) -> int:
    try:
        return ACT_CODES[act]
    except KeyError:
        raise ValueError(f"unknown activation {act!r} (expected none, relu, tanh or sigmoid)") from None


@triton.jit
def apply_act(x, ACT: tl.constexpr):
    """fp32 in, fp32 out. tanh and sigmoid through exp2 of a non-positive argument: no overflow."""
    if ACT == 1:
        x = tl.where(x > 0, x, 0.0)
    elif ACT == 2:
        e = tl.exp2(-2.0 * 1.4426950408889634 * tl.abs(x))
        t = (1.0 - e) / (1.0 + e)
        x = tl.where(x < 0, -t, t)
    elif ACT == 3:
        e = tl.exp2(-1.4426950408889634 * tl.abs(x))
        sp = 1.0 / (1.0 + e)
        x = tl.where(x < 0, 1.0 - sp, sp)
    return x


@triton.jit
def act_grad_from_y(dy, y, ACT: tl.constexpr):
    if ACT == 1:
        dy = tl.where(y > 0, dy, 0.0)
    elif ACT == 2:
        dy = dy * (1.0 - y * y)
    elif ACT == 3:
        dy = dy * y * (1.0 - y)
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


def _launch(x: torch.Tensor, y: torch.Tensor, code: int) -> torch.Tensor:
    n = x.numel()
    if n:
        _act_fwd_kernel[(triton.cdiv(n, BLOCK),)](x, y, n, ACT=code, BLOCK=BLOCK)
    return y


def act(x: torch.Tensor, *, act: str) -> torch.Tensor:
    code = act_code(act)
    if code == 0:
        return x
    x = _dense_or_contiguous(x)
    return _launch(x, torch.empty_like(x), code)


def act_in_place(t: torch.Tensor, *, act: str) -> torch.Tensor:
    """The activation written over t's own storage (t dense, e.g. a fresh GEMM output): no second buffer."""
    code = act_code(act)
    if code == 0:
        return t
    if not _dense(t):
        raise ValueError("act_in_place: the tensor must be dense (contiguous or channels-last)")
    return _launch(t, t, code)


def act_backward(dy: torch.Tensor, y: torch.Tensor, *, act: str) -> torch.Tensor:
    code = act_code(act)
    if code == 0:
        return dy
    dy, y = _dense_or_contiguous(dy), _dense_or_contiguous(y)
    if dy.stride() != y.stride():
        dy, y = dy.contiguous(), y.contiguous()
    dx = torch.empty_like(dy)
    n = dy.numel()
    if n:
        _act_bwd_kernel[(triton.cdiv(n, BLOCK),)](dy, y, dx, n, ACT=code, BLOCK=BLOCK)
    return dx
