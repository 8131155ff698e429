"""The reference backend's CPU map layout (kernels/reference/_common.py `maps`: channels-last) and the
computations chosen for it. Oracles: ATen's NCHW results (F.conv2d and friends on contiguous maps)
to fp32 tolerances, and bit-for-bit equality where the same sums are formed in another order-free way."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from alexnetc.kernels.reference import _common, conv, pool

CL = torch.channels_last


def test_maps_are_channels_last_on_the_cpu_even_with_one_channel():
    x = torch.randn(2, 1, 5, 7)
    m = _common.maps(x)
    assert m.stride() == (35, 1, 7, 1) and torch.equal(m, x)
    y = F.conv2d(m, torch.randn(4, 1, 3, 3))
    assert y.is_contiguous(memory_format=CL) and not y.is_contiguous()   # ATen read the strides as NHWC
    assert _common.maps(torch.randn(3, 4)).shape == (3, 4)   # vectors stay as they are


def test_conv_and_pool_keep_maps_channels_last_and_match_nchw():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(4, 6, 11, 11, generator=g), torch.randn(8, 3, 3, 3, generator=g)
    y = conv.conv(x, w, None, stride=2, pad=1, num_group=2, out_size=6, act="relu")
    assert y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y, torch.relu(F.conv2d(x, w, stride=2, padding=1, groups=2)), rtol=1e-5, atol=1e-5)
    p, arg = pool.maxpool(y, kernel=3, stride=2, pad=0, out_size=3)
    assert p.is_contiguous(memory_format=CL) and arg.is_contiguous(memory_format=CL)
    torch.testing.assert_close(p, F.max_pool2d(y.contiguous(), 3, 2, ceil_mode=True))
    dx = pool.maxpool_backward(torch.ones_like(p), arg, in_hw=6, kernel=3, stride=2, pad=0)
    assert dx.is_contiguous(memory_format=CL)
    yn = y.detach().contiguous().requires_grad_()
    (ref,) = torch.autograd.grad(F.max_pool2d(yn, 3, 2, ceil_mode=True).sum(), yn)
    assert torch.equal(dx, ref)


@pytest.mark.parametrize("stride,hw,groups", [(2, 28, 1), (2, 13, 1), (3, 10, 2), ((2, 1), 9, 1)])
def test_strided_pointwise_data_gradient_is_the_transposed_convolution_bit_for_bit(stride, hw, groups):
    g = torch.Generator().manual_seed(1)
    sh, sw = stride if isinstance(stride, tuple) else (stride, stride)
    w = torch.randn(12, 8 // groups, 1, 1, generator=g)
    P, Q = (hw - 1) // sh + 1, (hw - 1) // sw + 1
    dy = torch.randn(3, 12, P, Q, generator=g)
    dx = conv.conv_backward_data(dy, w, in_hw=hw, stride=stride, pad=0, num_group=groups)
    ref = torch.nn.grad.conv2d_input((3, 8, hw, hw), w, dy, stride=(sh, sw), groups=groups)
    assert dx.is_contiguous(memory_format=CL)
    assert torch.equal(dx, ref)
