"""Data augmentation and normalisation, driven by the spec's ``data`` section.

Keys (all optional): ``resize`` (shorter side to N pixels, bilinear with antialiasing), ``crop``
(N×N patch: random while training, centre — or the paper's ten patches — when evaluating),
``mirror`` (random horizontal flip while training), ``pca_lighting`` (sigma of the paper's PCA
colour noise; 0/absent: off, always off for 1-channel data), ``test_crops`` ("center" or "ten"),
``mean``/``std`` (per-channel normalisation; absent: the training set's own mean and std).

Pixel units: images are scaled to [0, 1]. ``mean``/``std`` lists whose values are all <= 1 are in
[0, 1] units (e.g. 0.485, 0.229); a ``mean`` (or, without a mean, a ``std``) with a value > 1 puts
both lists in 0..255 units (Caffe style: mean [104, 117, 123]), and the output is then in those
units too. ``mean`` without ``std`` subtracts only (the paper's recipe).

PCA lighting (the paper, §4.1): to every pixel of an image add ``P @ (alpha * lambda)`` where ``P``
holds the eigenvectors and ``lambda`` the eigenvalues of the 3×3 covariance of RGB pixel values in
[0, 1] units over (a sample of) the training set, and ``alpha ~ N(0, sigma)`` is drawn once per
eigenvector per image use. The statistics are computed once and cached as JSON (see
:func:`dataset_stats`).

Transforms are picklable callables ``t(image, rng) -> torch.float32 tensor``: ``(C, H, W)``, or for
``test_crops: ten`` evaluation ``(10, C, H, W)`` in the order top-left, top-right, bottom-left,
bottom-right, centre, then the same five mirrored; the caller averages softmax over the 10.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..atomic import replacing

DATA_KEYS = ("resize", "crop", "mirror", "pca_lighting", "test_crops", "mean", "std")
CACHE_ENV = "ALEXNETC_CACHE"
STATS_VERSION = 1
TEN_CROP_ORDER = ("top_left", "top_right", "bottom_left", "bottom_right", "center",
                  "top_left_mirrored", "top_right_mirrored", "bottom_left_mirrored",
                  "bottom_right_mirrored", "center_mirrored")


class AugmentError(Exception):
    """A bad ``data`` option or an image the options cannot handle; the message names the option."""


# --------------------------------------------------------------------------- statistics

@dataclass(frozen=True)
class DataStats:
    """Per-channel mean/std (in [0, 1] units) and the RGB covariance's eigen-decomposition."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eigval: tuple[float, ...]                 # descending
    eigvec: tuple[tuple[float, ...], ...]     # eigvec[i][j]: component i of eigenvector j (columns)
    images: int                               # images the numbers came from

    def to_json(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "eigval": list(self.eigval),
                "eigvec": [list(r) for r in self.eigvec], "images": self.images}

    @classmethod
    def from_json(cls, d: Mapping) -> "DataStats":
        """The statistics `to_json` wrote; ValueError (or KeyError, TypeError) saying what is wrong when `d`
        is not such a record: every number finite, one positive std per channel of the mean."""
        stats = cls(tuple(map(float, d["mean"])), tuple(map(float, d["std"])),
                    tuple(map(float, d["eigval"])), tuple(tuple(map(float, r)) for r in d["eigvec"]),
                    int(d["images"]))
        numbers = [*stats.mean, *stats.std, *stats.eigval, *(x for r in stats.eigvec for x in r)]
        if not all(np.isfinite(numbers)):
            raise ValueError("non-finite statistics (NaN or infinity)")
        if not stats.mean or len(stats.std) != len(stats.mean) or min(stats.std) <= 0:
            raise ValueError("not one positive std per channel of the mean")
        return stats


def default_cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "alexnetc")


def _dataset_key(dataset) -> dict:
    root = getattr(dataset, "root", None) or type(dataset).__name__
    return {"dataset": str(root), "split": getattr(dataset, "split", None), "size": len(dataset),
            "channels": int(getattr(dataset, "channels", 0) or 0)}


def stats_cache_path(dataset: Any, cache_dir: str | os.PathLike | None = None, max_images: int = 2000) -> str:
    """The JSON file that caches ``dataset``'s statistics: keyed by its path, size and channels."""
    key = dict(_dataset_key(dataset), max_images=max_images, version=STATS_VERSION)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return os.path.join(str(cache_dir or default_cache_dir()), f"stats-{digest}.json")


