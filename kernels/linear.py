"""Fully connected layers and the bias gradient: cuBLAS GEMMs through torch.matmul, our activation.

The GEMMs are cuBLAS's (the issue allows it; fc6-fc8 are plain GEMMs cuBLAS already runs near peak).
The bias rides in the GEMM (addmm's epilogue) and the activation is applied in place by the Triton
kernel from `activation.py`, so the layer writes its output once more at most. Weight and bias
gradients are returned in fp32: half-precision inputs are upcast first so the products are not
rounded to 16 bits before they reach the optimizer (the fc inputs are small next to the weights).
"""
from __future__ import annotations

import torch

from .activation import act_code, act_forward


def linear(x, w, b, act):
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"linear: x {tuple(x.shape)} and w {tuple(w.shape)} do not give (N, F) x (U, F)")
    code = act_code(act)
    w = w.to(x.dtype)
    y = torch.addmm(b.to(x.dtype), x, w.t()) if b is not None else torch.mm(x, w.t())
    return act_forward(y, act, out=y) if code else y


def linear_backward_data(dy, w):
    return torch.mm(dy, w.to(dy.dtype))


def linear_backward_weight(dy, x):
    return torch.mm(dy.float().t(), x.float())


def bias_backward(dy):
    dims = [d for d in range(dy.dim()) if d != 1]
    return dy.sum(dim=dims, dtype=torch.float32)
