"""The pack file: one split of a dataset preprocessed once (the paper's 256x256), read memory-mapped.

``alexnetc pack`` (``packer.py``) writes ``OUT/train.pack`` and ``OUT/val.pack``; ``--data OUT`` opens
them through :func:`~.datasets.open_dataset`, which returns a :class:`PackDataset`. This module is the
format, both sides: the layout below, the writer's header and index (:func:`write_header`,
:func:`write_index`) and the reader.

Layout (little-endian)::

    [0, 4096)      header: MAGIC, format version, zeros (so the data start page-aligned)
    [4096, ...)    the samples in sample order, grouped in chunks. raw: (H, W, C) uint8 each, back to
                   back, so the data region is one (N, H, W, C) array; jpeg: one JPEG file each
    then           index blocks: labels (int32, N); chunks (uint64, (chunks, 4): offset, bytes, crc32,
                   first sample); offsets (uint64, N + 1, jpeg only: where each sample starts);
                   sources (a JSON list of paths, relative to the source folder)
    then           metadata (JSON): format, geometry, classes, the blocks' places and crc32s, ...
    last 32 bytes  trailer: END_MAGIC, metadata offset and length (uint64), its crc32 (uint32), 0 (uint32)

A file without its trailer (a killed writer, a truncated copy) is refused, as is one whose metadata or
index blocks fail their crc32. Sample chunks are checked lazily: the first read of a chunk in a process
checks its crc32 (zlib's, about 2 GB/s on one core) and a mismatch raises :class:`PackError` naming the
chunk, so a pack is checked once per process as it is read, never read twice up front.
"""
from __future__ import annotations

import io
import json
import os
import struct
import zlib
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import DatasetError

MAGIC = b"ALXPACK\x00"
END_MAGIC = b"ALXPKEND"
VERSION = 1
HEADER_BYTES = 4096
_TRAILER = struct.Struct("<8sQQII")
TRAILER_BYTES = _TRAILER.size  # 32
FORMATS = ("raw", "jpeg")
SUFFIX = ".pack"
PARTIAL_SUFFIX = ".partial"
# a split name the datasets use -> the pack file that holds it
SPLIT_FILES = {"train": "train", "val": "val", "test": "val"}
_BLOCKS = {"labels": np.dtype("<i4"), "chunks": np.dtype("<u8"), "offsets": np.dtype("<u8"), "sources": np.dtype("u1")}


class PackError(DatasetError):
    """A pack file is malformed, truncated or corrupt (a chunk fails its checksum); the message names
    the file and, for a chunk, which one and what to do."""


def split_path(root: str | os.PathLike, split: str) -> str:
    """``root/train.pack`` for "train", ``root/val.pack`` for "val" or "test"."""
    return os.path.join(str(root), SPLIT_FILES.get(split, split) + SUFFIX)


def is_pack_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a finished pack (its ``train.pack``)."""
    return os.path.isfile(split_path(path, "train"))


def crc32(data: Any) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


# --------------------------------------------------------------------------- writing (packer.py)

def write_header(fh: Any) -> None:
    """The first HEADER_BYTES of a pack; the samples follow."""
    head = MAGIC + struct.pack("<II", VERSION, 0)
    fh.write(head + bytes(HEADER_BYTES - len(head)))


def write_index(fh: Any, meta: dict, blocks: dict[str, bytes]) -> int:
    """Append the index blocks, the metadata and the trailer at ``fh``'s position (the end of the
    samples); return the file's size. ``meta`` gets ``blocks`` (place and crc32 of each) and
    ``file_bytes``."""
    pos = fh.tell()
    table = {}
    for name, data in blocks.items():
        fh.write(data)
        table[name] = {"offset": pos, "nbytes": len(data), "crc32": crc32(data)}
        pos += len(data)
    meta = dict(meta, version=VERSION, blocks=table)
    body = json.dumps(dict(meta, file_bytes=0), separators=(",", ":")).encode()
    # file_bytes is part of the metadata it measures: its digits change the length, so fix it by iteration
    for _ in range(4):
        total = pos + len(body) + TRAILER_BYTES
        body = json.dumps(dict(meta, file_bytes=total), separators=(",", ":")).encode()
        if pos + len(body) + TRAILER_BYTES == total:
            break
    fh.write(body)
    fh.write(_TRAILER.pack(END_MAGIC, pos, len(body), crc32(body), 0))
    return pos + len(body) + TRAILER_BYTES


# --------------------------------------------------------------------------- reading

class _Samples:
    """``(source file, label)`` per sample, read from the pack's sources block when first asked."""

    def __init__(self, pack: "PackDataset"):
        self.pack = pack

    def __len__(self) -> int:
        return len(self.pack)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.pack.source(i), int(self.pack.labels[i])