def compute_stats(dataset: Any, max_images: int = 2000, pixels_per_image: int = 4096, seed: int = 0) -> DataStats:
    """Mean, std and RGB covariance eigen-decomposition over up to ``max_images`` training images.

    Uses the whole array when the dataset exposes one (``IdxDataset.images``); otherwise decodes an
    evenly random sample of images (unreadable ones skipped) and up to ``pixels_per_image`` random
    pixels of each.
    """
    rng = np.random.default_rng(seed)
    n = len(dataset)
    if n == 0:
        raise AugmentError("cannot compute data statistics of an empty dataset")
    arr = getattr(dataset, "images", None)
    if isinstance(arr, np.ndarray) and arr.dtype == np.uint8:
        idx = np.sort(rng.choice(n, size=min(n, max(max_images, 10000)), replace=False))
        px = arr[idx].reshape(-1, 1)
        if len(px) > 2_000_000:
            px = px[rng.choice(len(px), size=2_000_000, replace=False)]
        px = px.astype(np.float64) / 255.0
        ch = int(getattr(dataset, "channels", 1))
        if ch > 1:
            px = np.repeat(px, ch, axis=1)
        used = len(idx)
    else:
        from .datasets import is_bad

        idx = np.sort(rng.choice(n, size=min(n, max_images), replace=False))
        chunks, used = [], 0
        for i in idx:
            img, _ = dataset[int(i)]
            if is_bad(img):
                continue
            a = np.asarray(img, dtype=np.uint8)
            a = a.reshape(-1, a.shape[2] if a.ndim == 3 else 1)
            if len(a) > pixels_per_image:
                a = a[rng.choice(len(a), size=pixels_per_image, replace=False)]
            chunks.append(a)
            used += 1
        if not chunks:
            raise AugmentError(f"{getattr(dataset, 'root', 'dataset')}: no readable image among "
                               f"{len(idx)} sampled for data statistics")
        px = np.concatenate(chunks).astype(np.float64) / 255.0
    mean = px.mean(axis=0)
    std = px.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    if px.shape[1] > 1:
        cov = np.cov(px, rowvar=False)
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1]
        eigval, eigvec = np.clip(eigval[order], 0.0, None), eigvec[:, order]
    else:
        eigval, eigvec = np.array([float(px.var())]), np.ones((1, 1))
    return DataStats(tuple(mean.tolist()), tuple(std.tolist()), tuple(eigval.tolist()),
                     tuple(tuple(r) for r in eigvec.tolist()), used)


def dataset_stats(dataset: Any, cache_dir: str | os.PathLike | None = None, max_images: int = 2000,
                  refresh: bool = False) -> DataStats:
    """:func:`compute_stats`, cached on disk as JSON keyed by the dataset's path and size.

    The cache lives in ``cache_dir`` (default ``$ALEXNETC_CACHE`` or ``~/.cache/alexnetc``); an
    unreadable entry is recomputed, an unwritable cache directory only costs the recomputation.
    """
    from ..bounded_read import UnreadableFile, read_bounded

    path = stats_cache_path(dataset, cache_dir, max_images)
    key = _dataset_key(dataset)
    if not refresh and os.path.lexists(path):
        try:
            d = json.loads(read_bounded(path, "MAX_RECORD_BYTES", "statistics cache").decode("utf-8"))
            if d.get("version") == STATS_VERSION and {k: d.get(k) for k in key} == key:
                return DataStats.from_json(d["stats"])
        except (UnreadableFile, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            pass  # not a cache this version wrote (or damaged, or not a file): recomputed below
    stats = compute_stats(dataset, max_images=max_images)
    try:
        with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump(dict(key, version=STATS_VERSION, max_images=max_images, stats=stats.to_json()),
                      fh, indent=1)
    except OSError:
        pass
    return stats


# --------------------------------------------------------------------------- config

def _opt_int(cfg: Mapping, key: str) -> int | None:
    v = cfg.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise AugmentError(f"data.{key}: expected a positive integer or null, got {v!r}")
    return int(v)


def _channel_list(cfg: Mapping, key: str, channels: int) -> np.ndarray | None:
    v = cfg.get(key)
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v]
    try:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise AugmentError(f"data.{key}: expected a list of numbers, got {v!r}") from None
    if len(a) == 1:
        a = np.repeat(a, channels)
    if len(a) != channels:
        raise AugmentError(f"data.{key}: {len(a)} values for {channels}-channel images")
    if key == "std" and np.any(a <= 0):
        raise AugmentError(f"data.{key}: values must be > 0, got {list(v)}")
    return a


