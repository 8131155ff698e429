"""Batched augmentation (runtime/data/device_augment.py, draws.py) against the per-sample path.

Oracle: `augment.TrainTransform` / `EvalTransform`, today's per-sample augmentation, called image by
image. Given the same draws (fed to it through a stand-in generator), every pixel of the batched
result equals its output bit for bit, on both batched paths (the gather on the device, and the CPU's
windows copied straight from the pack). The draws themselves come from another generator, so their
distributions are compared with today's: crop positions uniform, mirror 1/2, colour noise N(0, sigma)
per component. Same draws-to-pixels function and same draw distributions: same output distribution.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alexnetc.runtime.data.augment import AugmentError, build_transforms, compute_stats
from alexnetc.runtime.data.device_augment import BatchAugment
from alexnetc.runtime.data.draws import draw, uniforms
from alexnetc.runtime.data.loader import sample_rng
from alexnetc.runtime.data.pack import open_pack
from alexnetc.runtime.data.packer import list_sources, pack_split

from .test_datasets import make_idx_dir
from .test_pack import packed_tree

SIZE = 40


@pytest.fixture(scope="module")
def rgb_pack(tmp_path_factory):
    return open_pack(packed_tree(tmp_path_factory, SIZE, chunk=4), "train")


@pytest.fixture(scope="module")
def grey_pack(tmp_path_factory):
    src = str(tmp_path_factory.mktemp("idx"))
    make_idx_dir(src, n_train=9, n_test=3)
    out = str(tmp_path_factory.mktemp("gpack"))
    for s in list_sources(src, 1):
        pack_split(s, out, size=SIZE, workers=1, progress=False)
    return open_pack(out, "train", channels=3)


class Replay:
    """Stands in for the per-sample path's numpy Generator, answering with given draws in the order
    TrainTransform asks: crop row, crop column, mirror coin, colour noise."""

    def __init__(self, top, left, mirror, alpha):
        self.ints, self.mirror, self.alpha = [int(top), int(left)], bool(mirror), alpha
        self.asked = []

    def integers(self, lo, hi):
        self.asked.append(("integers", lo, hi))
        return self.ints.pop(0)

    def random(self):
        self.asked.append(("random",))
        return 0.25 if self.mirror else 0.75

    def normal(self, mu, sigma, size):
        self.asked.append(("normal", mu, sigma, size))
        return np.array(self.alpha[:size], dtype=np.float64)


CONFIGS = {
    "paper": {"resize": SIZE, "crop": 32, "mirror": True, "pca_lighting": 0.1},            # mean/std from stats
    "caffe-units": {"crop": 32, "mirror": True, "pca_lighting": 0.5, "mean": [104, 117, 123]},
    "torchvision": {"resize": SIZE, "crop": 28, "mirror": False, "mean": [0.485, 0.456, 0.406],
                    "std": [0.229, 0.224, 0.225]},
    "whole-image": {"mirror": True, "mean": [0.5], "std": [0.25]},
}


def _batched(aug, pack, idx, draws):
    host = aug.on_host(pack, idx, draws)
    device = aug.on_device(torch.from_numpy(pack.read(idx)), draws)   # the gather path, on the CPU
    return host, device


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("which", ["rgb", "grey"])
def test_same_draws_give_the_per_sample_pixels_bit_for_bit(rgb_pack, grey_pack, name, which):
    pack = rgb_pack if which == "rgb" else grey_pack
    cfg = CONFIGS[name]
    stats = compute_stats(pack, max_images=50)
    train_tf, _ = build_transforms(cfg, pack, stats=stats)
    aug = BatchAugment(train_tf, pack.height, pack.width, pack.stored_channels)
    idx = np.arange(len(pack))[::-1].copy()
    draws = aug.draws(seed=5, epoch=3, indices=idx)
    if cfg.get("mirror"):
        assert draws.mirror.any() and not draws.mirror.all()
    host, device = _batched(aug, pack, idx, draws)
    assert host.shape == device.shape == (len(idx), 3, cfg.get("crop", SIZE), cfg.get("crop", SIZE))
    for j, i in enumerate(idx):
        rng = Replay(draws.top[j], draws.left[j], draws.mirror[j], draws.alpha[j])
        want = train_tf(pack[int(i)][0], rng)
        assert not rng.ints or "crop" not in cfg, "the per-sample path drew fewer crop positions than expected"
        assert torch.equal(host[j], want), (name, j)
        assert torch.equal(device[j], want), (name, j)


@pytest.mark.parametrize("crops", ["center", "ten"])
def test_evaluation_crops_equal_the_per_sample_path(rgb_pack, crops):
    cfg = {"resize": SIZE, "crop": 24, "test_crops": crops, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.25]}
    _, eval_tf = build_transforms(cfg, rgb_pack)
    aug = BatchAugment(eval_tf, SIZE, SIZE, 3)
    idx = np.array([3, 0, 5])
    host, device = _batched(aug, rgb_pack, idx, None)
    shape = (3, 10, 3, 24, 24) if crops == "ten" else (3, 3, 24, 24)
    assert host.shape == device.shape == shape
    for j, i in enumerate(idx):
        want = eval_tf(rgb_pack[int(i)][0])
        assert torch.equal(host[j], want) and torch.equal(device[j], want)


def test_a_pack_of_another_size_or_colour_is_refused(rgb_pack, grey_pack):
    train_tf, _ = build_transforms({"resize": 256, "crop": 224, "mean": [0.5] * 3}, rgb_pack)
    with pytest.raises(AugmentError, match="pack holds 40x40 images: pack the data again with --size 256"):
        BatchAugment(train_tf, SIZE, SIZE, 3)
    train_tf, _ = build_transforms({"crop": 48, "mean": [0.5] * 3}, rgb_pack)
    with pytest.raises(AugmentError, match="data.crop: 48 is larger"):
        BatchAugment(train_tf, SIZE, SIZE, 3)


# --------------------------------------------------------------------------- the draws

def test_draws_are_a_function_of_seed_epoch_and_index():
    idx = np.arange(1000)
    a = draw(1, 2, idx, rows=33, cols=17, mirror=True, sigma=0.1, components=3)
    b = draw(1, 2, idx[::-1], rows=33, cols=17, mirror=True, sigma=0.1, components=3)
    for x, y in ((a.top, b.top), (a.left, b.left), (a.mirror, b.mirror), (a.alpha, b.alpha)):
        assert np.array_equal(x, y[::-1])          # per sample, whatever the batch it is in
    for other in (draw(1, 3, idx, rows=33, cols=17, mirror=True, sigma=0.1, components=3),
                  draw(2, 2, idx, rows=33, cols=17, mirror=True, sigma=0.1, components=3)):
        assert np.mean(other.top == a.top) < 0.1 and not np.array_equal(other.alpha, a.alpha)
    u = uniforms(0, 0, np.arange(20000), 4)
    assert u.min() >= 0 and u.max() < 1
    assert abs(np.corrcoef(u.T)[np.triu_indices(4, 1)]).max() < 0.03    # streams independent
    assert abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.03              # neighbours independent


def _chi2_uniform(values, k):
    counts = np.bincount(values, minlength=k)
    expected = len(values) / k
    return float(((counts - expected) ** 2 / expected).sum())


def _ks_two_sample(a, b):
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)).max())


class Recording:
    """A real per-sample generator that remembers what the per-sample path drew from it."""

    def __init__(self, rng):
        self.rng, self.ints, self.coins, self.normals = rng, [], [], []

    def integers(self, lo, hi):
        v = self.rng.integers(lo, hi)
        self.ints.append(int(v))
        return v

    def random(self):
        v = self.rng.random()
        self.coins.append(v < 0.5)
        return v

    def normal(self, mu, sigma, size):
        v = self.rng.normal(mu, sigma, size)
        self.normals.append(v)
        return v


def test_draws_have_the_per_sample_paths_distributions(rgb_pack):
    """Chi-square (uniform crop positions) and two-sample Kolmogorov-Smirnov (colour noise) against the
    per-sample path's own draws over 3000 images. Thresholds: chi-square's 0.1% critical value for 32
    degrees of freedom (62.5); KS's for two samples of 3000 (1.95 * sqrt(2/3000) = 0.050); the mirror
    share within 4 standard deviations of 1/2. Deterministic seeds: no flakes. The same statistics
    reject noise of twice the sigma, so they can fail."""
    n, sigma = 3000, 0.1
    stats = compute_stats(rgb_pack, max_images=50)
    train_tf, _ = build_transforms({"resize": SIZE, "crop": 8, "mirror": True, "pca_lighting": sigma}, rgb_pack,
                                   stats=stats)
    img = rgb_pack[0][0]
    rec_top, rec_left, rec_mirror, rec_alpha = [], [], [], []
    for i in range(n):
        rng = Recording(sample_rng(11, 0, i))
        train_tf(img, rng)
        rec_top.append(rng.ints[0])
        rec_left.append(rng.ints[1])
        rec_mirror.append(rng.coins[0])
        rec_alpha.append(rng.normals[0])
    rec_alpha = np.array(rec_alpha)
    aug = BatchAugment(train_tf, SIZE, SIZE, 3)
    d = aug.draws(11, 0, np.arange(n))
    rows = SIZE - 8 + 1
    for ours, theirs in ((d.top, rec_top), (d.left, rec_left)):
        assert ours.min() == 0 and ours.max() == rows - 1
        assert _chi2_uniform(ours, rows) < 62.5 and _chi2_uniform(np.array(theirs), rows) < 62.5
    for share in (d.mirror.mean(), np.mean(rec_mirror)):
        assert abs(share - 0.5) < 4 * math.sqrt(0.25 / n)
    assert d.alpha.shape == (n, 3)
    for j in range(3):
        assert _ks_two_sample(d.alpha[:, j], rec_alpha[:, j]) < 0.050
        assert _ks_two_sample(2 * d.alpha[:, j], rec_alpha[:, j]) > 0.1     # the test can fail
        assert abs(d.alpha[:, j].std() - sigma) < 0.005
    # and the shifts the two paths add: the same function of the draws
    ours = aug.shifts(d)
    assert ours.shape == (n, 3) and ours.dtype == np.float32


def test_draws_without_mirror_or_noise():
    d = draw(0, 0, np.arange(100), rows=1, cols=1, mirror=False)
    assert not d.top.any() and not d.left.any() and not d.mirror.any() and d.alpha.shape == (100, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_on_a_gpu_the_torch_path_equals_the_per_sample_pixels(rgb_pack):
    stats = compute_stats(rgb_pack, max_images=50)
    train_tf, _ = build_transforms(CONFIGS["paper"], rgb_pack, stats=stats)
    aug = BatchAugment(train_tf, SIZE, SIZE, 3, device="cuda", use_triton=False)
    idx = np.arange(len(rgb_pack))
    draws = aug.draws(1, 0, idx)
    out = aug.on_device(torch.from_numpy(rgb_pack.read(idx)).cuda(), draws).cpu()
    for j, i in enumerate(idx):
        want = train_tf(rgb_pack[int(i)][0], Replay(draws.top[j], draws.left[j], draws.mirror[j], draws.alpha[j]))
        torch.testing.assert_close(out[j], want, rtol=0, atol=1e-6)