class PackDataset:
    """One split of a pack: ``dataset[i]`` is ``(image (H, W, C) uint8, label)`` like the other
    datasets, and :meth:`read` returns a batch of images at once (the batched loader's path).

    ``channels``: what to deliver (default: what is stored); a grey pack delivers 3 channels by
    repeating its one, a colour pack refuses to deliver 1. ``classes``: the class names to label with
    (the training split's, or a model's): labels are mapped by name, and a packed class missing from
    them is an error.
    """

    def __init__(self, path: str | os.PathLike, classes: Sequence[str] | None = None, channels: int | None = None):
        self.path = self.root = os.path.abspath(str(path))
        self._open_args = (classes, channels)
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                self.meta = self._read_meta(fh, size)
        except OSError as exc:
            raise PackError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        m = self.meta
        self.format = m["format"]
        self.height, self.width, self.stored_channels = m["height"], m["width"], m["channels"]
        self.sample_bytes = self.height * self.width * self.stored_channels
        self.count = m["count"]
        self.split = m.get("split")
        self.source_root = m.get("source", "")
        self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        labels = self._block("labels").astype(np.int64)
        chunks = self._block("chunks").reshape(-1, 4)
        self.chunk_offset, self.chunk_bytes = chunks[:, 0].astype(np.int64), chunks[:, 1].astype(np.int64)
        self.chunk_crc, self.chunk_first = chunks[:, 2].astype(np.int64), chunks[:, 3].astype(np.int64)
        self._check_chunks(size)
        if self.format == "raw":
            end = HEADER_BYTES + self.count * self.sample_bytes
            self._images = self._mm[HEADER_BYTES:end].reshape(self.count, self.height, self.width, self.stored_channels)
        else:
            self._offsets = self._block("offsets").astype(np.int64)
            o = self._offsets
            if (len(o) != self.count + 1 or np.any(np.diff(o) <= 0) or np.any(o[self.chunk_first] != self.chunk_offset)
                    or o[-1] != self.chunk_offset[-1] + self.chunk_bytes[-1]):
                raise PackError(f"{self.path}: the sample offsets are inconsistent (the file is corrupt)")
        self._verified = np.zeros(len(self.chunk_offset), dtype=bool)
        self._sources: list[str] | None = None
        self.classes = list(m["classes"])
        if classes is not None and list(classes) != self.classes:
            wanted = {c: i for i, c in enumerate(classes)}
            unknown = [c for c in self.classes if c not in wanted]
            if unknown:
                raise PackError(f"{self.path}: packed class(es) {', '.join(unknown[:5])} are not among the "
                                f"{len(wanted)} classes asked for")
            labels = np.array([wanted[c] for c in self.classes], dtype=np.int64)[labels]
            self.classes = list(classes)
        self.labels = labels
        self.targets = labels.tolist()
        want = channels or self.stored_channels
        if want not in (1, 3):
            raise PackError(f"{self.path}: channels must be 1 or 3, not {want}")
        if want == 1 and self.stored_channels == 3:
            raise PackError(f"{self.path}: packed in colour, but grey (1-channel) images are asked for: pack "
                            "the data again with --channels 1")
        self.channels = want
        self.mode = "RGB" if want == 3 else "L"

    # -- opening ---------------------------------------------------------------------------------------
    def _read_meta(self, fh: Any, size: int) -> dict:
        head = fh.read(16)
        if head[:8] != MAGIC:
            raise PackError(f"{self.path}: not an alexnetc pack (bad magic bytes)")
        version = struct.unpack("<I", head[8:12])[0]
        if version != VERSION:
            raise PackError(f"{self.path}: pack format version {version}; this alexnetc reads version {VERSION} "
                            "(pack the data again)")
        if size < HEADER_BYTES + TRAILER_BYTES:
            raise PackError(f"{self.path}: truncated ({size} bytes): an unfinished or cut copy; pack the data again")
        fh.seek(size - TRAILER_BYTES)
        end, off, length, crc, _ = _TRAILER.unpack(fh.read(TRAILER_BYTES))
        if end != END_MAGIC or not HEADER_BYTES <= off <= size - TRAILER_BYTES - length or length > 1 << 30:
            raise PackError(f"{self.path}: truncated or damaged: no valid end record in its last {TRAILER_BYTES} "
                            "bytes (an unfinished or cut copy); pack the data again")
        fh.seek(off)
        body = fh.read(length)
        if crc32(body) != crc:
            raise PackError(f"{self.path}: its metadata fails its checksum (the file is corrupt); pack the data again")
        try:
            meta = json.loads(body)
        except ValueError:
            raise PackError(f"{self.path}: its metadata is not valid JSON (the file is corrupt)") from None
        problem = _check_meta(meta, size)
        if problem:
            raise PackError(f"{self.path}: {problem}")
        return meta

    def _block(self, name: str) -> np.ndarray:
        b = self.meta["blocks"].get(name)
        if b is None:
            raise PackError(f"{self.path}: no {name} block (the file is corrupt)")
        raw = self._mm[b["offset"]:b["offset"] + b["nbytes"]]
        if crc32(raw) != b["crc32"]:
            raise PackError(f"{self.path}: its {name} block fails its checksum (the file is corrupt); pack the "
                            "data again")
        dtype = _BLOCKS[name]
        if b["nbytes"] % dtype.itemsize:
            raise PackError(f"{self.path}: its {name} block has a partial element (the file is corrupt)")
        return raw.view(dtype)

    def _check_chunks(self, size: int) -> None:
        n = len(self.chunk_offset)
        ok = (n >= 1 and self.chunk_first[0] == 0 and np.all(np.diff(self.chunk_first) > 0)
              and self.chunk_first[-1] < self.count and self.chunk_offset[0] == HEADER_BYTES
              and np.all(self.chunk_offset[1:] == self.chunk_offset[:-1] + self.chunk_bytes[:-1])
              and self.chunk_offset[-1] + self.chunk_bytes[-1] <= size)
        if self.format == "raw":
            counts = np.diff(np.append(self.chunk_first, self.count))
            ok = ok and bool(np.all(self.chunk_bytes == counts * self.sample_bytes))
        if not ok:
            raise PackError(f"{self.path}: its chunk table is inconsistent (the file is corrupt); pack the data again")

    def __getstate__(self) -> dict:
        # a memory map does not travel to another process (spawn): the copy opens the file again
        return {"path": self.path, "args": self._open_args}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], *state["args"])

    # -- checking --------------------------------------------------------------------------------------
    def chunks_of(self, indices: Any) -> np.ndarray:
        """The chunk holding each sample index."""
        return np.searchsorted(self.chunk_first, np.asarray(indices, dtype=np.int64), side="right") - 1

    def verify(self, chunks: Any = None) -> None:
        """Check the crc32 of ``chunks`` (default: all) not checked yet in this process; PackError naming
        the first that fails."""
        todo = np.arange(len(self._verified)) if chunks is None else np.unique(np.asarray(chunks, dtype=np.int64))
        for c in todo[~self._verified[todo]]:
            off, nbytes = int(self.chunk_offset[c]), int(self.chunk_bytes[c])
            got = crc32(self._mm[off:off + nbytes])
            if got != int(self.chunk_crc[c]):
                first = int(self.chunk_first[c])
                last = int(self.chunk_first[c + 1]) - 1 if c + 1 < len(self.chunk_first) else self.count - 1
                raise PackError(f"{self.path}: chunk {c} (samples {first}-{last}, bytes {off}-{off + nbytes - 1}) fails "
                                f"its checksum (crc32 {got:08x}, expected {int(self.chunk_crc[c]):08x}): the file is "
                                "corrupt; pack the data again (alexnetc pack ... --overwrite)")
            self._verified[c] = True

    # -- reading ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.count

    def _check_indices(self, idx: np.ndarray) -> None:
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.count):
            bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
            raise IndexError(f"{self.path}: sample {bad} is out of range (0..{self.count - 1})")

    def read(self, indices: Any, out: np.ndarray | None = None) -> np.ndarray:
        """The stored images of ``indices`` as one ``(n, H, W, stored_channels)`` uint8 array (into
        ``out`` when given), their chunks checked first."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        self._check_indices(idx)
        self.verify(self.chunks_of(idx))
        if self.format == "raw":
            if out is None:
                return self._images[idx]
            np.take(self._images, idx, axis=0, out=out)
            return out
        if out is None:
            out = np.empty((len(idx), self.height, self.width, self.stored_channels), dtype=np.uint8)
        for j, i in enumerate(idx.tolist()):
            out[j] = self._decode(i)
        return out

    def windows(self, indices: Any, top: Any, left: Any, mirror: Any, height: int,
                width: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(j, patch j)``: the ``height`` x ``width`` window at (``top[j]``, ``left[j]``) of sample
        ``indices[j]``, mirrored where ``mirror[j]``, as an (height, width, stored_channels) view of the
        memory map (raw) or of the decoded image (jpeg, decoded once for consecutive patches of one
        sample); the chunks are checked first."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        self._check_indices(idx)
        self.verify(self.chunks_of(idx))
        prev, src = -1, None
        for j, (i, t, l, m) in enumerate(zip(idx.tolist(), np.asarray(top).tolist(), np.asarray(left).tolist(),
                                             np.asarray(mirror).tolist())):
            if i != prev:
                src = self._images[i] if self.format == "raw" else self._decode(i)
                prev = i
            win = src[t:t + height, l:l + width]
            if win.shape[:2] != (height, width) or t < 0 or l < 0:
                raise IndexError(f"{self.path}: window {height}x{width} at ({t}, {l}) outside a "
                                 f"{self.height}x{self.width} image")
            yield j, (win[:, ::-1] if m else win)

    def _decode(self, i: int) -> np.ndarray:
        from PIL import Image

        a, b = int(self._offsets[i]), int(self._offsets[i + 1])
        want = (self.height, self.width) + ((self.stored_channels,) if self.stored_channels == 3 else ())
        try:
            with Image.open(io.BytesIO(self._mm[a:b])) as im:
                arr = np.asarray(im)
        except Exception as exc:  # noqa: BLE001 - a JPEG that passed its crc but does not decode
            raise PackError(f"{self.path}: sample {i} ({self.source(i)}) does not decode ({type(exc).__name__}: "
                            f"{exc}): the file is corrupt; pack the data again") from None
        if arr.shape != want:
            raise PackError(f"{self.path}: sample {i} decodes to {arr.shape}, not {want} (the file is corrupt)")
        return arr.reshape(self.height, self.width, self.stored_channels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        img = self.read([index])[0]
        if self.channels == 3 and self.stored_channels == 1:
            img = np.repeat(img, 3, axis=2)
        return img, int(self.labels[index])

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        for i in range(len(self)):
            yield self[i]

    # -- names -----------------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return self.classes

    @property
    def empty_classes(self) -> list[str]:
        """The classes no packed sample has (as ImageFolder's empty class folders: a class the network
        could never learn, which training refuses, see ``datasets.check_class_images``)."""
        if self.meta.get("layout") == "idx":   # IDX class names are guessed, as IdxDataset's: nothing to check
            return []
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return [c for c, k in zip(self.classes, counts.tolist()) if k == 0]

    @property
    def samples(self) -> _Samples:
        """``samples[i]``: ``(source file, label)``, as ImageFolder's list (the file the sample came from)."""
        return _Samples(self)

    def source(self, i: int) -> str:
        """The file sample ``i`` was packed from (absolute, as it was when packed)."""
        if self._sources is None:
            try:
                self._sources = json.loads(bytes(self._block("sources")))
            except ValueError:
                raise PackError(f"{self.path}: its sources block is not valid JSON (the file is corrupt)") from None
            if not isinstance(self._sources, list) or len(self._sources) != self.count:
                raise PackError(f"{self.path}: its sources block does not name one file per sample (the file is corrupt)")
        return os.path.join(self.source_root, self._sources[i]) if self.source_root else self._sources[i]

    @property
    def unreadable(self) -> list[tuple[str, str]]:
        """``(file, reason)`` of each source image that could not be read when packing (not in the pack)."""
        return [(str(p), str(r)) for p, r in self.meta.get("unreadable", [])]

    def __repr__(self) -> str:
        return (f"PackDataset({self.path!r}, {self.count} images {self.height}x{self.width}x{self.stored_channels}, "
                f"{self.format}, {len(self.classes)} classes)")


