"""Triton softmax + cross-entropy loss: `softmax_loss` (mean loss and prob) and its backward.

One program per row (AlexNet: 128 rows of 1000 logits). The row is read in BLOCK-wide chunks with
an online max/sum (so any width works), then read again to write the probabilities: two reads of
the logits, one write of prob. loss_i = log(sum_j exp(z_ij - m_i)) + m_i - z_i,label, all in fp32;
the batch mean is a deterministic torch reduction over the N per-row losses (no atomics).
prob is returned in fp32 whatever the logits' dtype: the backward subtracts 1 from it.
Backward: dlogits = (prob - onehot) * dloss / N, with dloss read from device memory (no host sync).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _softmax_loss_fwd_kernel(z_ptr, lab_ptr, p_ptr, loss_ptr, U, zs0, zs1, ps0,
                     BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    zrow = z_ptr + row * zs0
    cols = tl.arange(0, BLOCK)
    m = tl.full((BLOCK,), float("-inf"), tl.float32)
    s = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, U, BLOCK):
        cc = start + cols
        z = tl.load(zrow + cc.to(tl.int64) * zs1, mask=cc < U, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, z)
        # lanes that have seen only -inf (padding) subtract 0 instead: exp2(-inf) = 0, never inf - inf
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp2((m - m_ref) * 1.4426950408889634) + tl.exp2((z - m_ref) * 1.4426950408889634)
        m = m_new
    mx = tl.max(m, axis=0)
    total = tl.sum(s * tl.exp2((m - mx) * 1.4426950408889634), axis=0)
    inv = 1.0 / total
    for start in range(0, U, BLOCK):
        cc = start + cols
        cm = cc < U
        z = tl.load(zrow + cc.to(tl.int64) * zs1, mask=cm, other=float("-inf")).to(tl.float32)
        tl.store(p_ptr + row * ps0 + cc, tl.exp2((z - mx) * 1.4426950408889634) * inv, mask=cm)
    lab = tl.load(lab_ptr + row).to(tl.int64)
    z_lab = tl.load(zrow + lab * zs1).to(tl.float32)
    tl.store(loss_ptr + row, tl.log2(total) * 0.6931471805599453 + mx - z_lab)


@triton.jit
def _softmax_loss_bwd_kernel(p_ptr, lab_ptr, dl_ptr, g_ptr, U, inv_n, ps0, gs0, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cc = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    cm = cc < U
    lab = tl.load(lab_ptr + row).to(tl.int64)
    coef = tl.load(dl_ptr).to(tl.float32) * inv_n
    pr = tl.load(p_ptr + row * ps0 + cc, mask=cm, other=0.0).to(tl.float32)
    g = (pr - tl.where(cc.to(tl.int64) == lab, 1.0, 0.0)) * coef
    tl.store(g_ptr + row * gs0 + cc, g.to(g_ptr.dtype.element_ty), mask=cm)


def _check_labels(logits, labels):
    if logits.dim() != 2:
        raise ValueError(f"softmax_loss expects (N, classes) logits, got {tuple(logits.shape)}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)}")


def softmax_loss(logits, labels):
    """(mean loss (fp32 scalar), prob (N, U) fp32). Labels outside [0, U) are the caller's error."""
    _check_labels(logits, labels)
    N, U = logits.shape
    prob = torch.empty((N, U), dtype=torch.float32, device=logits.device)
    losses = torch.empty((N,), dtype=torch.float32, device=logits.device)
    if N and U:
        block = min(4096, triton.next_power_of_2(U))
        _softmax_loss_fwd_kernel[(N,)](logits, labels.contiguous(), prob, losses, U,
                                       logits.stride(0), logits.stride(1), prob.stride(0), BLOCK=block)
    return losses.mean(), prob


def softmax_loss_backward(prob, labels, dloss=1.0):
    """(prob - onehot) * dloss / N; `dloss` a number or a 0-d tensor (read on the device, no sync)."""
    _check_labels(prob, labels)
    prob = prob.contiguous()
    N, U = prob.shape
    dl = torch.as_tensor(dloss, dtype=torch.float32, device=prob.device).reshape(1)
    g = torch.empty_like(prob)
    if N and U:
        block = min(1024, triton.next_power_of_2(U))
        _softmax_loss_bwd_kernel[(N, triton.cdiv(U, block))](prob, labels.contiguous(), dl, g, U, 1.0 / N,
                                                             prob.stride(0), g.stride(0), BLOCK=block)
    return g
