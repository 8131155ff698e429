"""Reference max and average pooling and their backwards, windows padded and ceil-extended explicitly.

`maxpool` returns the window offset r*kw + s of each maximum (dtype `shared.argmax_dtype`), which
its backward scatters to; the backwards take the input's (H, W) as `in_hw` and N, C from dy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..shared import argmax_dtype, pair
from ._common import extra, f32, up


def maxpool(x, *, kernel, stride, pad, out_size):
    (kh, kw), (sh, sw), (ph, pw), (P, Q) = pair(kernel), pair(stride), pair(pad), pair(out_size)
    H, W = x.shape[2], x.shape[3]
    oh = torch.arange(P, device=x.device).view(P, 1) * sh
    ow = torch.arange(Q, device=x.device).view(1, Q) * sw
    if extra(H, P, kh, sh, ph) == extra(W, Q, kw, sw, pw) == 0 and 2 * ph <= kh and 2 * pw <= kw and kw <= W:
        # ATen pads with -inf itself here, sparing the padded copy; its indices address the input (whose
        # rows are at least a window wide, so a row and column within the window give a unique index)
        y, idx = F.max_pool2d(_cl(up(x)), (kh, kw), (sh, sw), (ph, pw), return_indices=True)
        width, corner = W, (oh - ph) * W + (ow - pw)
    else:
        xp = F.pad(up(x), (pw, pw + extra(W, Q, kw, sw, pw), ph, ph + extra(H, P, kh, sh, ph)),
                   value=float("-inf"))
        y, idx = F.max_pool2d(_cl(xp), (kh, kw), (sh, sw), return_indices=True)
        y, idx = y[:, :, :P, :Q], idx[:, :, :P, :Q]
        width, corner = xp.shape[3], oh * xp.shape[3] + ow
    # idx - corner = r * width + s, the maximum's place in its window; a table of the kh*kw places
    # turns it into the offset r*kw + s in one gather (an int64 floor division costs several passes)
    cells = torch.arange(kh * kw, device=x.device)
    table = torch.zeros((kh - 1) * width + kw, dtype=argmax_dtype((kh, kw)), device=x.device)
    table[cells // kw * width + cells % kw] = cells.to(table.dtype)
    return y.to(x.dtype).contiguous(), torch.take(table, idx - corner).view(idx.shape).contiguous()


def _cl(x: torch.Tensor) -> torch.Tensor:
    """Channels-last on the CPU: ATen's max-pool is 3-5x faster there (vectorised over channels), and
    visits each window in the same order, so the maxima and their indices are the same."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


def maxpool_backward(dy, argmax, *, in_hw, kernel, stride, pad):
    (kh, kw), (sh, sw), (ph, pw), (H, W) = pair(kernel), pair(stride), pair(pad), pair(in_hw)
    N, C, P, Q = dy.shape
    Hp = max(H + 2 * ph, (P - 1) * sh + kh)
    Wp = max(W + 2 * pw, (Q - 1) * sw + kw)
    cells = torch.arange(kh * kw, device=dy.device)
    place = cells // kw * Wp + cells % kw           # offset r*kw + s -> r*Wp + s on the padded plane
    corner = (torch.arange(P, device=dy.device).view(P, 1) * (sh * Wp)
              + torch.arange(Q, device=dy.device).view(1, Q) * sw)
    flat = torch.take(place, argmax.long()) + corner
    g = f32(dy)
    # ATen's max-pool backward scatters dy to `flat` on the padded plane (every window lies inside it, so
    # any offset in [0, kh*kw) is in bounds), adding in output order as scatter_add_ would, in one pass.
    plane = g.new_empty(()).expand(N, C, Hp, Wp)
    dxp = torch.ops.aten.max_pool2d_with_indices_backward(g, plane, [kh, kw], [sh, sw], [0, 0], [1, 1],
                                                          False, flat)
    dx = dxp[:, :, ph:ph + H, pw:pw + W]
    return dx.to(dy.dtype).contiguous()


