"""Datasets for the runtime: ImageNet-style image folders and MNIST/Fashion-MNIST IDX files.

Every dataset here returns ``(image, label)`` where ``image`` is a ``numpy.uint8`` array of shape
``(H, W, C)`` (C = 3 for RGB, 1 for grey) and ``label`` an ``int``. An image that cannot be decoded
comes back as a :class:`BadSample` instead (never an exception): the loader's collate function drops
it and the loader reports the file names (see ``loader.py``), so one corrupt JPEG in ImageNet never
stops a 90-epoch run.

- :class:`ImageFolder`: ``SPLIT_DIR/<class>/<file>.jpg`` (class names sorted), decoded with Pillow.
- :class:`IdxDataset`: the MNIST/Fashion-MNIST IDX files (``train-images-idx3-ubyte[.gz]`` …),
  parsed with numpy from their big-endian header.
- :func:`find_default_dataset`: ``$ALEXNETC_DATA``, else Debian's ``dataset-fashion-mnist`` package.
- :func:`open_dataset`: detect which layout a directory holds (these two, or a pack: ``pack.py``) and
  open one split.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import DatasetError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".pnm",
                              ".tif", ".tiff", ".webp", ".gif"})

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))

DEFAULT_DATA_DIRS = ("/usr/share/datasets/fashion-mnist",)
DATA_ENV = "ALEXNETC_DATA"

# The most bytes one IDX file may hold once decompressed (its header is checked against this before
# anything is inflated or read; a gzip stream longer than its header promises is refused too).
MAX_IDX_BYTES = 4 << 30
MAX_IDX_BYTES_ENV = "ALEXNETC_MAX_IDX_BYTES"


def max_idx_bytes() -> int:
    """``MAX_IDX_BYTES``, or ``$ALEXNETC_MAX_IDX_BYTES`` when set (a positive integer)."""
    raw = os.environ.get(MAX_IDX_BYTES_ENV, "").strip()
    if not raw:
        return MAX_IDX_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise DatasetError(f"{MAX_IDX_BYTES_ENV}={raw[:40]!r}: expected a positive integer (default {MAX_IDX_BYTES})")
    return value

# split name -> IDX file prefix
_IDX_SPLITS = {"train": "train", "val": "t10k", "test": "t10k", "t10k": "t10k"}
# IDX type codes (third magic byte) -> numpy big-endian dtype
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


@dataclass(frozen=True)
class BadSample:
    """Stands in for an image that could not be decoded. ``path``: the file; ``reason``: why."""
    path: str
    reason: str


def is_bad(sample: Any) -> bool:
    return isinstance(sample, BadSample)


# --------------------------------------------------------------------------- image folders

class ImageFolder:
    """One split of an ImageNet-style tree: ``split_dir/<class>/<image file>``.

    ``mode``: "RGB" (3 channels) or "L" (1 channel). ``classes``: the class list to label with (pass
    the training split's list when opening ``val`` so indices agree; a class folder not in it is an
    error). Files are those with an image extension (case-insensitive), sorted per class.
    """

    def __init__(self, split_dir: str | os.PathLike, mode: str = "RGB",
                 classes: Sequence[str] | None = None):
        if mode not in ("RGB", "L"):
            raise DatasetError(f"{split_dir}: image mode must be 'RGB' or 'L', not {mode!r}")
        self.root = str(Path(split_dir).resolve())
        self.mode = mode
        self.channels = 3 if mode == "RGB" else 1
        if not os.path.isdir(self.root):
            raise DatasetError(f"{split_dir}: no such directory")
        found = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))
        if not found:
            raise DatasetError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>.jpg)")
        if classes is None:
            self.classes = found
        else:
            self.classes = list(classes)
            unknown = sorted(set(found) - set(self.classes))
            if unknown:
                raise DatasetError(f"{split_dir}: class folder(s) {', '.join(unknown[:5])} are not among the "
                                   f"{len(self.classes)} training classes")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        samples: list[tuple[str, int]] = []
        self.empty_classes: list[str] = []   # class folders without an image file
        for c in found:
            cdir = os.path.join(self.root, c)
            files = sorted(e.name for e in os.scandir(cdir)
                           if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)
            samples.extend((os.path.join(cdir, f), self.class_to_idx[c]) for f in files)
            if not files:
                self.empty_classes.append(c)
        if not samples:
            raise DatasetError(f"{split_dir}: class folders hold no image files "
                               f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.samples = samples
        self.targets = [lbl for _, lbl in samples]

    @property
    def class_names(self) -> list[str]:
        """The class names, label order (same list as ``classes``)."""
        return self.classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return load_image(path, self.mode), label

    def __repr__(self) -> str:
        return f"ImageFolder({self.root!r}, {len(self)} images, {len(self.classes)} classes, {self.mode})"


def check_class_images(dataset: Any, allow_empty: bool, warn: Any) -> None:
    """A training split whose class folders include one with no image trains a network with a class it
    can never learn: a DatasetError naming the folders, or with ``allow_empty`` a warning through
    ``warn``. (Datasets without class folders, such as IDX files, have nothing to check.)"""
    from ...compiler.limits import excerpt

    empty = list(getattr(dataset, "empty_classes", None) or [])
    if not empty:
        return
    names = ", ".join(excerpt(c, 80) for c in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
    what = (f"{getattr(dataset, 'root', 'the training split')}: {len(empty)} class folder"
            f"{'s hold' if len(empty) != 1 else ' holds'} no image ({names})")
    if not allow_empty:
        raise DatasetError(f"{what}: the network would have a class it can never learn; add images, remove the "
                           "folder, or pass --allow-empty-classes to train anyway")
    warn(f"warning: {what}; training anyway (--allow-empty-classes): the network can never predict "
         f"{'them' if len(empty) != 1 else 'it'}")


def load_image(path: str, mode: str = "RGB") -> Any:
    """Decode ``path`` to an ``(H, W, C)`` uint8 array, or a :class:`BadSample` if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert(mode)  # convert() forces a full decode: truncated data raises here
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - any decoder failure makes the sample bad, never a crash
        return BadSample(path, f"{type(exc).__name__}: {exc}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.size == 0:
        return BadSample(path, "empty image")
    return arr


# --------------------------------------------------------------------------- IDX (MNIST)

def _idx_header(path: str, head: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, dims, total bytes) from the first bytes of an IDX file; DatasetError when malformed."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (bad magic number {head[:4].hex() or 'empty'})")
    code, ndim = head[2], head[3]
    if code not in _IDX_DTYPES:
        raise DatasetError(f"{path}: unknown IDX data type 0x{code:02x}")
    if ndim == 0 or len(head) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: truncated IDX header ({ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(head, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    count = 1
    for d in dims:
        count *= d
    return dtype, dims, 4 + 4 * ndim + count * dtype.itemsize


def _check_idx_size(path: str, dims: tuple[int, ...], expected: int) -> None:
    cap = max_idx_bytes()
    if expected > cap:
        raise DatasetError(f"{path}: IDX header says {'x'.join(map(str, dims))} ({expected:,} bytes), more than "
                           f"the {cap:,} bytes allowed (set {MAX_IDX_BYTES_ENV} to raise the limit)")


def _inflate_idx(path: str, fh) -> bytes:
    """Decompress a gzip'ed IDX file, never producing more than its header promises (a gzip bomb stops
    at the header's size plus one byte)."""
    import zlib

    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = bytearray()
    limit = 4 + 4 * 255  # enough for any header; then the header's own total
    checked = False
    try:
        while True:
            chunk = d.unconsumed_tail or fh.read(1 << 20)
            if not chunk:
                break
            out += d.decompress(chunk, max(limit + 1 - len(out), 1))
            if not checked and len(out) >= 4 and len(out) >= 4 + 4 * out[3]:
                _, dims, expected = _idx_header(path, bytes(out[:4 + 4 * out[3]]))
                _check_idx_size(path, dims, expected)
                limit, checked = expected, True
            if len(out) > limit:
                what = f"{limit:,} bytes its header promises" if checked else "any IDX header"
                raise DatasetError(f"{path}: gzip data inflates to more than the {what} (a corrupt file or a "
                                   "decompression bomb)")
            if d.eof:
                break
    except zlib.error as exc:
        raise DatasetError(f"{path}: corrupt gzip data: {exc}") from None
    if not d.eof:
        raise DatasetError(f"{path}: corrupt gzip data: the compressed stream is truncated")
    return bytes(out)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file (raw or gzip, detected from the content) into a native-endian array.

    The header's size is checked against ``MAX_IDX_BYTES`` (and the file's real size) before the data
    are read or inflated."""
    path = str(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4 + 4 * 255)
            if head[:2] == b"\x1f\x8b":
                fh.seek(0)
                raw = _inflate_idx(path, fh)
            else:
                _, dims, expected = _idx_header(path, head)
                _check_idx_size(path, dims, expected)
                size = os.fstat(fh.fileno()).st_size
                if size != expected:
                    raise DatasetError(f"{path}: IDX header says {'x'.join(map(str, dims))} "
                                       f"({expected} bytes) but the file holds {size} bytes")
                fh.seek(0)
                raw = fh.read(expected + 1)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    dtype, dims, expected = _idx_header(path, raw[:4 + 4 * 255])
    if len(raw) != expected:
        raise DatasetError(f"{path}: IDX header says {'x'.join(map(str, dims))} "
                           f"({expected} bytes) but the file holds {len(raw)} bytes")
    count = (expected - 4 - 4 * len(dims)) // dtype.itemsize
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=4 + 4 * len(dims)).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _idx_file(directory: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz"):
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    # also the dotted spelling some mirrors use (train-images.idx3-ubyte)
    alt = stem.replace("-idx", ".idx")
    for name in (alt, alt + ".gz"):
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    return None


def is_idx_dir(path: str | os.PathLike) -> bool:
    return os.path.isdir(path) and _idx_file(str(path), "train-images-idx3-ubyte") is not None


class IdxDataset:
    """MNIST-family IDX files in ``directory``: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

    ``split``: "train", or "val"/"test" (both the t10k files). ``classes``: names for the labels;
    by default Fashion-MNIST's when the directory's path says "fashion" or the images look like
    clothes (mean intensity ≈ 73 rather than MNIST's ≈ 33), else the digits. ``channels=3`` repeats
    the grey channel (to feed an RGB network).
    """

    def __init__(self, directory: str | os.PathLike, split: str = "train",
                 classes: Sequence[str] | None = None, channels: int = 1):
        self.root = str(Path(directory).resolve())
        if split not in _IDX_SPLITS:
            raise DatasetError(f"{directory}: unknown split {split!r} (use train, val or test)")
        if channels not in (1, 3):
            raise DatasetError(f"{directory}: channels must be 1 or 3, not {channels}")
        prefix = _IDX_SPLITS[split]
        img_path = _idx_file(self.root, f"{prefix}-images-idx3-ubyte")
        lbl_path = _idx_file(self.root, f"{prefix}-labels-idx1-ubyte")
        if img_path is None or lbl_path is None:
            missing = f"{prefix}-images-idx3-ubyte" if img_path is None else f"{prefix}-labels-idx1-ubyte"
            raise DatasetError(f"{directory}: no {missing}[.gz] for split {split!r}")
        images, labels = read_idx(img_path), read_idx(lbl_path)
        if images.ndim != 3:
            raise DatasetError(f"{img_path}: expected N x H x W images, got shape {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DatasetError(f"{lbl_path}: {labels.shape[0] if labels.ndim else 0} labels for "
                               f"{len(images)} images in {img_path}")
        self.split = split
        self.image_file, self.label_file = img_path, lbl_path
        self.images = np.ascontiguousarray(images.astype(np.uint8, copy=False))
        self.labels = labels.astype(np.int64)
        self.channels = channels
        self.mode = "RGB" if channels == 3 else "L"
        n_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        if classes is not None:
            self.classes = list(classes)
            if n_classes > len(self.classes):
                raise DatasetError(f"{lbl_path}: label {n_classes - 1} but only {len(self.classes)} class names")
            self.kind = "custom"
        elif n_classes <= 10 and self._looks_fashion():
            self.classes, self.kind = list(FASHION_MNIST_CLASSES), "fashion-mnist"
        elif n_classes <= 10:
            self.classes, self.kind = list(MNIST_CLASSES), "mnist"
        else:
            self.classes, self.kind = [str(i) for i in range(n_classes)], "idx"
        self.targets = self.labels.tolist()

    def _looks_fashion(self) -> bool:
        if "fashion" in self.root.lower():
            return True
        if "mnist" in os.path.basename(self.root).lower():
            return False
        sample = self.images[: min(len(self.images), 2000)]
        return bool(sample.size) and float(sample.mean()) > 50.0

    @property
    def class_names(self) -> list[str]:
        """The class names, label order (same list as ``classes``)."""
        return self.classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        img = self.images[index][:, :, None]
        if self.channels == 3:
            img = np.repeat(img, 3, axis=2)
        return img, int(self.labels[index])

    def __repr__(self) -> str:
        return f"IdxDataset({self.root!r}, split={self.split!r}, {len(self)} images, {self.kind})"


def channel_mapping(dataset: Any, channels: int) -> str | None:
    """One sentence saying how a dataset's images are mapped onto `channels` input channels, when they
    are (grey IDX images repeated onto 3; colour images of a tree converted to grey for 1); None when
    they are used as they are."""
    if isinstance(dataset, IdxDataset) and channels == 3:
        return (f"the images in {dataset.root} are grey: each is repeated on the network's 3 input channels "
                "(R = G = B)")
    if isinstance(dataset, ImageFolder) and channels == 1:
        return (f"the network has 1 input channel: the images in {dataset.root} are converted to grey "
                "(L = 0.299 R + 0.587 G + 0.114 B; grey images as they are)")
    return None


# --------------------------------------------------------------------------- discovery

def find_default_dataset() -> str:
    """The directory to train on when the user passed no ``--data``.

    ``$ALEXNETC_DATA`` if set (it must then be a dataset directory), else Fashion-MNIST as installed
    by Debian/Ubuntu's ``dataset-fashion-mnist`` package. Raises :class:`DatasetError` saying how to
    get one otherwise.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        if not os.path.isdir(env):
            raise DatasetError(f"{DATA_ENV}={env}: no such directory")
        detect_layout(env)  # raises naming the path if it is neither layout
        return env
    for d in DEFAULT_DATA_DIRS:
        if is_idx_dir(d) and _idx_file(d, "t10k-images-idx3-ubyte"):
            return d
    raise DatasetError(
        "no dataset found: looked for Fashion-MNIST in " + ", ".join(DEFAULT_DATA_DIRS)
        + f" and ${DATA_ENV} is unset. Install it with `sudo apt-get install dataset-fashion-mnist`, "
        f"set {DATA_ENV}=DIR, or pass --data DIR (an MNIST-style IDX directory, or an ImageNet-style "
        "root with train/<class>/*.jpg and val/<class>/*)")


def detect_layout(path: str | os.PathLike) -> str:
    """"pack", "idx" or "imagefolder" for ``path``; :class:`DatasetError` naming it when it is none."""
    p = str(path)
    if not os.path.exists(p):
        raise DatasetError(f"{p}: no such directory")
    if not os.path.isdir(p):
        raise DatasetError(f"{p}: not a directory (pass the folder holding the dataset)")
    from .pack import PARTIAL_SUFFIX, is_pack_dir, split_path

    if is_pack_dir(p):
        return "pack"
    if os.path.exists(split_path(p, "train") + PARTIAL_SUFFIX):
        raise DatasetError(f"{p}: an unfinished pack (train.pack{PARTIAL_SUFFIX}): run the same alexnetc pack command "
                           "again to finish it")
    if is_idx_dir(p):
        return "idx"
    train = os.path.join(p, "train")
    if os.path.isdir(train) and any(e.is_dir() for e in os.scandir(train)):
        return "imagefolder"
    raise DatasetError(
        f"{p}: not a dataset directory: expected MNIST-style IDX files (train-images-idx3-ubyte[.gz], "
        f"train-labels-idx1-ubyte[.gz], t10k-…), an ImageNet-style tree ({p}/train/<class>/*.jpg, "
        f"{p}/val/<class>/*) or a pack ({p}/train.pack, from alexnetc pack)")


def open_dataset(path: str | os.PathLike, split: str = "train", channels: int | None = None,
                 classes: Sequence[str] | None = None) -> Any:
    """Open one split ("train" or "val") of the dataset in ``path``, detecting its layout.

    ``channels``: 1 or 3 to decode to (default: 1 for IDX, 3 for image folders, as stored for a pack). For an image folder's
    "val" split the class list is taken from ``path/train`` (unless ``classes`` is given) so that
    labels agree between splits.
    """
    layout = detect_layout(path)
    if layout == "pack":  # alexnetc pack's output: the images already preprocessed, memory-mapped
        from .pack import open_pack

        return open_pack(path, split, classes=classes, channels=channels)
    if layout == "idx":
        return IdxDataset(path, "train" if split == "train" else "test", classes=classes,
                          channels=channels or 1)
    if split not in ("train", "val", "test"):
        raise DatasetError(f"{path}: unknown split {split!r} (use train or val)")
    mode = "L" if channels == 1 else "RGB"
    if channels not in (None, 1, 3):
        raise DatasetError(f"{path}: channels must be 1 or 3, not {channels}")
    split_dir = os.path.join(str(path), split)
    if not os.path.isdir(split_dir):
        raise DatasetError(f"{path}: no {split!r} folder (expected {split_dir}/<class>/<image>)")
    if classes is None and split != "train":
        classes = sorted(e.name for e in os.scandir(os.path.join(str(path), "train"))
                         if e.is_dir() and not e.name.startswith("."))
    return ImageFolder(split_dir, mode=mode, classes=classes)