def _check_meta(meta: Any, size: int) -> str | None:
    """What is wrong with a pack's metadata (None: nothing)."""
    if not isinstance(meta, dict):
        return "its metadata is not an object (the file is corrupt)"
    for key, kind in (("format", str), ("height", int), ("width", int), ("channels", int), ("count", int),
                      ("classes", list), ("blocks", dict), ("file_bytes", int)):
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            return f"its metadata lacks a valid {key!r} (the file is corrupt)"
    if meta["format"] not in FORMATS:
        return f"unknown sample format {meta['format'][:20]!r} (expected {' or '.join(FORMATS)})"
    if meta["channels"] not in (1, 3) or meta["height"] < 1 or meta["width"] < 1 or meta["count"] < 1:
        return "its metadata has impossible sizes (the file is corrupt)"
    if meta["file_bytes"] != size:
        return (f"the file holds {size} bytes but was written with {meta['file_bytes']}: a cut or damaged copy; "
                "pack the data again")
    for name, b in meta["blocks"].items():
        if name not in _BLOCKS or not isinstance(b, dict) or not all(
                isinstance(b.get(k), int) and b[k] >= 0 for k in ("offset", "nbytes", "crc32")):
            return f"its block table is malformed at {str(name)[:20]!r} (the file is corrupt)"
        if b["offset"] < HEADER_BYTES or b["offset"] + b["nbytes"] > size - TRAILER_BYTES:
            return f"its {name} block lies outside the file (the file is corrupt)"
    if meta["blocks"].get("labels", {}).get("nbytes") != 4 * meta["count"]:
        return "its labels block does not hold one label per sample (the file is corrupt)"
    return None


def open_pack(root: str | os.PathLike, split: str = "train", classes: Sequence[str] | None = None,
              channels: int | None = None) -> PackDataset:
    """The ``split`` of the pack in folder ``root`` (``root/train.pack``, ``root/val.pack``)."""
    if split not in SPLIT_FILES:
        raise DatasetError(f"{root}: unknown split {split!r} (use train or val)")
    path = split_path(root, split)
    if not os.path.isfile(path):
        hint = (f" ({os.path.basename(path)}{PARTIAL_SUFFIX} is an unfinished pack: run the same alexnetc pack "
                "command again to finish it)") if os.path.exists(path + PARTIAL_SUFFIX) else \
            " (the source had no such split when it was packed)"
        raise DatasetError(f"{root}: no {os.path.basename(path)} in this pack{hint}")
    return PackDataset(path, classes=classes, channels=channels)
