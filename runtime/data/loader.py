"""Batches for training and evaluation: decoding and augmentation in worker processes, reproducibly.

:func:`make_loader` wraps ``torch.utils.data.DataLoader`` for one epoch:

- the order is a permutation drawn from ``(seed, epoch)`` (or the dataset order without shuffle);
- each sample's augmentation draws from its own generator seeded by ``(seed, epoch, index)``, so an
  epoch's batches are bit-identical whatever ``num_workers`` is, and resuming with ``start_batch``
  reproduces the rest of the epoch; every worker also seeds torch/numpy/random from
  ``(seed, epoch, worker id)`` for anything else that draws;
- samples a dataset could not decode (:class:`~.datasets.BadSample`) are dropped by the collate
  function and their files gathered in the main process in :attr:`Loader.skipped`
  (:meth:`Loader.skipped_message` formats them for the log).

With ``shard=(rank, world)`` (data parallelism) every global batch of ``batch_size`` is cut into
contiguous slices by position (:func:`~alexnetc.runtime.execution.distributed.shard`) and this loader
yields slice ``rank`` of each: order and augmentation stay keyed by the global sample, so the
processes together see exactly the batches of one process. A sharded loader yields every batch, an
empty one (``(N=0)`` tensors) where its slice is empty or unreadable, so all processes step together.

Iterating a :class:`Loader` yields ``(images, labels)``: float32 ``(N, C, H, W)`` (or
``(N, 10, C, H, W)`` with ten-crop evaluation) and int64 ``(N,)``; N can be smaller than the batch
size where bad samples were dropped.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .datasets import BadSample
from .order import epoch_batches, epoch_order  # noqa: F401  (epoch_order: re-exported)


class LoaderError(Exception):
    """A loader option is wrong or a batch cannot be assembled; the message says which."""


def _check_seed(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise LoaderError(f"{name}: expected an integer >= 0, got {v!r}")
    return int(v)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator a sample's augmentation draws from (same in any worker, on any resume)."""
    return np.random.default_rng([seed, epoch, int(index)])


class TransformedDataset:
    """``dataset[i]`` passed through ``transform(image, rng)``; bad samples pass through untouched."""

    def __init__(self, dataset: Any, transform: Any, seed: int, epoch: int):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        if isinstance(image, BadSample) or self.transform is None:
            return image, label
        return self.transform(image, sample_rng(self.seed, self.epoch, index)), label


def collate_drop_bad(batch: Any) -> tuple[Any, Any, list]:
    """Stack the good samples of a batch; return ``(images, labels, skipped)``.

    ``skipped`` is a list of ``(path, reason)`` for the dropped samples; ``images`` and ``labels``
    are None when every sample was bad.
    """
    import torch

    good = [(x, y) for x, y in batch if not isinstance(x, BadSample)]
    skipped = [(x.path, x.reason) for x, _ in batch if isinstance(x, BadSample)]
    if not good:
        return None, None, skipped
    xs = [x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x)) for x, _ in good]
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise LoaderError(f"samples of different shapes in one batch ({', '.join(map(str, sorted(shapes)[:4]))}): "
                          "set data.resize and data.crop so every image comes out the same size")
    return torch.stack(xs), torch.as_tensor([int(y) for _, y in good], dtype=torch.int64), skipped


def _worker_init(seed: int, epoch: int, worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)
    s = np.random.SeedSequence([seed, epoch, worker_id]).generate_state(2)
    torch.manual_seed(int(s[0]) << 32 | int(s[1]))
    np.random.seed(int(s[0]))
    random.seed(int(s[1]))


class _WorkerInit:
    """Picklable worker_init_fn (works with fork, spawn and forkserver)."""

    def __init__(self, seed: int, epoch: int):
        self.seed, self.epoch = seed, epoch

    def __call__(self, worker_id: int) -> None:
        _worker_init(self.seed, self.epoch, worker_id)


