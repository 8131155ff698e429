"""Augmentation: crops, mirrors, the ten patches, PCA lighting and its on-disk statistics cache."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from alexnetc.runtime.data import augment as A


class ArrayDataset:
    """Images held in memory, RGB or grey, with a root path for the statistics cache key."""

    def __init__(self, images, root="/fake/arrays", split="train"):
        self.items = list(images)
        self.root, self.split = root, split
        self.channels = self.items[0].shape[2]
        self.reads = 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.reads += 1
        return self.items[i], 0


def coloured_images(n=24, h=20, w=16, seed=0):
    """Images whose pixel colours vary mostly along one RGB direction (strongly correlated)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.uniform(40, 200, size=(h, w, 1))
        tint = np.array([1.0, 0.8, 0.5]) * base + rng.normal(0, 8, size=(h, w, 3))
        out.append(np.clip(tint, 0, 255).astype(np.uint8))
    return out


def identity_norm(channels=3):
    return {"mean": [0.0] * channels, "std": [1.0] * channels}


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Invert the [0,1] scaling of an un-normalised (C, H, W) output back to (H, W, C) pixels."""
    return np.rint(x.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)


def test_config_errors_name_the_option():
    with pytest.raises(A.AugmentError, match="data.crop: 300 is larger than data.resize 256"):
        A.AugmentConfig.from_dict({"resize": 256, "crop": 300})
    with pytest.raises(A.AugmentError, match="data.test_crops"):
        A.AugmentConfig.from_dict({"test_crops": "five"})
    with pytest.raises(A.AugmentError, match="data: unknown option.*colour"):
        A.AugmentConfig.from_dict({"colour": 1})
    with pytest.raises(A.AugmentError, match="data.std: 2 values for 3-channel"):
        A.normalisation({"mean": [0.5], "std": [1, 2]}, 3, None)
    ds = ArrayDataset(coloured_images(2))
    with pytest.raises(A.AugmentError, match="data.crop: 24 does not match the network's 28x28"):
        A.build_transforms({"crop": 24, **identity_norm()}, ds, input_shape=(3, 28, 28))


def test_train_crop_shapes_and_mirror():
    img = np.arange(20 * 16 * 3, dtype=np.uint32).reshape(20, 16, 3).astype(np.uint8)
    ds = ArrayDataset([img])
    train, ev = A.build_transforms({"crop": 8, "mirror": True, **identity_norm()}, ds)
    seen_mirror = seen_plain = False
    for s in range(40):
        out = train(img, np.random.default_rng(s))
        assert out.shape == (3, 8, 8) and out.dtype == torch.float32
        patch = to_uint8(out)
        # the patch must be a window of the image or of its mirror image
        found = None
        for flip, src in ((False, img), (True, img[:, ::-1])):
            for t in range(20 - 8 + 1):
                for l in range(16 - 8 + 1):
                    if np.array_equal(src[t:t + 8, l:l + 8], patch):
                        found = flip
        assert found is not None
        seen_mirror |= found
        seen_plain |= not found
    assert seen_mirror and seen_plain
    centre = to_uint8(ev(img))
    np.testing.assert_array_equal(centre, img[6:14, 4:12])


def test_resize_shorter_side():
    img = np.zeros((30, 60, 3), np.uint8)
    assert A.resize_shorter(img, 10).shape == (10, 20, 3)
    assert A.resize_shorter(np.zeros((60, 30, 1), np.uint8), 15).shape == (30, 15, 1)
    ds = ArrayDataset([img])
    train, ev = A.build_transforms({"resize": 12, "crop": 10, "test_crops": "ten", **identity_norm()}, ds)
    assert train(img, np.random.default_rng(0)).shape == (3, 10, 10)
    assert ev(img).shape == (10, 3, 10, 10)


def test_ten_crops_pixel_exact():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(13, 11, 3), dtype=np.uint8)
    ds = ArrayDataset([img])
    _, ev = A.build_transforms({"crop": 6, "test_crops": "ten", **identity_norm()}, ds)
    assert ev.ncrops == 10
    out = ev(img)
    assert out.shape == (10, 3, 6, 6)
    c = 6
    expected = [img[:c, :c], img[:c, -c:], img[-c:, :c], img[-c:, -c:], img[3:9, 2:8]]
    expected += [p[:, ::-1] for p in expected]
    assert len(A.TEN_CROP_ORDER) == 10
    for k in range(10):
        np.testing.assert_array_equal(to_uint8(out[k]), expected[k], err_msg=A.TEN_CROP_ORDER[k])


def test_normalisation_units():
    img = np.full((4, 4, 3), 255, np.uint8)
    ds = ArrayDataset([img])
    _, ev = A.build_transforms({"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}, ds)
    assert torch.allclose(ev(img), torch.full((3, 4, 4), 2.0))
    _, ev = A.build_transforms({"mean": [104, 117, 123]}, ds)        # Caffe/paper style: 0..255
    assert torch.allclose(ev(img)[:, 0, 0], torch.tensor([151.0, 138.0, 132.0]))


def test_default_normalisation_from_training_set(tmp_path):
    imgs = coloured_images(30)
    ds = ArrayDataset(imgs)
    train, ev = A.build_transforms({}, ds, cache_dir=tmp_path)
    x = torch.stack([ev(i) for i in imgs])
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-2)


def test_grey_28x28_same_code():
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, size=(28, 28, 1), dtype=np.uint8) for _ in range(4)]
    ds = ArrayDataset(imgs)
    train, ev = A.build_transforms({"resize": None, "crop": None, "mirror": True, "pca_lighting": 0.1,
                                    "test_crops": "center", **identity_norm(1)}, ds,
                                   input_shape=(1, 28, 28), stats=A.compute_stats(ds))
    assert train.pca == 0.0                       # no lighting noise for one channel
    out = train(imgs[0], np.random.default_rng(0))
    assert out.shape == (1, 28, 28)
    p = to_uint8(out)
    assert np.array_equal(p, imgs[0]) or np.array_equal(p, imgs[0][:, ::-1])
    assert ev(imgs[1]).shape == (1, 28, 28)
    # the same grey images feed an RGB network by repeating the channel
    _, ev3 = A.build_transforms(identity_norm(3), ds, input_shape=(3, 28, 28))
    assert ev3(imgs[1]).shape == (3, 28, 28)


def test_pca_lighting_moves_along_eigen_directions(tmp_path):
    imgs = coloured_images(40)
    ds = ArrayDataset(imgs)
    stats = A.dataset_stats(ds, cache_dir=tmp_path)
    eigval, eigvec = np.array(stats.eigval), np.array(stats.eigvec)
    assert eigval[0] > 10 * eigval[1]                          # one dominant colour direction
    v0 = eigvec[:, 0] * np.sign(eigvec[0, 0])
    np.testing.assert_allclose(v0, np.array([1.0, 0.8, 0.5]) / np.linalg.norm([1.0, 0.8, 0.5]), atol=0.02)
    assert np.allclose(eigvec.T @ eigvec, np.eye(3), atol=1e-8)

    sigma = 0.1
    train, _ = A.build_transforms({"pca_lighting": sigma, **identity_norm()}, ds, cache_dir=tmp_path)
    img = imgs[0]
    base = torch.from_numpy(img.astype(np.float32).transpose(2, 0, 1) / 255)
    alphas = []
    for s in range(200):
        rng = np.random.default_rng(s)
        out = train(img, rng)
        d = (out - base).numpy()
        shift = d[:, 0, 0]
        assert np.allclose(d, shift[:, None, None], atol=1e-5)   # the same offset on every pixel
        # reproduce exactly: alpha ~ N(0, sigma) per eigenvector, offset = P (alpha * lambda)
        alpha = np.random.default_rng(s).normal(0, sigma, size=3)
        np.testing.assert_allclose(shift, eigvec @ (alpha * eigval), atol=1e-5)
        alphas.append(np.linalg.solve(eigvec * eigval, shift))
    alphas = np.array(alphas)
    assert abs(alphas[:, 0].std() - sigma) < 0.02             # redrawn per use with the right sigma
    assert not np.allclose(alphas[0], alphas[1])


def test_stats_cache_is_reused(tmp_path):
    imgs = coloured_images(10)
    ds = ArrayDataset(imgs)
    s1 = A.dataset_stats(ds, cache_dir=tmp_path)
    path = A.stats_cache_path(ds, tmp_path)
    assert os.path.isfile(path)
    rec = json.load(open(path))
    assert rec["dataset"] == "/fake/arrays" and rec["size"] == 10 and rec["channels"] == 3
    reads = ds.reads
    s2 = A.dataset_stats(ds, cache_dir=tmp_path)
    assert ds.reads == reads and s2 == s1                    # no image decoded the second time
    bigger = ArrayDataset(imgs + imgs[:2])
    assert A.stats_cache_path(bigger, tmp_path) != path      # keyed by size too
    with open(path, "w") as fh:
        fh.write("{broken")
    assert A.dataset_stats(ds, cache_dir=tmp_path) == s1     # corrupt cache: recomputed
    assert ds.reads > reads