def _avg_counts(H, W, P, Q, kernel, stride, pad, device):
    """(P, Q) number of window cells inside the input: the count_include_pad=False divisor."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    rows = (torch.arange(P, device=device) * sh - ph)
    cols = (torch.arange(Q, device=device) * sw - pw)
    nh = (rows + kh).clamp(max=H) - rows.clamp(min=0)
    nw = (cols + kw).clamp(max=W) - cols.clamp(min=0)
    return (nh.view(P, 1) * nw.view(1, Q)).clamp(min=1)


def avgpool(x, *, kernel, stride, pad, out_size):
    (kh, kw), (sh, sw), (ph, pw), (P, Q) = pair(kernel), pair(stride), pair(pad), pair(out_size)
    H, W = x.shape[2], x.shape[3]
    xp = F.pad(f32(x), (pw, pw + extra(W, Q, kw, sw, pw), ph, ph + extra(H, P, kh, sh, ph)))
    total = F.avg_pool2d(xp, (kh, kw), (sh, sw), divisor_override=1)[:, :, :P, :Q]
    y = total / _avg_counts(H, W, P, Q, (kh, kw), (sh, sw), (ph, pw), x.device)
    return y.to(x.dtype).contiguous()


def avgpool_backward(dy, *, in_hw, kernel, stride, pad):
    (kh, kw), (sh, sw), (ph, pw), (H, W) = pair(kernel), pair(stride), pair(pad), pair(in_hw)
    N, C, P, Q = dy.shape
    Hp = max(H + 2 * ph, (P - 1) * sh + kh)
    Wp = max(W + 2 * pw, (Q - 1) * sw + kw)
    g = f32(dy) / _avg_counts(H, W, P, Q, (kh, kw), (sh, sw), (ph, pw), dy.device)
    # each window's share to every cell of it on the padded plane: ATen's average-pool backward with
    # divisor 1 (the counts are divided above), then the padding cut off
    plane = g.new_empty(()).expand(N, C, Hp, Wp)
    full = torch.ops.aten.avg_pool2d_backward(g, plane, [kh, kw], [sh, sw], [0, 0], False, True, 1)
    return full[:, :, ph:ph + H, pw:pw + W].to(dy.dtype).contiguous()


def globalmaxpool(x):
    """Maximum of each channel's map and its flat offset h*W + w (int32; ties: the first, NaN wins)."""
    N, C = x.shape[0], x.shape[1]
    flat = up(x).reshape(N, C, -1)
    key = torch.where(flat.isnan(), torch.full_like(flat, float("inf")), flat)
    top = key.max(dim=2, keepdim=True).values
    pos = torch.arange(flat.shape[2], device=x.device).expand_as(flat)
    arg = torch.where(key == top, pos, flat.shape[2]).min(dim=2).values   # the first maximum
    y = flat.gather(2, arg.unsqueeze(2))
    return y.reshape(N, C, 1, 1).to(x.dtype).contiguous(), arg.reshape(N, C, 1, 1).to(torch.int32).contiguous()


def globalmaxpool_backward(dy, argmax, *, in_hw):
    H, W = pair(in_hw)
    N, C = dy.shape[0], dy.shape[1]
    dx = torch.zeros((N, C, H * W), dtype=f32(dy).dtype, device=dy.device)
    dx.scatter_(2, argmax.long().reshape(N, C, 1), f32(dy).reshape(N, C, 1))
    return dx.reshape(N, C, H, W).to(dy.dtype).contiguous()


def globalavgpool(x):
    return f32(x).mean(dim=(2, 3), keepdim=True).to(x.dtype).contiguous()


def globalavgpool_backward(dy, *, in_hw):
    H, W = pair(in_hw)
    g = f32(dy) / (H * W)
    return g.expand(dy.shape[0], dy.shape[1], H, W).to(dy.dtype).contiguous()