@dataclass
class Loader:
    """One epoch of batches. Iterate for ``(images, labels)``; bad files accumulate in ``skipped``."""
    dataloader: object
    num_batches: int
    batch_size: int
    start_batch: int
    skipped: list = field(default_factory=list)
    keep_empty: bool = False

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        import torch

        for images, labels, skipped in self.dataloader:
            if skipped:
                self.skipped.extend(skipped)
            if images is not None:
                yield images, labels
            elif self.keep_empty:
                yield torch.empty(0), torch.empty(0, dtype=torch.int64)

    def skipped_message(self, limit: int = 10) -> str | None:
        """'skipped 3 unreadable images: a.jpg, b.jpg, c.jpg' (None when nothing was skipped)."""
        return format_skipped(self.skipped, limit)


def format_skipped(skipped: Any, limit: int = 10) -> str | None:
    import os

    if not skipped:
        return None
    paths = sorted({p for p, _ in skipped})
    names = ", ".join(os.path.basename(p) for p in paths[:limit])
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    n = len(paths)
    return f"skipped {n} unreadable image{'s' if n != 1 else ''}: {names}{more}"


def make_loader(dataset: Any, transform: Any, batch_size: int, shuffle: bool = False, seed: int = 0,
                epoch: int = 0, num_workers: int = 0, drop_last: bool = False, start_batch: int = 0,
                pin_memory: bool = False, prefetch_factor: int | None = None,
                limit_batches: int | None = None, shard: tuple[int, int] | None = None,
                device: Any = None) -> Any:
    """A :class:`Loader` over one epoch of ``dataset`` through ``transform(image, rng)``.

    ``start_batch``: skip the first batches of the epoch (resuming mid-epoch; the remaining batches are
    identical to those of an uninterrupted epoch). ``limit_batches``: stop after this many batches of
    the epoch (counted from 0, so a resumed epoch stops at the same place). ``transform=None`` passes
    images through as uint8 (for tests and statistics). ``shard=(rank, world)``: this process's slice
    of every batch (see the module docstring).

    A pack (:class:`~.pack.PackDataset`) with a transform gets the batched loader instead
    (:class:`~.pack_loader.PackLoader`: the same batches, augmented as a batch on ``device``, the
    training device; ``num_workers`` threads assemble batches ahead).
    """
    import torch
    from torch.utils.data import DataLoader

    from .pack import PackDataset

    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise LoaderError(f"batch_size: expected a positive integer, got {batch_size!r}")
    seed, epoch = _check_seed("seed", seed), _check_seed("epoch", epoch)
    start_batch = _check_seed("start_batch", start_batch)
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
        raise LoaderError(f"num_workers: expected an integer >= 0, got {num_workers!r}")
    if limit_batches is not None:
        limit_batches = _check_seed("limit_batches", limit_batches)
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise LoaderError(f"shard: rank {shard[0]} is not in [0, {shard[1]})")
    batches = epoch_batches(len(dataset), int(batch_size), shuffle=shuffle, seed=seed, epoch=epoch,
                            drop_last=drop_last, start_batch=start_batch, limit_batches=limit_batches, shard=shard)
    if isinstance(dataset, PackDataset) and transform is not None:
        from .pack_loader import PackLoader

        return PackLoader(dataset, transform, batches, seed=seed, epoch=epoch, workers=int(num_workers),
                          device=device, pin_memory=pin_memory, keep_empty=shard is not None,
                          batch_size=int(batch_size), start_batch=start_batch)
    kwargs = {}
    if num_workers > 0:
        kwargs = dict(worker_init_fn=_WorkerInit(seed, epoch), persistent_workers=False)
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    data = TransformedDataset(dataset, transform, seed, epoch)
    pin = pin_memory and torch.cuda.is_available()
    dl = DataLoader(data, batch_sampler=[b.tolist() for b in batches], num_workers=int(num_workers),
                    collate_fn=collate_drop_bad, pin_memory=pin, **kwargs)
    return Loader(dl, len(batches), int(batch_size), start_batch, keep_empty=shard is not None)