@dataclass(frozen=True)
class AugmentConfig:
    resize: int | None = None
    crop: int | None = None
    mirror: bool = False
    pca_lighting: float = 0.0
    test_crops: str = "center"

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> "AugmentConfig":
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(DATA_KEYS))
        if unknown:
            raise AugmentError(f"data: unknown option(s) {', '.join(unknown)} (known: {', '.join(DATA_KEYS)})")
        resize, crop = _opt_int(cfg, "resize"), _opt_int(cfg, "crop")
        if resize is not None and crop is not None and crop > resize:
            raise AugmentError(f"data.crop: {crop} is larger than data.resize {resize}")
        mirror = cfg.get("mirror", False)
        if not isinstance(mirror, bool):
            raise AugmentError(f"data.mirror: expected true or false, got {mirror!r}")
        pca = cfg.get("pca_lighting") or 0.0
        if isinstance(pca, bool) or not isinstance(pca, (int, float)) or pca < 0:
            raise AugmentError(f"data.pca_lighting: expected a sigma >= 0, got {pca!r}")
        tc = cfg.get("test_crops") or "center"
        if tc not in ("center", "ten"):
            raise AugmentError(f"data.test_crops: expected 'center' or 'ten', got {tc!r}")
        if tc == "ten" and crop is None:
            raise AugmentError("data.test_crops: 'ten' needs data.crop (the patch size)")
        return cls(resize, crop, mirror, float(pca), tc)


def normalisation(cfg: Mapping[str, Any] | None, channels: int,
                  stats: DataStats | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, std, scale) such that output = (uint8 pixels / scale − mean) / std (see the docstring)."""
    cfg = cfg or {}
    mean, std = _channel_list(cfg, "mean", channels), _channel_list(cfg, "std", channels)
    ref = mean if mean is not None else std
    scale = 1.0 if (ref is not None and np.any(ref > 1.0)) else 255.0
    if mean is None:
        if stats is None:
            raise AugmentError("data.mean: not given and no training-set statistics to compute it from")
        mean = np.asarray(stats.mean[:channels], dtype=np.float64) * (255.0 / scale)
        if std is None:
            std = np.asarray(stats.std[:channels], dtype=np.float64) * (255.0 / scale)
    if std is None:
        std = np.ones(channels)
    return mean.astype(np.float32), std.astype(np.float32), float(scale)


# --------------------------------------------------------------------------- image ops

def to_array(image: Any) -> np.ndarray:
    """A PIL image or an (H, W) / (H, W, C) uint8 array as a (H, W, C) uint8 array."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.dtype != np.uint8:
        raise AugmentError(f"expected an (H, W, C) uint8 image, got {a.dtype} array of shape {a.shape}")
    return a


