"""Fully connected layer and its gradients: cuBLAS GEMMs through torch.mm, our activation; the bias gradient.

The GEMMs are cuBLAS's: fc6-fc8 are plain GEMMs that cuBLAS already runs near peak, a Triton GEMM
would only match it. The bias rides in the GEMM (addmm's epilogue) and the activation is applied in
place by the Triton kernel of `activation.py`, so the layer writes its output once more at most.
Weight and bias gradients are returned in fp32: half-precision inputs are upcast first so the
products are not rounded to 16 bits before they reach the optimizer.

`bias_backward` lives here but serves conv too: it is a sum over every dim but 1, whatever the rank.
"""
from __future__ import annotations

import torch

from . import activation


def fc(x, w, b, *, act):
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"fc: x {tuple(x.shape)} and w {tuple(w.shape)} do not give (N, F) x (U, F)")
    activation.act_code(act)  # an unknown name fails before the GEMM runs
    w = w.to(x.dtype)
    y = torch.addmm(b.to(x.dtype), x, w.t()) if b is not None else torch.mm(x, w.t())
    return activation.act_in_place(y, act=act)


def fc_backward_data(dy, w):
    return torch.mm(dy, w.to(dy.dtype))


def fc_backward_weight(dy, x):
    return torch.mm(dy.float().t(), x.float())


def bias_backward(dy):
    """db (dy.shape[1],) in fp32: the sum over batch (and pixels, for a conv's 4-d dy)."""
    dims = [d for d in range(dy.dim()) if d != 1]
    return dy.sum(dim=dims, dtype=torch.float32)
