"""Packing a dataset once: ``alexnetc pack DATA -o OUT`` (the file format is ``pack.py``).

Every image of a split goes through the paper's preprocessing once — shorter side to ``size``
(Pillow's bilinear with antialiasing, as ``data.resize`` does), then the central ``size`` x ``size``
patch (:func:`paper_preprocess`) — and is stored raw (uint8) or as a JPEG, with its label and source
file, in ``OUT/<split>.pack``. The random crops, mirrors and colour noise stay for training time.

- Every core: the images are decoded and resized in a process pool, a unit of a chunk's images per
  task; the main process writes the chunks in order and shows a progress bar with an ETA.
- Atomic and resumable: samples go to ``OUT/<split>.pack.partial`` and each finished chunk to the
  journal ``OUT/<split>.pack.journal`` (after the data it records is on disk: fsync, then the journal
  line). A killed pack leaves those two, never a ``.pack``; running the same command again truncates
  the partial file to its last journaled chunk and continues there. Only the finished file (index,
  metadata, trailer, fsync) is renamed to ``OUT/<split>.pack``.
- Unreadable images are reported by name (and kept in the pack's metadata), never packed, never a
  reason to stop.
- A finished split packed with the same options from the same file listing is skipped; one packed
  otherwise is refused unless ``overwrite``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .augment import center_crop, resize_shorter
from .datasets import IdxDataset, ImageFolder, detect_layout, is_bad, load_image
from .errors import DatasetError
from .pack import FORMATS, HEADER_BYTES, PARTIAL_SUFFIX, PackDataset, PackError, crc32, split_path, write_header, write_index

DEFAULT_SIZE = 256
DEFAULT_QUALITY = 90
JOURNAL_SUFFIX = ".journal"
RAW_CHUNK_BYTES = 1 << 20     # a raw chunk: ~1 MiB (5 images at 256x256x3): checked once per process when first read
JPEG_CHUNK_PIXELS = 8 << 20   # a JPEG chunk: 8 MiB of pixels (42 images at 256x256x3), about 1 MiB of JPEG
FLUSH_BYTES = 64 << 20        # fsync and journal at least this often (bytes written) ...
FLUSH_SECONDS = 5.0           # ... or seconds
PREPROCESSING = ("shorter side resized to {size} (Pillow bilinear with antialiasing), then the central "
                 "{size}x{size} patch (Krizhevsky et al. 2012, section 2)")


def paper_preprocess(img: np.ndarray, size: int) -> np.ndarray:
    """The paper's preprocessing of an (H, W, C) uint8 image: the shorter side to ``size``, then the
    central ``size`` x ``size`` patch, as a contiguous (size, size, C) array."""
    return np.ascontiguousarray(center_crop(resize_shorter(img, size), size))


def chunk_samples(fmt: str, size: int, channels: int) -> int:
    """Images per chunk (and per pool task) for a format and geometry."""
    budget = RAW_CHUNK_BYTES if fmt == "raw" else JPEG_CHUNK_PIXELS
    return max(1, round(budget / (size * size * channels)))


@dataclass
class Source:
    """One split's images before packing: ``names[i]`` relative to ``root``, ``labels[i]``; the pixels
    of an IDX split in ``images`` (in memory), the files of a folder split under ``root``."""
    split: str
    root: str
    names: list[str]
    labels: np.ndarray
    classes: list[str]
    channels: int = 3
    images: np.ndarray | None = None
    layout: str = "imagefolder"    # or "idx" (its class names are guessed, not folders)

    def __len__(self) -> int:
        return len(self.names)

    def payload(self, i: int) -> Any:
        return self.images[i] if self.images is not None else os.path.join(self.root, self.names[i])

    def listing_digest(self) -> str:
        """SHA-256 of the names, labels and classes: what a resumed or skipped pack must have been made from."""
        h = hashlib.sha256(json.dumps(self.classes).encode())
        for name, label in zip(self.names, self.labels.tolist()):
            h.update(f"{label}\t{name}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()


def list_sources(data: str, channels: int) -> list[Source]:
    """The splits of ``data`` (an ImageNet-style tree: train/ and val/ if present; or IDX files: train
    and the t10k files as val), listed and labelled as ``open_dataset`` would, to be packed with
    ``channels`` (3: RGB, 1: grey)."""
    if channels not in (1, 3):
        raise DatasetError(f"--channels {channels}: expected 1 or 3")
    layout = detect_layout(data)
    root = os.path.abspath(data)
    if layout == "pack":
        raise DatasetError(f"{data}: already a pack; pass the image folder or IDX files it was made from")
    out = []
    if layout == "idx":
        for split in ("train", "val"):
            try:
                ds = IdxDataset(root, "train" if split == "train" else "test", channels=1)
            except DatasetError:
                if split == "train":
                    raise
                continue
            stem = os.path.basename(ds.image_file)
            out.append(Source(split, root, [f"{stem}#{i}" for i in range(len(ds))], ds.labels.astype(np.int64),
                              list(ds.classes), channels, images=ds.images, layout="idx"))
        return out
    mode = "L" if channels == 1 else "RGB"
    train = ImageFolder(os.path.join(root, "train"), mode=mode)
    splits = [("train", train)]
    if os.path.isdir(os.path.join(root, "val")):
        splits.append(("val", ImageFolder(os.path.join(root, "val"), mode=mode, classes=train.classes)))
    for split, ds in splits:
        names = [os.path.relpath(p, root) for p, _ in ds.samples]
        out.append(Source(split, root, names, np.asarray(ds.targets, dtype=np.int64), list(ds.classes), channels))
    return out


# --------------------------------------------------------------------------- one unit (in a worker)

def encode_unit(task: tuple) -> tuple:
    """Decode, preprocess and encode one unit of images (run in a pool worker).

    ``task``: (unit, [(name, path or (H, W) array)], size, channels, format, quality). Returns (unit,
    the chunk's bytes, its crc32, each kept image's byte length, the kept images' positions in the unit,
    [(name, reason)] of the unreadable ones)."""
    from PIL import Image

    unit, items, size, channels, fmt, quality = task
    mode = "RGB" if channels == 3 else "L"
    parts, lengths, kept, bad = [], [], [], []
    for k, (name, what) in enumerate(items):
        img = load_image(what, mode) if isinstance(what, str) else np.asarray(what, dtype=np.uint8)[:, :, None]
        if is_bad(img):
            bad.append((name, img.reason))
            continue
        if img.shape[2] != channels:
            img = np.repeat(img, channels, axis=2)
        try:
            img = paper_preprocess(img, size)
        except Exception as exc:  # noqa: BLE001 - an image Pillow decodes but cannot resize is unreadable too
            bad.append((name, f"{type(exc).__name__}: {exc}"))
            continue
        if fmt == "raw":
            data = img.tobytes()
        else:
            buf = io.BytesIO()
            Image.fromarray(img[:, :, 0] if channels == 1 else img).save(buf, "JPEG", quality=quality)
            data = buf.getvalue()
        parts.append(data)
        lengths.append(len(data))
        kept.append(k)
    chunk = b"".join(parts)
    return unit, chunk, crc32(chunk), lengths, kept, bad


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle (it keeps the journal)


# --------------------------------------------------------------------------- one split

@dataclass
class PackSummary:
    split: str
    path: str
    count: int = 0
    file_bytes: int = 0
    seconds: float = 0.0
    unreadable: list = field(default_factory=list)
    skipped: bool = False      # already packed with the same options: nothing done
    resumed_from: int = 0      # source images already packed by an interrupted run


class _Journal:
    """The partial file and its journal: what is on disk for sure, and where to continue."""

    def __init__(self, path: str, params: dict, log: Callable[[str], None]):
        self.data_path, self.journal_path = path + PARTIAL_SUFFIX, path + JOURNAL_SUFFIX
        self.params, self.log = params, log
        self.entries: list[dict] = []
        self.pending: list[dict] = []
        self._load()
        self.end = HEADER_BYTES + sum(e["bytes"] for e in self.entries)
        if self.entries:
            self.fh = open(self.data_path, "r+b")
            self.fh.truncate(self.end)      # whatever was written after the last journaled chunk
            self.fh.seek(self.end)
        else:
            self.fh = open(self.data_path, "w+b")
            write_header(self.fh)
        self.jfh = open(self.journal_path, "a", encoding="utf-8")
        if not self.entries:
            self.jfh.truncate(0)
            self.jfh.write(json.dumps({"params": params}) + "\n")
            self._sync()
        self.last_sync, self.unsynced = time.monotonic(), 0

    def _load(self) -> None:
        if not (os.path.exists(self.journal_path) and os.path.exists(self.data_path)):
            return
        try:
            with open(self.journal_path, encoding="utf-8") as fh:
                lines = fh.read().split("\n")
            head = json.loads(lines[0])
        except (OSError, ValueError, IndexError):
            head = None
        if not isinstance(head, dict) or head.get("params") != self.params:
            self.log(f"{self.data_path}: an unfinished pack made with other options or from other files: starting over")
            return
        size = os.path.getsize(self.data_path)
        end = HEADER_BYTES
        for line in lines[1:]:
            try:
                e = json.loads(line)
                ok = e["unit"] == len(self.entries) and isinstance(e["bytes"], int) and end + e["bytes"] <= size
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:      # a torn last line, or data that never reached the disk
                break
            self.entries.append(e)
            end += e["bytes"]

    def add(self, unit: int, chunk: bytes, crc: int, lengths: list, kept: list, bad: list) -> None:
        self.fh.write(chunk)
        self.end += len(chunk)
        self.pending.append({"unit": unit, "bytes": len(chunk), "crc32": crc, "lengths": lengths, "kept": kept,
                             "bad": bad})
        self.unsynced += len(chunk)
        if self.unsynced >= FLUSH_BYTES or time.monotonic() - self.last_sync >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """The data on disk first, then the journal lines that vouch for it."""
        if not self.pending:
            return
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.jfh.write("".join(json.dumps(e) + "\n" for e in self.pending))
        self._sync()
        self.entries += self.pending
        self.pending = []
        self.last_sync, self.unsynced = time.monotonic(), 0

    def _sync(self) -> None:
        self.jfh.flush()
        os.fsync(self.jfh.fileno())

    def close(self) -> None:
        self.fh.close()
        self.jfh.close()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class PackSpaceError(Exception):
    """The disk cannot hold the pack (a failure of the machine, not of the input); the message says how
    much is needed and what to do."""


def _check_space(out_dir: str, needed: int, n: int, size: int, channels: int) -> None:
    free = shutil.disk_usage(out_dir).free
    if needed > free:
        raise PackSpaceError(f"{out_dir}: a raw pack of {n:,} images at {size}x{size}x{channels} needs about "
                             f"{needed / 1e9:.1f} GB and {free / 1e9:.1f} GB are free; free some space or pack with "
                             "--format jpeg (several times smaller)")


def pack_split(src: Source, out_dir: str, *, size: int = DEFAULT_SIZE, fmt: str = "raw",
               quality: int = DEFAULT_QUALITY, workers: int = 1, overwrite: bool = False,
               progress: bool = True, log: Callable[[str], None] = print, chunk: int | None = None) -> PackSummary:
    """Pack one split into ``out_dir/<split>.pack`` (resuming an interrupted run of the same pack).
    ``chunk``: source images per chunk (default :func:`chunk_samples`)."""
    if fmt not in FORMATS:
        raise DatasetError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    path = split_path(out_dir, src.split)
    channels = src.channels
    per_chunk = chunk or chunk_samples(fmt, size, channels)
    params = {"format": fmt, "quality": quality if fmt == "jpeg" else None, "side": size, "channels": channels,
              "split": src.split, "source": src.root, "sources": len(src), "listing": src.listing_digest(),
              "chunk_samples": per_chunk}
    summary = PackSummary(src.split, path)
    if overwrite:
        for p in (path, path + PARTIAL_SUFFIX, path + JOURNAL_SUFFIX):
            if os.path.exists(p):
                os.unlink(p)
    elif os.path.exists(path):
        try:
            existing = PackDataset(path)
        except PackError as exc:
            raise PackError(f"{exc} (or pass --overwrite to replace it)") from None
        if existing.meta.get("params") != params:
            raise DatasetError(f"{path} already holds a pack made with other options or from other files "
                               f"({existing.format}, {existing.height}x{existing.width}x{existing.stored_channels}); "
                               "pass --overwrite to replace it, or -o another folder")
        for p in (path + PARTIAL_SUFFIX, path + JOURNAL_SUFFIX):  # left by a kill between rename and cleanup
            if os.path.exists(p):
                os.unlink(p)
        summary.count, summary.file_bytes, summary.skipped = existing.count, os.path.getsize(path), True
        summary.unreadable = existing.unreadable
        return summary
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    journal = _Journal(path, params, log)
    n_units = -(-len(src) // per_chunk)
    start = len(journal.entries)
    summary.resumed_from = min(len(src), start * per_chunk)
    if summary.resumed_from:
        log(f"{src.split}: resuming an interrupted pack at image {summary.resumed_from:,} of {len(src):,}")
    if fmt == "raw":
        try:
            _check_space(out_dir, (len(src) - summary.resumed_from) * size * size * channels, len(src), size, channels)
        except PackSpaceError:
            journal.close()
            if not journal.entries:   # nothing worth keeping for a resume
                for p in (journal.data_path, journal.journal_path):
                    os.unlink(p)
            raise
    bar = _bar(len(src), summary.resumed_from, f"packing {src.split}", progress)

    def task(u: int) -> tuple:
        items = [(src.names[i], src.payload(i)) for i in range(u * per_chunk, min((u + 1) * per_chunk, len(src)))]
        return (u, items, size, channels, fmt, quality)

    results = _encoded(task, range(start, n_units), workers)
    try:
        for result in results:
            journal.add(*result)
            bar.update(len(result[4]) + len(result[5]))
        journal.flush()
    except BaseException:
        results.close()   # stops the pool
        try:
            journal.flush()   # what is written is kept: the same command continues from here
        except OSError:
            pass
        journal.close()
        bar.close()
        raise
    bar.close()
    try:
        summary.file_bytes, summary.count, summary.unreadable = _finish(journal, src, params, path, per_chunk)
    finally:
        journal.close()
    os.replace(journal.data_path, path)
    _fsync_dir(path)
    os.unlink(journal.journal_path)
    summary.seconds = time.perf_counter() - t0
    return summary


def _encoded(task: Callable[[int], tuple], units: range, workers: int):
    """encode_unit's results for ``units``, in order: in this process for one worker, else from a
    process pool with a bounded number of units in flight."""
    if workers <= 1 or len(units) <= 1:
        for u in units:
            yield encode_unit(task(u))
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method), initializer=_ignore_sigint)
    try:
        pending: dict[int, Any] = {}
        todo = iter(units)
        window = 3 * workers
        for u in units:
            while len(pending) < window:
                nxt = next(todo, None)
                if nxt is None:
                    break
                pending[nxt] = pool.submit(encode_unit, task(nxt))
            yield pending.pop(u).result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _finish(journal: _Journal, src: Source, params: dict, path: str, per_chunk: int) -> tuple[int, int, list]:
    """Write the index, metadata and trailer after the samples; (file bytes, samples, unreadable)."""
    labels, names, lengths, unreadable, chunks = [], [], [], [], []
    offset, first = HEADER_BYTES, 0
    for e in journal.entries:
        base = e["unit"] * per_chunk
        for k in e["kept"]:
            labels.append(int(src.labels[base + k]))
            names.append(src.names[base + k])
        lengths += e["lengths"]
        unreadable += [list(b) for b in e["bad"]]
        if e["kept"]:
            chunks.append((offset, e["bytes"], e["crc32"], first))
            offset += e["bytes"]
            first += len(e["kept"])
    if not labels:
        shown = "; ".join(f"{n}: {r}" for n, r in unreadable[:3])
        raise DatasetError(f"{src.root}: no readable image in the {src.split} split ({len(unreadable)} unreadable: "
                           f"{shown}); nothing packed")
    blocks = {"labels": np.asarray(labels, dtype="<i4").tobytes(),
              "chunks": np.asarray(chunks, dtype="<u8").tobytes()}
    if params["format"] == "jpeg":
        blocks["offsets"] = (HEADER_BYTES + np.concatenate([[0], np.cumsum(lengths)])).astype("<u8").tobytes()
    blocks["sources"] = json.dumps(names).encode()
    meta = {"format": params["format"], "quality": params["quality"], "height": params["side"],
            "width": params["side"], "channels": params["channels"], "count": len(labels), "classes": src.classes,
            "split": src.split, "source": src.root, "layout": src.layout, "params": params, "unreadable": unreadable,
            "preprocessing": PREPROCESSING.format(size=params["side"]),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    fh = journal.fh
    fh.seek(journal.end)
    fh.truncate(journal.end)
    total = write_index(fh, meta, blocks)
    fh.flush()
    os.fsync(fh.fileno())
    return total, len(labels), unreadable


class _bar:
    """tqdm over images with an ETA; silent when disabled or when stderr is not a terminal."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            import sys

            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="img", dynamic_ncols=True, disable=None,
                            file=sys.stderr, smoothing=0.05)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_unreadable(split: str, unreadable: list, limit: int = 20) -> str | None:
    """'train: 2 unreadable images not packed: a.jpg (OSError: ...), ...' (None when there are none)."""
    if not unreadable:
        return None
    shown = ", ".join(f"{name} ({reason})" for name, reason in unreadable[:limit])
    more = f" and {len(unreadable) - limit} more (listed in the pack's metadata)" if len(unreadable) > limit else ""
    n = len(unreadable)
    return f"{split}: {n} unreadable image{'s' if n != 1 else ''} not packed: {shown}{more}"
