"""Triton crop, mirror, colour noise and normalisation of a batch of packed images, in one pass.

Not a graph op (no descriptor, no reference twin): the training data path's kernel, called by
`runtime/data/device_augment.py` on CUDA; its oracle is that module's `crop_normalise_torch`.

    out[m, c, y, x] = ((img[which[m], top[m] + y, left[m] + x', c'] + shift[m, c]) / scale[c] - mean[c]) / std[c]

with x' = crop_w - 1 - x where mirror[m], else x; c' = c, or 0 when a one-channel image feeds
`channels` (repetition). uint8 (n, H, W, Cs) in, float32 (m, channels, crop_h, crop_w) out: the
torch version's gather, permute, conversion and four elementwise passes become one read of the
window's bytes and one write of the result. The divisions are IEEE round-to-nearest (`div_rn`, not
Triton's default approximate fp32 division) and nothing is fused into an FMA, so the result is the
torch version's (and the per-sample path's) bit for bit.

One program: BLOCK output pixels of one patch, every channel (grid: pixel blocks, patches).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _crop_normalise_kernel(img_ptr, which_ptr, top_ptr, left_ptr, mirror_ptr, shift_ptr, scale_ptr, mean_ptr,
                           std_ptr, out_ptr, HW, crop_w, sn, sh, sw, sc,
                           C: tl.constexpr, REPEAT: tl.constexpr, HAS_SHIFT: tl.constexpr,
                           HAS_SCALE: tl.constexpr, HAS_MEAN: tl.constexpr, HAS_STD: tl.constexpr,
                           BLOCK: tl.constexpr):
    m = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = p < HW
    y = p // crop_w
    x = p - y * crop_w
    n = tl.load(which_ptr + m)
    t = tl.load(top_ptr + m)
    l = tl.load(left_ptr + m)
    flip = tl.load(mirror_ptr + m).to(tl.int1)
    col = l + tl.where(flip, crop_w - 1 - x, x)
    src = img_ptr + n * sn + (t + y) * sh + col * sw
    for c in tl.static_range(C):
        v = tl.load(src + (0 if REPEAT else c) * sc, mask=mask, other=0).to(tl.float32)
        if HAS_SHIFT:
            v = v + tl.load(shift_ptr + m * C + c)
        if HAS_SCALE:
            v = tl.math.div_rn(v, tl.load(scale_ptr + c))
        if HAS_MEAN:
            v = v - tl.load(mean_ptr + c)
        if HAS_STD:
            v = tl.math.div_rn(v, tl.load(std_ptr + c))
        tl.store(out_ptr + (m * C + c) * HW + p, v, mask=mask)


def crop_normalise(images: torch.Tensor, which: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                   mirror: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None,
                   mean: torch.Tensor | None, std: torch.Tensor | None, crop_h: int, crop_w: int,
                   channels: int) -> torch.Tensor:
    """Same contract as `runtime.data.device_augment.crop_normalise_torch` (its oracle)."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"crop_normalise: expected uint8 (n, H, W, C) images, got {images.dtype} {tuple(images.shape)}")
    m = int(which.shape[0])
    out = torch.empty((m, channels, crop_h, crop_w), dtype=torch.float32, device=images.device)
    if m == 0:
        return out
    hw = crop_h * crop_w
    dummy = out  # stands in for an absent tensor: its branch is compiled out
    as_f32 = lambda t: dummy if t is None else t.to(device=images.device, dtype=torch.float32).contiguous()  # noqa: E731
    block = 1024
    grid = (triton.cdiv(hw, block), m)
    sn, sh, sw, sc = images.stride()
    _crop_normalise_kernel[grid](
        images, which.contiguous(), top.contiguous(), left.contiguous(), mirror.to(torch.int8).contiguous(),
        as_f32(shift), as_f32(scale), as_f32(mean), as_f32(std), out, hw, crop_w, sn, sh, sw, sc,
        C=channels, REPEAT=images.shape[3] != channels, HAS_SHIFT=shift is not None, HAS_SCALE=scale is not None,
        HAS_MEAN=mean is not None, HAS_STD=std is not None, BLOCK=block)
    return out
