"""The paper's augmentation for a whole batch at once, on the training device.

A pack's images arrive as one uint8 ``(n, H, W, C)`` tensor (already the paper's 256x256); here, for
the whole batch and on whatever device the tensor is on: the random crop and mirror (one gather), the
PCA colour noise and the normalisation (``((x + shift) / scale - mean) / std``, the per-sample path's
float32 operations in its order, so a sample's pixels are bit for bit those of
:class:`~.augment.TrainTransform` given the same draws), and the layout change to ``(n, C, h, w)``
float32. Evaluation takes the centre crop or the paper's ten patches (``(n, 10, C, h, w)``, in
:data:`~.augment.TEN_CROP_ORDER`).

On the CPU the patches are not gathered and then converted: :meth:`BatchAugment.on_host` looks
each byte up in a per-patch table of its normalised values (computed by the same operations), reading
straight from the pack's memory map.

The draws come from :mod:`.draws` (keyed by seed, epoch and sample index) and are made on the host:
a few numbers per image, sent with the batch. On CUDA with Triton, crop, mirror, noise and
normalisation run as one kernel (``kernels/augment.py``), checked against these torch operations.
"""
from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np
import torch

from .augment import AugmentError, TrainTransform, lighting_shifts
from .draws import Draws, draw


class BatchAugment:
    """``transform`` (a :class:`~.augment.TrainTransform` or :class:`~.augment.EvalTransform`, built
    from the spec's data section as for any dataset) applied to batches of ``height`` x ``width``
    images with ``stored_channels`` channels (a grey pack feeds a colour network by repetition)."""

    def __init__(self, transform: Any, height: int, width: int, stored_channels: int,
                 device: torch.device | str | None = None, use_triton: bool | None = None):
        cfg = transform.cfg
        side = min(height, width)
        if cfg.resize is not None and cfg.resize != side:
            raise AugmentError(f"data.resize: {cfg.resize}, but the pack holds {height}x{width} images: pack the data "
                               f"again with --size {cfg.resize} (or --spec naming this spec)")
        if cfg.crop is not None and cfg.crop > side:
            raise AugmentError(f"data.crop: {cfg.crop} is larger than the pack's {height}x{width} images")
        self.height, self.width = height, width
        self.crop_h, self.crop_w = (cfg.crop, cfg.crop) if cfg.crop is not None else (height, width)
        self.channels = transform.channels
        if stored_channels not in (1, self.channels):
            raise AugmentError(f"the pack holds {stored_channels}-channel images, the network takes {self.channels}")
        self.repeat = stored_channels != self.channels
        self.train = isinstance(transform, TrainTransform)
        self.mirror = bool(cfg.mirror) and self.train
        self.sigma = float(transform.pca) if self.train else 0.0
        self.eigval = transform.eigval if self.sigma > 0 else None
        self.eigvec = transform.eigvec if self.sigma > 0 else None
        self.ten = not self.train and cfg.test_crops == "ten" and cfg.crop is not None
        self.device = torch.device(device if device is not None else "cpu")
        c = self.channels
        scale, mean, std = float(transform.scale), transform.mean.reshape(-1), transform.std.reshape(-1)
        # per-channel tensors, not Python scalars: CUDA divides by a scalar as a multiplication by its
        # reciprocal, which rounds differently from the per-sample path's division
        self.scale = None if scale == 1.0 else torch.full((c,), scale, dtype=torch.float32, device=self.device)
        self.mean = None if not np.any(mean) else torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.std = None if np.all(std == 1) else torch.as_tensor(std, dtype=torch.float32, device=self.device)
        self.use_triton = _triton_ok(self.device) if use_triton is None else use_triton
        self.outputs = Reusable()

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.crop_h, self.crop_w)

    def draws(self, seed: int, epoch: int, indices: Any) -> Draws:
        """The training draws of samples ``indices`` (see :mod:`.draws`)."""
        return draw(seed, epoch, indices, rows=self.height - self.crop_h + 1, cols=self.width - self.crop_w + 1,
                    mirror=self.mirror, sigma=self.sigma, components=0 if self.eigval is None else len(self.eigval))

    def shifts(self, draws: Draws) -> np.ndarray | None:
        """The per-image colour offsets in pixel units (n, C) float32, as the per-sample path adds them."""
        if self.sigma <= 0:
            return None
        return (lighting_shifts(draws.alpha, self.eigval, self.eigvec) * 255.0).astype(np.float32)

    def windows(self, n: int, draws: Draws | None = None) -> tuple[np.ndarray, ...]:
        """``(which, top, left, mirror, shift)`` of the patches of a batch of ``n`` images: one per image
        (training: as ``draws`` say; evaluation: the centre), or ten per image (ten-crop evaluation)."""
        if self.train:
            if draws is None or len(draws) != n:
                raise AugmentError("training augmentation needs one draw per image")
            return np.arange(n), draws.top, draws.left, draws.mirror, self.shifts(draws)
        dh, dw = self.height - self.crop_h, self.width - self.crop_w
        if self.ten:
            tops = np.array([0, 0, dh, dh, dh // 2] * 2)
            lefts = np.array([0, dw, 0, dw, dw // 2] * 2)
            flips = np.array([False] * 5 + [True] * 5)
            return np.repeat(np.arange(n), 10), np.tile(tops, n), np.tile(lefts, n), np.tile(flips, n), None
        return np.arange(n), np.full(n, dh // 2), np.full(n, dw // 2), np.zeros(n, dtype=bool), None

    def on_host(self, pack: Any, indices: Any, draws: Draws | None = None) -> torch.Tensor:
        """The CPU path, one pass per patch: each output value is a lookup, by its pixel's byte, in a
        table of what :func:`normalise` makes of the 256 byte values for that patch and channel (the
        same float32 operations in the same order: the same numbers), read through the window of the
        pack's memory map (``PackDataset.windows``), into reused arrays (:class:`Reusable`). Measured
        for 128 patches of 224x224x3 on one core: 56 ms converting then normalising, 34 ms by table,
        24 ms by table into reused arrays."""
        idx = np.asarray(indices, dtype=np.int64)
        which, top, left, mirror, shift = self.windows(len(idx), draws)
        table = self.lookup_table(len(which), shift)
        out = self.outputs.empty((len(which), self.channels, self.crop_h, self.crop_w))
        # np.take would convert each uint8 plane to a fresh intp array (a mapping and its page faults
        # per call); one buffer converted into serves every plane
        index = np.empty((self.crop_h, self.crop_w), dtype=np.intp)
        for j, win in pack.windows(idx[which], top, left, mirror, self.crop_h, self.crop_w):
            for c in range(self.channels):
                np.copyto(index, win[:, :, 0 if self.repeat else c], casting="unsafe")
                np.take(table[j, c], index, out=out[j, c], mode="clip")
        return self._shaped(torch.from_numpy(out), len(idx))

    def lookup_table(self, m: int, shift: np.ndarray | None) -> np.ndarray:
        """(m, C, 256) float32: :func:`normalise`'s result for every byte value, per patch and channel."""
        t = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(m, self.channels, 1, 256)
        cpu = lambda v: None if v is None else v.cpu()  # noqa: E731
        out = normalise(t, None if shift is None else torch.from_numpy(shift), cpu(self.scale), cpu(self.mean),
                        cpu(self.std), self.channels)
        return out.reshape(m, self.channels, 256).numpy()

    def on_device(self, images: torch.Tensor, draws: Draws | None = None) -> torch.Tensor:
        """uint8 ``(n, H, W, C)`` images (on the training device) -> float32 ``(n, C, h, w)`` (training,
        with ``draws``) or the evaluation crops: ``(n, C, h, w)``, or ``(n, 10, C, h, w)`` ten-crop."""
        n = images.shape[0]
        if tuple(images.shape[1:3]) != (self.height, self.width) or images.dtype != torch.uint8:
            raise AugmentError(f"expected uint8 images of {self.height}x{self.width}, got {images.dtype} "
                               f"{tuple(images.shape)}")
        which, top, left, mirror, shift = self.windows(n, draws)
        dev = images.device

        def put(a: np.ndarray, dt: torch.dtype = torch.int64) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dt).to(dev, non_blocking=True)

        args = (images, put(which), put(top), put(left), put(mirror, torch.bool),
                put(shift, torch.float32) if shift is not None else None, self.scale, self.mean, self.std,
                self.crop_h, self.crop_w, self.channels)
        if self.use_triton and dev.type == "cuda":
            from ...kernels.augment import crop_normalise

            return self._shaped(crop_normalise(*args), n)
        return self._shaped(crop_normalise_torch(*args), n)

    def _shaped(self, out: torch.Tensor, n: int) -> torch.Tensor:
        return out.reshape(n, 10, *out.shape[1:]) if self.ten else out


class Reusable:
    """float32 arrays handed out again once nothing outside holds them: a fresh 77 MB batch is 19,000
    page faults, about a quarter of :meth:`BatchAugment.on_host`'s time (measured: 28 vs 36 ms per 128
    patches of 224x224x3). An array is free again when its reference count is back to the pool's own:
    a tensor made from it by ``torch.from_numpy`` (and every view of that tensor) keeps it referenced
    through the tensor's storage until the last of them is gone."""

    def __init__(self, keep: int = 8):
        self.arrays: list[np.ndarray] = []
        self.keep = keep
        self.lock = threading.Lock()

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        with self.lock:
            for a in self.arrays:
                # 3 references: the list, the loop variable, getrefcount's argument: nobody else's
                if a.shape == shape and sys.getrefcount(a) <= 3:
                    return a
            a = np.empty(shape, dtype=np.float32)
            if len(self.arrays) < self.keep:
                self.arrays.append(a)
            return a


def normalise(x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None, mean: torch.Tensor | None,
              std: torch.Tensor | None, channels: int) -> torch.Tensor:
    """uint8 patches (m, Cs, h, w) -> float32 (m, channels, h, w): ``((x + shift[m]) / scale - mean) / std``
    per channel, in float32 and in that order (the per-sample path's), each step skipped where its tensor
    is None (``x - 0`` and ``x / 1`` change nothing). A one-channel patch feeds ``channels`` by repetition."""
    if x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1)
    x = x.to(torch.float32, memory_format=torch.contiguous_format)
    if shift is not None:
        x += shift[:, :, None, None]
    if scale is not None:
        x /= scale[None, :, None, None]
    if mean is not None:
        x -= mean[None, :, None, None]
    if std is not None:
        x /= std[None, :, None, None]
    return x


def crop_normalise_torch(images: torch.Tensor, which: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                         mirror: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None,
                         mean: torch.Tensor | None, std: torch.Tensor | None, crop_h: int, crop_w: int,
                         channels: int) -> torch.Tensor:
    """The torch version of the fused kernel (and its oracle): uint8 (n, H, W, Cs) -> float32
    (m, channels, crop_h, crop_w), patch m cut from image ``which[m]`` at (``top[m]``, ``left[m]``),
    mirrored where ``mirror[m]``, then :func:`normalise`d. One gather for all the patches."""
    dev = images.device
    rows = top[:, None] + torch.arange(crop_h, device=dev)                           # (m, h)
    cols = torch.arange(crop_w, device=dev).expand(len(top), crop_w)
    cols = left[:, None] + torch.where(mirror[:, None], crop_w - 1 - cols, cols)     # (m, w)
    patches = images[which[:, None, None], rows[:, :, None], cols[:, None, :]]       # (m, h, w, Cs)
    return normalise(patches.permute(0, 3, 1, 2), shift, scale, mean, std, channels)


def _triton_ok(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
