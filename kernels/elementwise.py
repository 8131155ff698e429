"""Triton elementwise ops: `add`, the sum of two or more same-shaped tensors.

Inputs are summed left to right in fp32, one kernel launch per extra input: the first launch writes
x0 + x1, the next ones add x_k into that result in place, so the order (part of the contract: fp32
addition is not associative) is the reference's. Half-precision inputs are rounded once, at the end
(the partial sums of three or more stay fp32), as the reference does. Tensors are read flat, so inputs are made contiguous
(a channels-last input costs a copy); the output is contiguous. The activation (a ResNet block's relu,
folded in) is applied in the last launch's epilogue. The backward is the identity fan-out (every input
receives dy), which needs no kernel; the activation's backward is `act_backward`'s.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .activation import act_code, apply_act
from .shared import check_add_inputs, fp32_partial_sums

BLOCK = 1024


@triton.jit
def _add2_kernel(a_ptr, b_ptr, y_ptr, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    a = tl.load(a_ptr + offs, mask=m, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, apply_act(a + b, ACT).to(y_ptr.dtype.element_ty), mask=m)


def add(*xs: torch.Tensor, act: str = "none") -> torch.Tensor:
    check_add_inputs(xs)
    y = torch.empty(xs[0].shape, dtype=xs[0].dtype, device=xs[0].device)
    n = y.numel()
    if n == 0:
        return y
    grid = (triton.cdiv(n, BLOCK),)
    # Partial sums of three or more half-precision inputs stay in an fp32 buffer: written back to y
    # between launches they would be rounded to bf16 once per input instead of once.
    partial = torch.empty(y.shape, dtype=torch.float32, device=y.device) if fp32_partial_sums(xs) else y
    acc = xs[0].contiguous()
    for k, t in enumerate(xs[1:], 2):
        last = k == len(xs)
        out = y if last else partial
        _add2_kernel[grid](acc, t.contiguous(), out, n, ACT=act_code(act) if last else "none", BLOCK=BLOCK)
        acc = out
    return y
