"""Triton softmax + cross-entropy: forward (mean loss and probabilities) and backward.

One program per row (AlexNet: 128 rows of 1000 logits). The row is read in BLOCK-wide chunks with
an online max/sum (so any width works), then read again to write the probabilities: two reads of
the logits, one write of probs. loss_i = log(sum_j exp(z_ij - m_i)) + m_i - z_i,label, all in fp32;
the batch mean is a deterministic torch reduction over the N per-row losses (no atomics).
Probabilities are returned in fp32 whatever the logits' dtype: the backward subtracts 1 from them.
Backward: dlogits = (probs - onehot) * dloss / N, with dloss read from device memory (no host sync).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

@triton.jit
def _xent_fwd_kernel(z_ptr, lab_ptr, p_ptr, loss_ptr, U, zs0, zs1, ps0,
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
def _xent_bwd_kernel(p_ptr, lab_ptr, dl_ptr, g_ptr, U, inv_n, ps0, gs0, BLOCK: tl.constexpr):
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
        raise ValueError(f"softmax_cross_entropy expects (N, classes) logits, got {tuple(logits.shape)}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)}")


def softmax_cross_entropy(logits, labels):
    """(mean loss (fp32 scalar), probs (N, U) fp32). Labels outside [0, U) are the caller's error."""
    _check_labels(logits, labels)
    N, U = logits.shape
    probs = torch.empty((N, U), dtype=torch.float32, device=logits.device)
    losses = torch.empty((N,), dtype=torch.float32, device=logits.device)
    if N and U:
        block = min(4096, triton.next_power_of_2(U))
        _xent_fwd_kernel[(N,)](logits, labels.contiguous(), probs, losses, U, logits.stride(0), logits.stride(1),
                               probs.stride(0), BLOCK=block)
    return losses.mean(), probs


def softmax_cross_entropy_backward(probs, labels, dloss):
    _check_labels(probs, labels)
    probs = probs.contiguous()
    N, U = probs.shape
    dl = torch.as_tensor(dloss, dtype=torch.float32, device=probs.device).reshape(1)
    g = torch.empty_like(probs)
    if N and U:
        block = min(1024, triton.next_power_of_2(U))
        _xent_bwd_kernel[(N, triton.cdiv(U, block))](probs, labels.contiguous(), dl, g, U, 1.0 / N,
                                                     probs.stride(0), g.stride(0), BLOCK=block)
    return g
