"""Reference max and average pooling and their backwards, windows padded and ceil-extended explicitly.

`maxpool` returns the window offset r*kw + s of each maximum (dtype `shared.argmax_dtype`), which
its backward scatters to; the backwards take the input's (H, W) as `in_hw` and N, C from dy. Maps,
window offsets and gradients stay in the backend's map layout (`_common.maps`: channels-last on the
CPU, where ATen's pooling kernels are vectorised over channels and visit each window in the same order).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..shared import argmax_dtype, pair
from ._common import extra, f32, maps, up


def maxpool(x, *, kernel, stride, pad, out_size):
    (kh, kw), (sh, sw), (ph, pw), (P, Q) = pair(kernel), pair(stride), pair(pad), pair(out_size)
    H, W = x.shape[2], x.shape[3]
    oh = torch.arange(P, device=x.device).view(P, 1) * sh
    ow = torch.arange(Q, device=x.device).view(1, Q) * sw
    if extra(H, P, kh, sh, ph) == extra(W, Q, kw, sw, pw) == 0 and 2 * ph <= kh and 2 * pw <= kw and kw <= W:
        # ATen pads with -inf itself here, sparing the padded copy; its indices address the input (whose
        # rows are at least a window wide, so a row and column within the window give a unique index)
        y, idx = F.max_pool2d(maps(up(x)), (kh, kw), (sh, sw), (ph, pw), return_indices=True)
        width, corner = W, (oh - ph) * W + (ow - pw)
    else:
        xp = F.pad(up(x), (pw, pw + extra(W, Q, kw, sw, pw), ph, ph + extra(H, P, kh, sh, ph)),
                   value=float("-inf"))
        y, idx = F.max_pool2d(maps(xp), (kh, kw), (sh, sw), return_indices=True)
        y, idx = y[:, :, :P, :Q], idx[:, :, :P, :Q]
        width, corner = xp.shape[3], oh * xp.shape[3] + ow
    # idx - corner = r * width + s, the maximum's place in its window; a table of the kh*kw places
    # turns it into the offset r*kw + s in one gather (an int64 floor division costs several passes)
    cells = torch.arange(kh * kw, device=x.device)
    table = torch.zeros((kh - 1) * width + kw, dtype=argmax_dtype((kh, kw)), device=x.device)
    table[cells // kw * width + cells % kw] = cells.to(table.dtype)
    return maps(y.to(x.dtype)), _take(table, maps(idx - corner))


def _take(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """torch.take(table, idx) in idx's own layout (torch.take writes its result in NCHW order, which
    for channels-last offsets would be a transposing gather and a copy back)."""
    if idx.dim() == 4 and not idx.is_contiguous() and idx.is_contiguous(memory_format=torch.channels_last):
        return torch.take(table, idx.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return torch.take(table, idx.contiguous())


def _plane(g: torch.Tensor, n: int, c: int, h: int, w: int) -> torch.Tensor:
    """The (n, c, h, w) input ATen's pooling backwards take for its shape and layout only: g's layout,
    never written or read (a zero-stride expand where NCHW will do, no allocation)."""
    if g.device.type == "cpu" and g.dim() == 4 and not g.is_contiguous():
        return torch.empty((n, c, h, w), dtype=g.dtype, memory_format=torch.channels_last)
    return g.new_empty(()).expand(n, c, h, w)


def maxpool_backward(dy, argmax, *, in_hw, kernel, stride, pad):
    (kh, kw), (sh, sw), (ph, pw), (H, W) = pair(kernel), pair(stride), pair(pad), pair(in_hw)
    N, C, P, Q = dy.shape
    Hp = max(H + 2 * ph, (P - 1) * sh + kh)
    Wp = max(W + 2 * pw, (Q - 1) * sw + kw)
    cells = torch.arange(kh * kw, device=dy.device)
    place = cells // kw * Wp + cells % kw           # offset r*kw + s -> r*Wp + s on the padded plane
    corner = (torch.arange(P, device=dy.device).view(P, 1) * (sh * Wp)
              + torch.arange(Q, device=dy.device).view(1, Q) * sw)
    g = maps(f32(dy))
    flat = _take(place, maps(argmax.long())) + corner
    # ATen's max-pool backward scatters dy to `flat` on the padded plane (every window lies inside it, so
    # any offset in [0, kh*kw) is in bounds), adding in output order as scatter_add_ would, in one pass.
    plane = _plane(g, N, C, Hp, Wp)
    dxp = torch.ops.aten.max_pool2d_with_indices_backward(g, plane, [kh, kw], [sh, sw], [0, 0], [1, 1],
                                                          False, flat)
    return maps(dxp[:, :, ph:ph + H, pw:pw + W].to(dy.dtype))


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
    xp = F.pad(maps(f32(x)), (pw, pw + extra(W, Q, kw, sw, pw), ph, ph + extra(H, P, kh, sh, ph)))
    total = F.avg_pool2d(xp, (kh, kw), (sh, sw), divisor_override=1)[:, :, :P, :Q]
    y = total / _avg_counts(H, W, P, Q, (kh, kw), (sh, sw), (ph, pw), x.device)
    return maps(y.to(x.dtype))


def avgpool_backward(dy, *, in_hw, kernel, stride, pad):
    (kh, kw), (sh, sw), (ph, pw), (H, W) = pair(kernel), pair(stride), pair(pad), pair(in_hw)
    N, C, P, Q = dy.shape
    Hp = max(H + 2 * ph, (P - 1) * sh + kh)
    Wp = max(W + 2 * pw, (Q - 1) * sw + kw)
    g = maps(f32(dy)) / _avg_counts(H, W, P, Q, (kh, kw), (sh, sw), (ph, pw), dy.device)
    # each window's share to every cell of it on the padded plane: ATen's average-pool backward with
    # divisor 1 (the counts are divided above), then the padding cut off
    plane = _plane(g, N, C, Hp, Wp)
    full = torch.ops.aten.avg_pool2d_backward(g, plane, [kh, kw], [sh, sw], [0, 0], False, True, 1)
    return maps(full[:, :, ph:ph + H, pw:pw + W].to(dy.dtype))


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
    return maps(g.expand(dy.shape[0], dy.shape[1], H, W).to(dy.dtype))
