"""Triton softmax + cross-entropy loss (kernels/loss.py: softmax_loss, softmax_loss_backward).

Oracle: float64 F.cross_entropy (mean) / F.softmax and autograd of the mean loss times dloss.
Tolerance: loss rtol 1e-5 / atol 1e-5, prob and gradients atol 1e-6 (fp32 exp2/log2).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from alexnetc.kernels import loss as T

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _check(z, lab, dloss, loss_tol=1e-5, tol=1e-6):
    loss, prob = T.softmax_loss(z, lab)
    assert loss.dtype == torch.float32 and loss.dim() == 0 and prob.dtype == torch.float32
    zd = z.double().requires_grad_()
    ref = F.cross_entropy(zd, lab)
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=loss_tol, atol=loss_tol)
    torch.testing.assert_close(prob.double(), F.softmax(zd, 1).detach(), rtol=tol, atol=tol)
    (g,) = torch.autograd.grad(ref * float(dloss), zd)
    dz = T.softmax_loss_backward(prob, lab, dloss)
    torch.testing.assert_close(dz.double(), g, rtol=tol, atol=tol)
    return prob


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 5), u=st.sampled_from([1, 2, 10, 1000, 4097, 9000]), scale=st.sampled_from([1.0, 30.0]),
       dloss=st.sampled_from([1.0, 0.25]), as_tensor=st.booleans())
def test_softmax_loss_matches_aten(n, u, scale, dloss, as_tensor):
    """oracle: float64 ATen; widths beyond one 4096 block exercise the online max/sum."""
    z = torch.randn(n, u, device=DEVICE) * scale
    lab = torch.randint(0, u, (n,), device=DEVICE)
    _check(z, lab, torch.tensor(dloss, device=DEVICE) if as_tensor else dloss)


def test_softmax_loss_is_stable_for_huge_logits():
    """oracle: float64 ATen; logits of 1e4 would overflow a naive exp in fp32."""
    z = torch.tensor([[1e4, 0.0, -1e4], [-5e3, 5e3, 5e3]], device=DEVICE)
    lab = torch.tensor([1, 2], device=DEVICE)
    _check(z, lab, 1.0, loss_tol=1e-3)


def test_softmax_loss_strided_logits():
    """oracle: float64 ATen on a non-contiguous (column-sliced) logits view."""
    z = torch.randn(6, 20, device=DEVICE)[:, ::2]
    _check(z, torch.arange(6, device=DEVICE) % 10, 1.0)


def test_softmax_loss_backward_default_dloss_is_one():
    """oracle: the same call with dloss=1.0 spelled out (bit-equal): the graph's loss head seeds 1."""
    z = torch.randn(4, 10, device=DEVICE)
    lab = torch.tensor([0, 3, 9, 3], device=DEVICE)
    prob = _check(z, lab, 1.0)
    assert torch.equal(T.softmax_loss_backward(prob, lab), T.softmax_loss_backward(prob, lab, 1.0))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_softmax_loss_half_logits(dtype):
    """oracle: float64 ATen on the same 16-bit logits; fp32 math inside, so tight tolerances hold."""
    z = (torch.randn(128, 1000, device="cuda") * 4).to(dtype)
    _check(z, torch.randint(0, 1000, (128,), device="cuda"), 1.0)
