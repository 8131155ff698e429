"""Triton LRN (kernels/lrn.py) against the reference (kernels/reference/lrn.py) computed in float64.

`alpha` is the effective a' on both sides; the tests derive it from a spec-style (alpha, alpha_over_n)
as the compiler does (alpha / size when alpha_over_n). Without CUDA the kernels run in the Triton
interpreter on small shapes. Tolerances: fp32 kernels vs
the float64 oracle rtol 1e-5 / atol 1e-6 (a handful of fp32 roundings, exp2/log2 pow); fp16/bf16 on
the GPU rtol/atol 1e-2 (16-bit outputs).
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alexnetc.kernels import lrn as T
from alexnetc.kernels.reference import lrn as R

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _args(size, k, alpha, beta, alpha_over_n):
    """The kernels' arguments for a spec's LRN: alpha' = alpha / size when the spec says alpha_over_n."""
    return {"size": size, "k": k, "alpha": alpha / size if alpha_over_n else alpha, "beta": beta}


def _layout(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "channels_last":
        return x.to(memory_format=torch.channels_last)
    if kind == "sliced":  # non-contiguous: every other channel and a cropped width
        big = torch.zeros(x.shape[0], 2 * x.shape[1], x.shape[2], x.shape[3] + 1, dtype=x.dtype, device=x.device)
        big[:, ::2, :, 1:] = x
        return big[:, ::2, :, 1:]
    return x


def _check(x, kw, rtol=1e-5, atol=1e-6):
    y, s = T.lrn(x, **kw)
    yr, sr = R.lrn(x.double(), **kw)
    assert y.shape == x.shape and y.dtype == x.dtype and s.dtype == x.dtype
    torch.testing.assert_close(y.double(), yr, rtol=rtol, atol=atol)
    torch.testing.assert_close(s.double(), sr, rtol=rtol, atol=atol)
    dy = torch.randn(x.shape, device=x.device).to(x.dtype)
    dx = T.lrn_backward(dy, x, y, s, **kw)
    # oracle backward from the same saved tensors, in float64
    dxr = R.lrn_backward(dy.double(), x.double(), y.double(), s.double(), **kw)
    torch.testing.assert_close(dx.double(), dxr, rtol=rtol, atol=atol)
    return y


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 40), h=st.integers(1, 6), w=st.integers(1, 6),
       size=st.sampled_from([1, 3, 5, 7]), alpha_over_n=st.booleans(),
       layout=st.sampled_from(["contiguous", "channels_last", "sliced"]))
def test_lrn_matches_reference(n, c, h, w, size, alpha_over_n, layout):
    """oracle: reference lrn / lrn_backward in float64 (alpha' of both spec conventions, any layout)."""
    x = _layout(torch.randn(n, c, h, w, device=DEVICE) * 4, layout)
    _check(x, _args(size, 2.0, 0.05, 0.75, alpha_over_n))


def test_lrn_alexnet_channels_and_layout_kept():
    """oracle: reference in float64; the paper's constants, 96 channels (two 64-wide channel tiles)."""
    x = torch.relu(torch.randn(1, 96, 3, 3, device=DEVICE) * 10).to(memory_format=torch.channels_last)
    y = _check(x, _args(5, 2.0, 1e-4, 0.75, alpha_over_n=False))
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_lrn_half_precision(dtype, layout):
    """oracle: reference in float64 on the same 16-bit inputs; tolerance 1e-2 (16-bit outputs)."""
    x = _layout((torch.randn(8, 96, 27, 27, device="cuda") * 3).to(dtype), layout)
    _check(x, _args(5, 2.0, 1e-4, 0.75, alpha_over_n=True), rtol=1e-2, atol=1e-2)
