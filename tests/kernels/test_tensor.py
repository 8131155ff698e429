"""Data movement, one implementation for both backends (kernels/tensor.py), against plain torch.

Oracles: torch.flatten / Tensor.view / narrow, a result assembled by index assignment into zeros (concat,
slice_backward), and the left-to-right sum `(x0 + x1) + x2` (add_n). Nothing is computed but add_n's
sums, so every comparison is exact (torch.equal), on contiguous, channels-last and sliced inputs.
"""
from __future__ import annotations

import pytest
import torch

from alexnetc.kernels import tensor as T

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _layouts(x):
    """The same values as contiguous, channels-last and a non-contiguous view (stride 2 along W)."""
    wide = torch.zeros(*x.shape[:3], 2 * x.shape[3], dtype=x.dtype, device=x.device)
    wide[..., ::2] = x
    return [x, x.contiguous(memory_format=torch.channels_last), wide[..., ::2]]


def test_flatten_keeps_the_batch():
    """oracle: torch.flatten(x, 1) (NCHW order, whatever the memory layout)."""
    x = torch.randn(3, 4, 5, 6, device=DEVICE)
    for t in _layouts(x):
        y = T.flatten(t)
        assert y.shape == (3, 120) and torch.equal(y, torch.flatten(x, 1))
    v = torch.randn(2, 7, device=DEVICE)
    assert torch.equal(T.flatten(v), v)


@pytest.mark.parametrize("shape", [(4, 30), [4, 5, 6], (120,)])
def test_reshape_is_per_sample(shape):
    """oracle: x.contiguous().view(N, *shape): `shape` excludes the batch dimension."""
    x = torch.randn(3, 4, 5, 6, device=DEVICE)
    for t in _layouts(x):
        y = T.reshape(t, shape=shape)
        assert torch.equal(y, x.contiguous().view(3, *shape))


def test_concat_joins_channels_in_order():
    """oracle: zeros of the joined shape filled by index assignment, inputs in argument order."""
    a, b, c = (torch.randn(2, k, 3, 3, device=DEVICE) for k in (1, 4, 2))
    want = torch.zeros(2, 7, 3, 3, device=DEVICE)
    want[:, 0:1], want[:, 1:5], want[:, 5:7] = a, b, c
    assert torch.equal(T.concat(a, b, c), want)
    assert torch.equal(T.concat(a), a)
    u, v = torch.randn(4, 3, device=DEVICE), torch.randn(4, 5, device=DEVICE)  # fc units: dim 1 too
    assert torch.equal(T.concat(u, v), torch.hstack([u, v]))


def test_slice_is_a_channel_view():
    """oracle: x.narrow(1, begin, end - begin); the result shares x's storage (no copy)."""
    x = torch.randn(2, 8, 3, 4, device=DEVICE)
    y = T.slice(x, begin=2, end=5)
    assert torch.equal(y, x.narrow(1, 2, 3)) and y.data_ptr() == x[:, 2].data_ptr()


def test_slice_backward_places_the_gradient():
    """oracle: zeros with dy assigned at channels [begin, begin + C); and slice_backward is slice's adjoint:
    <slice(x), dy> == <x, slice_backward(dy)> (float64; the two sums reduce in different orders, so to
    1e-12)."""
    dy = torch.randn(2, 3, 4, 5, device=DEVICE, dtype=torch.float64)
    got = T.slice_backward(dy, begin=2, channels=7)
    want = torch.zeros(2, 7, 4, 5, device=DEVICE, dtype=torch.float64)
    want[:, 2:5] = dy
    assert got.dtype == dy.dtype and torch.equal(got, want)
    x = torch.randn(2, 7, 4, 5, device=DEVICE, dtype=torch.float64)
    torch.testing.assert_close((T.slice(x, begin=2, end=5) * dy).sum(), (x * got).sum(), rtol=1e-12, atol=1e-12)
    v = torch.randn(4, 3, device=DEVICE)  # 2-d (fc units)
    assert torch.equal(T.slice_backward(v, begin=0, channels=5)[:, :3], v)


def test_add_n_sums_left_to_right_into_a_fresh_tensor():
    """oracle: (x0 + x1) + x2 in fp32, bit for bit. The inputs are chosen so that the other order,
    x0 + (x1 + x2), differs: 1e8 + (-1e8 + 1) rounds to 0 in fp32, (1e8 - 1e8) + 1 is 1. No input is
    written to, and one input gives a copy, not the input itself."""
    x0 = torch.full((2, 3), 1e8, device=DEVICE)
    x1 = torch.full((2, 3), -1e8, device=DEVICE)
    x2 = torch.ones(2, 3, device=DEVICE)
    assert not torch.equal((x0 + x1) + x2, x0 + (x1 + x2))  # the oracle can tell the orders apart
    saved = [t.clone() for t in (x0, x1, x2)]
    y = T.add_n(x0, x1, x2)
    assert torch.equal(y, (x0 + x1) + x2)
    assert all(torch.equal(t, s) for t, s in zip((x0, x1, x2), saved))
    one = T.add_n(x2)
    assert torch.equal(one, x2) and one.data_ptr() != x2.data_ptr()
    r = [torch.randn(3, 5, 2, 2, device=DEVICE) for _ in range(4)]
    assert torch.equal(T.add_n(*r), ((r[0] + r[1]) + r[2]) + r[3])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_add_n_of_half_inputs_rounds_once(dtype):
    """oracle: the fp32 sum of the half inputs, rounded to the half dtype once. 1 + u/2 + u/2 (u the
    dtype's ulp at 1) rounded after each add is 1 twice over (ties to even); summed in fp32 it is
    1 + u, which the half dtype holds exactly."""
    u = torch.finfo(dtype).eps
    xs = [torch.full((2, 3), v, dtype=dtype, device=DEVICE) for v in (1.0, u / 2, u / 2)]
    assert torch.equal((xs[0] + xs[1]) + xs[2], xs[0])   # the oracle can tell the roundings apart
    y = T.add_n(*xs)
    assert y.dtype == dtype and torch.equal(y, sum(x.float() for x in xs).to(dtype))
    assert float(y[0, 0]) == 1 + u