def resize_shorter(img: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` (aspect kept; bilinear with antialiasing, via Pillow)."""
    from PIL import Image

    h, w = img.shape[:2]
    if min(h, w) == size:
        return img
    if h <= w:
        nh, nw = size, max(1, round(w * size / h))
    else:
        nh, nw = max(1, round(h * size / w)), size
    pil = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
    out = np.asarray(pil.resize((nw, nh), Image.BILINEAR, reducing_gap=None))
    return out[:, :, None] if out.ndim == 2 else out


def crop_at(img: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    return img[top:top + size, left:left + size]


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    return crop_at(img, (h - size) // 2, (w - size) // 2, size)


def ten_crops(img: np.ndarray, size: int) -> list[np.ndarray]:
    """The paper's ten patches in :data:`TEN_CROP_ORDER`."""
    h, w = img.shape[:2]
    five = [crop_at(img, 0, 0, size), crop_at(img, 0, w - size, size),
            crop_at(img, h - size, 0, size), crop_at(img, h - size, w - size, size),
            center_crop(img, size)]
    return five + [p[:, ::-1] for p in five]


def lighting_shifts(alpha: np.ndarray, eigval: np.ndarray, eigvec: np.ndarray) -> np.ndarray:
    """The PCA colour offsets ``P @ (alpha_i * lambda)`` of a batch of draws ``alpha`` (n, k) -> (n, C).

    Summed term by term in a fixed order (no BLAS, whose order varies with the shapes), so one image's
    offset is bit for bit the same whether it is computed alone or in a batch."""
    scaled = np.asarray(alpha, dtype=np.float64) * np.asarray(eigval, dtype=np.float64)
    vec = np.asarray(eigvec, dtype=np.float64)
    out = np.zeros((scaled.shape[0], vec.shape[0]), dtype=np.float64)
    for j in range(vec.shape[1]):
        out += scaled[:, j:j + 1] * vec[:, j]
    return out


def _ensure_min_size(img: np.ndarray, crop: int | None) -> np.ndarray:
    if crop is not None and min(img.shape[:2]) < crop:
        return resize_shorter(img, crop)
    return img


# --------------------------------------------------------------------------- transforms

class _Base:
    def __init__(self, cfg: AugmentConfig, mean: np.ndarray, std: np.ndarray, scale: float, channels: int):
        self.cfg, self.channels = cfg, channels
        self.scale = np.float32(scale)
        self.mean = mean.reshape(1, 1, -1)
        self.std = std.reshape(1, 1, -1)

    def _prepare(self, image) -> np.ndarray:
        img = to_array(image)
        if img.shape[2] != self.channels:
            if img.shape[2] == 1 and self.channels == 3:
                img = np.repeat(img, 3, axis=2)
            else:
                raise AugmentError(f"image has {img.shape[2]} channels, the network expects {self.channels}")
        if self.cfg.resize is not None:
            img = resize_shorter(img, self.cfg.resize)
        return _ensure_min_size(img, self.cfg.crop)

    def _finish(self, patch: np.ndarray, shift: np.ndarray | None = None):
        """(H, W, C) uint8 patch -> normalised (C, H, W) float32 tensor; ``shift`` in [0, 1] units."""
        import torch

        x = patch.astype(np.float32)
        if shift is not None:
            x += (shift * 255.0).astype(np.float32).reshape(1, 1, -1)
        if self.scale != 1.0:
            x /= self.scale
        x = (x - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class TrainTransform(_Base):
    """Resize, random crop, random mirror, PCA lighting, normalise -> (C, H, W) float32."""

    def __init__(self, cfg: Any, mean: Any, std: Any, scale: float, channels: int, eigval: Any = None,
                 eigvec: Any = None):
        super().__init__(cfg, mean, std, scale, channels)
        self.pca = cfg.pca_lighting if channels == 3 and eigval is not None else 0.0
        self.eigval = np.asarray(eigval, dtype=np.float64) if eigval is not None else None
        self.eigvec = np.asarray(eigvec, dtype=np.float64) if eigvec is not None else None

    def lighting_shift(self, rng: np.random.Generator) -> np.ndarray:
        """The RGB offset (in [0, 1] units) P @ (alpha * lambda) with alpha ~ N(0, sigma)."""
        alpha = rng.normal(0.0, self.pca, size=len(self.eigval))
        return lighting_shifts(alpha[None], self.eigval, self.eigvec)[0]

    def __call__(self, image, rng: np.random.Generator | None = None):
        rng = rng if rng is not None else np.random.default_rng()
        img = self._prepare(image)
        c = self.cfg.crop
        if c is not None:
            h, w = img.shape[:2]
            img = crop_at(img, int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1)), c)
        if self.cfg.mirror and rng.random() < 0.5:
            img = img[:, ::-1]
        shift = self.lighting_shift(rng) if self.pca > 0 else None
        return self._finish(img, shift)


class EvalTransform(_Base):
    """Resize, centre crop (or the ten patches), normalise -> (C, H, W) or (10, C, H, W) float32."""

    @property
    def ncrops(self) -> int:
        return 10 if self.cfg.test_crops == "ten" else 1

    def __call__(self, image, rng: np.random.Generator | None = None):
        import torch

        img = self._prepare(image)
        if self.cfg.crop is None:
            return self._finish(img)
        if self.cfg.test_crops == "ten":
            return torch.stack([self._finish(p) for p in ten_crops(img, self.cfg.crop)])
        return self._finish(center_crop(img, self.cfg.crop))


def build_transforms(data_cfg: Mapping[str, Any] | None, train_dataset: Any, *,
                     input_shape: tuple[int, int, int] | None = None,
                     cache_dir: str | os.PathLike | None = None,
                     stats: DataStats | None = None) -> tuple[TrainTransform, EvalTransform]:
    """The (training, evaluation) transforms for the spec's ``data`` section.

    ``train_dataset`` supplies the channel count and, when ``mean`` is not given or PCA lighting is on,
    the statistics (cached, see :func:`dataset_stats`; pass ``stats`` to skip that). ``input_shape``
    (C, H, W) of the network, when given, is checked against ``crop`` and the channels.
    """
    cfg = AugmentConfig.from_dict(data_cfg)
    channels = int(getattr(train_dataset, "channels", 3))
    if input_shape is not None:
        c, h, w = input_shape
        if c not in (channels, 3 if channels == 1 else channels):
            raise AugmentError(f"the network takes {c}-channel input, the dataset has {channels} channels")
        channels = c
        if cfg.crop is not None and (cfg.crop != h or cfg.crop != w):
            raise AugmentError(f"data.crop: {cfg.crop} does not match the network's {h}x{w} input")
        if cfg.crop is None and h != w and cfg.resize is not None:
            raise AugmentError(f"data.crop: needed for the network's non-square {h}x{w} input")
    need_stats = (data_cfg or {}).get("mean") is None or (cfg.pca_lighting > 0 and channels == 3)
    if stats is None and need_stats:
        stats = dataset_stats(train_dataset, cache_dir=cache_dir)
    mean, std, scale = normalisation(data_cfg, channels, stats)
    eigval = eigvec = None
    if stats is not None and channels == 3 and len(stats.eigval) == 3:
        eigval, eigvec = stats.eigval, stats.eigvec
    return (TrainTransform(cfg, mean, std, scale, channels, eigval, eigvec),
            EvalTransform(cfg, mean, std, scale, channels))
