"""The augmentation's random draws for a whole batch at once, keyed by (seed, epoch, sample index).

The per-sample path (``loader.sample_rng``) builds one numpy Generator per image; here every draw is a
counter-based hash of ``(seed, epoch, index, stream)`` (splitmix64's finaliser on uint64 arrays), so a
batch's draws are a handful of vectorised numpy operations, and each sample's are the same in any
worker, on any process of a sharded run and after any resume: a pure function of its key.

Per sample: ``top`` and ``left`` uniform over the crop positions, ``mirror`` with probability 1/2,
``alpha`` (one per PCA component) ~ N(0, sigma) by Box-Muller. The distributions are those of the
per-sample path; the values are not (another generator), which the tests check both ways: same
distributions, and the same pixels given the same draws.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_M64 = (1 << 64) - 1
STREAM_TOP, STREAM_LEFT, STREAM_MIRROR, STREAM_NORMAL = 0, 1, 2, 3


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (numpy's uint64 arithmetic wraps mod 2^64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _key(seed: int, epoch: int) -> np.uint64:
    k = _mix64(np.array([int(seed) & _M64], dtype=np.uint64))
    k = _mix64(k ^ np.array([(int(epoch) * 0xD1B54A32D192ED03 + 0x243F6A8885A308D3) & _M64], dtype=np.uint64))
    return k[0]


def uniforms(seed: int, epoch: int, indices: np.ndarray, streams: int) -> np.ndarray:
    """(n, streams) float64 uniforms in [0, 1): stream s of sample ``indices[i]`` in column s."""
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64).reshape(-1, 1)
    base = _mix64(idx * _GOLDEN + _key(seed, epoch))
    s = np.arange(streams, dtype=np.uint64).reshape(1, -1) + np.uint64(1)
    bits = _mix64(base + s * _GOLDEN)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@dataclass(frozen=True)
class Draws:
    """One batch's draws: crop corner ``top``/``left`` (int64), ``mirror`` (bool), ``alpha`` (float64,
    (n, components); zero columns when PCA lighting is off)."""
    top: np.ndarray
    left: np.ndarray
    mirror: np.ndarray
    alpha: np.ndarray

    def __len__(self) -> int:
        return len(self.top)


def draw(seed: int, epoch: int, indices: np.ndarray, *, rows: int, cols: int, mirror: bool,
         sigma: float = 0.0, components: int = 0) -> Draws:
    """The draws of samples ``indices``: ``top`` in [0, rows), ``left`` in [0, cols) (rows/cols: the
    number of crop positions), ``mirror`` (always False when ``mirror`` is off), ``alpha`` ~ N(0, sigma)
    per component (none when ``sigma`` is 0)."""
    k = components if sigma > 0 else 0
    pairs = -(-k // 2)
    u = uniforms(seed, epoch, indices, STREAM_NORMAL + 2 * pairs)
    top = np.minimum((u[:, STREAM_TOP] * rows).astype(np.int64), rows - 1)
    left = np.minimum((u[:, STREAM_LEFT] * cols).astype(np.int64), cols - 1)
    flip = (u[:, STREAM_MIRROR] < 0.5) if mirror else np.zeros(len(u), dtype=bool)
    alpha = np.zeros((len(u), k), dtype=np.float64)
    for p in range(pairs):  # Box-Muller: two normals from two uniforms
        u1, u2 = u[:, STREAM_NORMAL + 2 * p], u[:, STREAM_NORMAL + 2 * p + 1]
        r = np.sqrt(-2.0 * np.log1p(-u1))
        z = (r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2))
        for j in range(2):
            if 2 * p + j < k:
                alpha[:, 2 * p + j] = sigma * z[j]
    return Draws(top, left, flip, alpha)
