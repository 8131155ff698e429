"""Triton dropout (kernels/dropout.py): the mask must be bit-identical to the reference's.

Oracle: kernels/reference/dropout.py's dropout / dropout_backward (whose hash test_reference.py
checks against Python integers). Tolerance: exact equality of outputs in fp32 (same mask, same
single multiply by 1/(1-p)).
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alexnetc.kernels import dropout as T
from alexnetc.kernels.reference import dropout as R

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@settings(max_examples=15, deadline=None)
@given(shape=st.sampled_from([(1,), (7,), (3, 1000), (2, 3, 5, 7), (1025,)]),
       p=st.sampled_from([0.1, 0.5, 0.9, 1e-7]), seed=st.integers(0, 2**31 - 2), step=st.integers(0, 2**40))
def test_dropout_bit_identical_to_reference(shape, p, seed, step):
    """oracle: reference.dropout on the same (seed, step): equal element for element."""
    x = torch.randn(shape, device=DEVICE)
    y = T.dropout(x, p=p, seed=seed, step=step)
    assert torch.equal(y.cpu(), R.dropout(x.cpu(), p=p, seed=seed, step=step))
    dx = T.dropout_backward(x, p=p, seed=seed, step=step)
    assert torch.equal(dx, y)


def test_dropout_indexes_logical_positions():
    """oracle: reference mask on the contiguous tensor: a transposed view drops its own logical elements."""
    x = torch.randn(40, 30, device=DEVICE).t()
    y = T.dropout(x, p=0.5, seed=3, step=9)
    assert torch.equal(y.cpu(), R.dropout(x.contiguous().cpu(), p=0.5, seed=3, step=9))


def test_dropout_rate_steps_and_edges():
    """oracle: Binomial keep rate within 5 sigma; p = 0 is identity, p = 1 zeros; steps give new masks."""
    n = 100_000
    x = torch.ones(n, device=DEVICE)
    y = T.dropout(x, p=0.5, seed=1, step=0)
    kept = (y != 0).double().mean().item()
    assert abs(kept - 0.5) < 5 * (0.25 / n) ** 0.5
    assert torch.equal(y[y != 0], torch.full_like(y[y != 0], 2.0))
    assert ((T.dropout(x, p=0.5, seed=1, step=1) != 0) != (y != 0)).double().mean().item() > 0.4
    assert torch.equal(T.dropout(x, p=0.0, seed=1, step=0), x)
    assert T.dropout(x, p=1.0, seed=1, step=0).eq(0).all()
    with pytest.raises(ValueError):
        T.dropout(x, p=1.5, seed=1, step=0)


@pytest.mark.parametrize("rows", [(0, 3), (3, 5), (5, 8), (7, 8)])
def test_dropout_offset_gives_a_shard_the_rows_of_the_whole_batch(rows):
    """oracle: the mask of the whole (8, 300) batch: a shard of rows [a, b) with offset a*300 drops
    exactly the elements the whole batch drops there, in both backends (data-parallel exactness)."""
    a, b = rows
    x = torch.randn(8, 300, device=DEVICE)
    whole = T.dropout(x, p=0.5, seed=5, step=12)
    part = T.dropout(x[a:b], p=0.5, seed=5, step=12, offset=a * 300)
    assert torch.equal(part, whole[a:b])
    assert torch.equal(part.cpu(), R.dropout(x[a:b].cpu(), p=0.5, seed=5, step=12, offset=a * 300))
    assert torch.equal(T.dropout_backward(x[a:b], p=0.5, seed=5, step=12, offset=a * 300), part)
    assert torch.equal(R.dropout(x.cpu(), p=0.5, seed=5, step=12, offset=0), R.dropout(x.cpu(), p=0.5, seed=5, step=12))


def test_dropout_offset_past_32_bits_and_negative():
    """oracle: reference.dropout_hash_of on the explicit indices offset + i, for offsets crossing 2^32."""
    x = torch.randn(2000, device=DEVICE)
    for off in (2**31 - 7, 2**32 - 1000, 2**40 + 3):
        y = T.dropout(x, p=0.5, seed=9, step=1, offset=off)
        idx = torch.arange(off, off + 2000, dtype=torch.int64)
        keep = (R.dropout_hash_of(idx, 9, 1) >> 8) >= R.dropout_threshold(0.5)
        assert torch.equal((y.cpu() != 0), keep & (x.cpu() != 0))
        assert torch.equal(y.cpu(), R.dropout(x.cpu(), p=0.5, seed=9, step=1, offset=off))
    with pytest.raises(ValueError):
        T.dropout(x, p=0.5, seed=1, step=0, offset=-1)
    with pytest.raises(ValueError):
        R.dropout(x.cpu(), p=0.5, seed=1, step=0, offset=-1)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dropout_half_precision_same_mask(dtype):
    """oracle: reference mask; values: x * 2 rounded to the dtype (exact for p = 0.5)."""
    x = torch.randn(128, 4096, device="cuda").to(dtype)
    y = T.dropout(x, p=0.5, seed=11, step=5)
    assert torch.equal(y.cpu(), R.dropout(x.cpu(), p=0.5, seed=11, step=5))
