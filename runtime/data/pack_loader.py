"""Batches from a pack: memory-mapped samples, assembled and augmented a batch at a time.

``make_loader`` returns a :class:`PackLoader` for a :class:`~.pack.PackDataset`. Its batches are
those of the per-sample loader (``order.epoch_batches``: the same order, shards, resume point and
limit); each is built without per-sample Python work where it can be:

- the draws: :mod:`.draws`, vectorised and keyed by (seed, epoch, sample index);
- on the CPU: each patch's values are looked up, byte by byte through its window of the memory map
  (``PackDataset.windows``), in a table of their normalised values (:meth:`~.device_augment.BatchAugment.on_host`);
- on a GPU: the batch's whole uint8 images go to the device (pinned, asynchronous copy, a quarter of
  float32's bytes) and crop, mirror, colour noise and normalisation run there as a batch.

``workers`` threads (numpy's copies, Pillow's JPEG decoding and torch's operations release the GIL)
assemble the next batches while the current one trains; the batches do not depend on their number.
A chunk that fails its checksum stops the epoch with :class:`~.pack.PackError` naming it.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Iterator

import numpy as np
import torch

from .device_augment import BatchAugment


class PackLoader:
    """One epoch of ``(images, labels)`` from a pack: float32 images on ``device`` ((N, C, H, W), or
    (N, 10, C, H, W) with ten-crop evaluation), int64 labels on the CPU. The interface of
    :class:`~.loader.Loader` (``len``, ``skipped``, ``skipped_message``)."""

    def __init__(self, pack: Any, transform: Any, batches: list[np.ndarray], *, seed: int, epoch: int,
                 workers: int = 0, device: Any = None, pin_memory: bool = False, keep_empty: bool = False,
                 batch_size: int = 0, start_batch: int = 0):
        self.pack, self.batches = pack, batches
        self.seed, self.epoch, self.workers = seed, epoch, workers
        self.device = torch.device(device if device is not None else "cpu")
        self.augment = BatchAugment(transform, pack.height, pack.width, pack.stored_channels, self.device)
        self.augment.outputs.keep = 2 * workers + 4   # the batches in flight, the one training, the one before
        self.pin = pin_memory and self.device.type == "cuda"
        # the CPU reads its patches straight from the map; a GPU gets whole images and cuts them there
        self.augment_on_host = self.device.type == "cpu"
        self.keep_empty, self.batch_size, self.start_batch = keep_empty, batch_size, start_batch
        self.num_batches = len(batches)
        self.skipped: list = []  # unreadable images were reported by `alexnetc pack` and are not in a pack

    def __len__(self) -> int:
        return self.num_batches

    def skipped_message(self, limit: int = 10) -> str | None:
        return None

    def _assemble(self, idx: np.ndarray) -> tuple | None:
        """Host side of one batch (in a worker thread): the augmented batch on the CPU, or the pinned
        uint8 images and the draws for the device."""
        if not len(idx):
            return None
        labels = torch.from_numpy(np.ascontiguousarray(self.pack.labels[idx]))
        draws = self.augment.draws(self.seed, self.epoch, idx) if self.augment.train else None
        if self.augment_on_host:
            return self.augment.on_host(self.pack, idx, draws), labels
        p = self.pack
        images = torch.empty((len(idx), p.height, p.width, p.stored_channels), dtype=torch.uint8, pin_memory=self.pin)
        p.read(idx, out=images.numpy())   # straight into (pinned) memory the device copies from asynchronously
        return images, labels, draws

    def _deliver(self, item: tuple | None) -> tuple[torch.Tensor, torch.Tensor]:
        if item is None:
            return torch.empty(0), torch.empty(0, dtype=torch.int64)
        if len(item) == 2:
            return item
        images, labels, draws = item
        return self.augment.on_device(images.to(self.device, non_blocking=True), draws), labels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for item in self._assembled():
            if item is None and not self.keep_empty:
                continue
            yield self._deliver(item)

    def _assembled(self) -> Iterator[tuple | None]:
        if self.workers <= 0:
            for idx in self.batches:
                yield self._assemble(idx)
            return
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="alexnetc-pack")
        try:
            ahead: deque = deque()
            todo = iter(self.batches)
            for _ in range(2 * self.workers):
                idx = next(todo, None)
                if idx is None:
                    break
                ahead.append(pool.submit(self._assemble, idx))
            while ahead:
                item = ahead.popleft().result()
                idx = next(todo, None)
                if idx is not None:
                    ahead.append(pool.submit(self._assemble, idx))
                yield item
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return f"PackLoader({self.pack.path!r}, {self.num_batches} batches, {self.workers} threads, {self.device})"
