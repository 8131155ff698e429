"""Reference 2-D convolution (F.conv2d) and its data and weight gradients, any `out_size` rounding.

Maps go in and come out in the backend's map layout (`_common.maps`: channels-last on the CPU), where
oneDNN runs all three about 1.5-10x faster than on NCHW, the stride-2 data gradient most of all."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..shared import pair
from . import activation
from ._common import extra, f32, maps, up


def conv(x, w, b, *, stride, pad, num_group, out_size, act):
    (sh, sw), (ph, pw), (P, Q) = pair(stride), pair(pad), pair(out_size)
    R, S = w.shape[2], w.shape[3]
    H, W = x.shape[2], x.shape[3]
    xu = maps(up(x))
    bias = None if b is None else up(b).to(xu.dtype)
    eh, ew = extra(H, P, R, sh, ph), extra(W, Q, S, sw, pw)
    if eh == 0 and ew == 0:  # the usual (floor) case: let ATen pad, no padded copy of the input
        y = F.conv2d(xu, up(w), bias, stride=(sh, sw), padding=(ph, pw), groups=num_group)
    else:
        y = F.conv2d(F.pad(xu, (pw, pw + ew, ph, ph + eh)), up(w), bias, stride=(sh, sw), groups=num_group)
    return maps(activation.act_fresh(y[:, :, :P, :Q], act).to(x.dtype))   # y: this call's own fresh output


def conv_backward_data(dy, w, *, in_hw, stride, pad, num_group):
    (sh, sw), (ph, pw), (H, W) = pair(stride), pair(pad), pair(in_hw)
    P, Q = dy.shape[2], dy.shape[3]
    R, S = w.shape[2], w.shape[3]
    if R == S == 1 and ph == pw == 0 and (sh, sw) != (1, 1) and P == (H - 1) // sh + 1 and Q == (W - 1) // sw + 1:
        return _strided_pointwise_data(dy, w, H, W, sh, sw, num_group)
    if P == (H + 2 * ph - R) // sh + 1 and Q == (W + 2 * pw - S) // sw + 1:
        # floor-sized output: the transposed convolution, the rows and columns no window reached (fewer
        # than the stride) as output padding; no padded intermediate, the same sums as ATen's
        # convolution_backward, which takes up to twice as long at stride 2 on the CPU
        oph, opw = H + 2 * ph - ((P - 1) * sh + R), W + 2 * pw - ((Q - 1) * sw + S)
        return F.conv_transpose2d(maps(up(dy)), up(w), stride=(sh, sw), padding=(ph, pw),
                                  output_padding=(oph, opw), groups=num_group).to(dy.dtype)
    # Gradient w.r.t. the padded (and ceil-extended) input, then cut out the real input.
    full = F.conv_transpose2d(maps(up(dy)), up(w), stride=(sh, sw), groups=num_group)
    fh, fw = full.shape[2], full.shape[3]
    full = F.pad(full, (0, max(0, W + 2 * pw - fw), 0, max(0, H + 2 * ph - fh)))
    return maps(full[:, :, ph:ph + H, pw:pw + W].to(dy.dtype))


def _strided_pointwise_data(dy, w, H, W, sh, sw, num_group):
    """A strided 1x1 convolution's data gradient (a ResNet projection): each input cell gets at most one
    window's product, so the 1x1 transposed convolution at stride 1 placed on every sh-th row and sw-th
    column of zeros is the strided transposed convolution bit for bit, at a third of oneDNN's time."""
    g = F.conv_transpose2d(maps(up(dy)), up(w), groups=num_group).to(dy.dtype)
    dx = torch.empty((dy.shape[0], g.shape[1], H, W), dtype=dy.dtype, device=dy.device,
                     memory_format=torch.channels_last if g.device.type == "cpu" else torch.contiguous_format)
    dx.zero_()[:, :, ::sh, ::sw] = g
    return dx


def conv_backward_weight(dy, x, *, kernel, stride, pad, num_group):
    (sh, sw), (ph, pw), (R, S) = pair(stride), pair(pad), pair(kernel)
    w_shape = (dy.shape[1], x.shape[1] // num_group, R, S)
    P, Q = dy.shape[2], dy.shape[3]
    H, W = x.shape[2], x.shape[3]
    if P == (H + 2 * ph - R) // sh + 1 and Q == (W + 2 * pw - S) // sw + 1:
        # floor-sized output: ATen pads internally
        return _weight_grad(maps(f32(x)), w_shape, maps(f32(dy)), (sh, sw), (ph, pw), num_group)
    xp = F.pad(maps(f32(x)), (pw, pw + extra(W, Q, S, sw, pw), ph, ph + extra(H, P, R, sh, ph)))
    # out_size may be below the floor size (a ceil-rounded last window that would start in the
    # padding is dropped): keep exactly the rows/columns the P x Q windows read
    xp = xp[:, :, :(P - 1) * sh + R, :(Q - 1) * sw + S]
    return _weight_grad(xp, w_shape, maps(f32(dy)), (sh, sw), (0, 0), num_group)


def _weight_grad(x, w_shape, dy, stride, pad, num_group):
    """conv2d_weight, in the weights' own (contiguous) layout whatever layout the maps were in.

    A strided 1x1 kernel gets the cells its windows read (every sh-th row and sw-th column of the padded
    input, P x Q of them) at stride 1: the same products and the same sums. It keeps oneDNN off its
    strided 1x1 weight-gradient path (the "reduce to unit stride" copy), which on x86 writes past its
    workspace when the input is channels-last with fewer channels per group than the kernel's channel
    block (16 with AVX-512, 8 with AVX2; oneDNN issue 6035): a heap corruption that glibc reports, if at
    all, much later ("corrupted size vs. prev_size" at exit). tests/kernels/test_reference_heap.py."""
    if tuple(w_shape[2:]) == (1, 1) and tuple(stride) != (1, 1):
        (sh, sw), (ph, pw) = stride, pad
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        x = maps(x[:, :, ::sh, ::sw][:, :, :dy.shape[2], :dy.shape[3]])
        stride, pad = (1, 1), (0, 0)
    return torch.nn.grad.conv2d_weight(x, w_shape, dy, stride=stride, padding=pad, groups=num_group).contiguous()
