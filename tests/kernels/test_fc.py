"""Fully connected layer of the Triton backend (kernels/fc.py: cuBLAS GEMM + Triton activation) and
`bias_backward`, which fc.py owns for conv and fc alike.

Oracle: float64 F.linear and its autograd; for bias_backward a float64 sum over every dim but 1.
Tolerance: rtol/atol 1e-4 in fp32 (K up to 300 products; TF32 is off by default for matmul); 3e-2
for bf16/fp16 on the GPU.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from alexnetc.compiler.ops.activation import ACTIVATIONS, apply_act
from alexnetc.kernels import fc as T

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _check(n, f, u, act, bias, dtype, tol):
    x = torch.randn(n, f, device=DEVICE).to(dtype)
    w = (torch.randn(u, f, device=DEVICE) * f ** -0.5).to(dtype)
    b = torch.randn(u, device=DEVICE).to(dtype) if bias else None
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    pre = F.linear(xd, wd, None if b is None else b.double())
    torch.testing.assert_close(T.fc(x, w, b, act=act).double(), apply_act(pre, act).detach(), rtol=tol, atol=tol)
    dy = torch.randn(n, u, device=DEVICE).to(dtype)
    gx, gw = torch.autograd.grad(pre, (xd, wd), dy.double())
    torch.testing.assert_close(T.fc_backward_data(dy, w).double(), gx, rtol=tol, atol=tol)
    dw = T.fc_backward_weight(dy, x)
    assert dw.dtype == torch.float32
    torch.testing.assert_close(dw.double(), gw, rtol=tol, atol=tol * 10)
    db = T.bias_backward(dy)
    assert db.dtype == torch.float32
    torch.testing.assert_close(db.double(), dy.double().sum(0), rtol=tol, atol=tol)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_fc_matches_autograd(act, bias):
    """oracle: float64 F.linear / autograd."""
    _check(5, 37, 11, act, bias, torch.float32, 1e-4)


def test_fc_rejects_bad_shapes_and_activations():
    """oracle: the contract ((N, F) x (U, F) only; the registry's activations)."""
    x, w = torch.randn(2, 3, device=DEVICE), torch.randn(4, 3, device=DEVICE)
    with pytest.raises(ValueError):
        T.fc(x, torch.randn(4, 5, device=DEVICE), None, act="none")
    with pytest.raises(ValueError):
        T.fc(x, w, None, act="gelu")


def test_bias_backward_4d():
    """oracle: float64 sum over N, H, W (a conv's bias gradient)."""
    dy = torch.randn(2, 5, 3, 4, device=DEVICE)
    torch.testing.assert_close(T.bias_backward(dy).double(), dy.double().sum((0, 2, 3)), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fc_half_precision(dtype):
    """oracle: float64 on the same 16-bit inputs; tolerance 3e-2."""
    _check(128, 1024, 256, "relu", True, dtype, 3e-2)
