"""Datasets: IDX parsing (raw and gzip), image folders with corrupt files, detection, the loader."""
from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch

from alexnetc.runtime.data import datasets as D
from alexnetc.runtime.data.loader import LoaderError, epoch_order, make_loader
from alexnetc.runtime.execution.distributed import shard


def write_idx(path, arr: np.ndarray, compress: bool) -> None:
    codes = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    with open(path, "wb") as fh:
        fh.write(gzip.compress(data) if compress else data)


def make_idx_dir(d, n_train=20, n_test=7, compress=True, seed=0, bright=False):
    rng = np.random.default_rng(seed)
    os.makedirs(d, exist_ok=True)
    sfx = ".gz" if compress else ""
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        hi = 256 if bright else 40
        imgs = rng.integers(0, hi, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(os.path.join(d, f"{prefix}-images-idx3-ubyte{sfx}"), imgs, compress)
        write_idx(os.path.join(d, f"{prefix}-labels-idx1-ubyte{sfx}"), labels, compress)
        out[prefix] = (imgs, labels)
    return out


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    d = tmp_path / "mnist"
    ref = make_idx_dir(d, compress=compress)
    ds = D.IdxDataset(d, "train")
    assert len(ds) == 20 and ds.channels == 1
    img, label = ds[3]
    assert img.shape == (28, 28, 1) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[:, :, 0], ref["train"][0][3])
    assert label == int(ref["train"][1][3])
    test = D.IdxDataset(d, "val")
    assert len(test) == 7
    np.testing.assert_array_equal(test.images, ref["t10k"][0])
    assert ds.kind == "mnist" and ds.classes == list(D.MNIST_CLASSES)
    rgb = D.IdxDataset(d, "train", channels=3)
    assert rgb[3][0].shape == (28, 28, 3)


def test_idx_header_wider_types(tmp_path):
    p = tmp_path / "x.idx"
    a = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    write_idx(p, a, compress=False)
    got = D.read_idx(p)
    assert got.dtype == np.int32 and got.dtype.isnative
    np.testing.assert_array_equal(got, a)


def test_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x03" + b"\0" * 12)
    with pytest.raises(D.DatasetError, match="train-images-idx3-ubyte: not an IDX file"):
        D.read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + np.asarray([10], ">u4").tobytes() + b"\0" * 5)
    with pytest.raises(D.DatasetError, match="short: IDX header says 10"):
        D.read_idx(short)
    gz = tmp_path / "broken.gz"
    gz.write_bytes(gzip.compress(b"x" * 100)[:20])
    with pytest.raises(D.DatasetError, match="broken.gz: corrupt gzip"):
        D.read_idx(gz)


def test_fashion_class_names(tmp_path):
    d = tmp_path / "fashion-mnist"
    make_idx_dir(d)
    assert D.IdxDataset(d).classes[0] == "T-shirt/top"
    d2 = tmp_path / "clothes"          # no name hint: told apart by brightness
    make_idx_dir(d2, bright=True)
    assert D.IdxDataset(d2).kind == "fashion-mnist"
    assert D.IdxDataset(d2).classes[9] == "Ankle boot" == D.IdxDataset(d2).class_names[9]


def test_find_default_dataset_env_and_errors(tmp_path, monkeypatch):
    d = tmp_path / "data"
    make_idx_dir(d)
    monkeypatch.setenv(D.DATA_ENV, str(d))
    assert D.find_default_dataset() == str(d)
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path / "nope"))
    with pytest.raises(D.DatasetError, match="ALEXNETC_DATA=.*nope: no such directory"):
        D.find_default_dataset()
    monkeypatch.delenv(D.DATA_ENV)
    monkeypatch.setattr(D, "DEFAULT_DATA_DIRS", (str(tmp_path / "missing"),))
    with pytest.raises(D.DatasetError, match="apt-get install dataset-fashion-mnist.*--data DIR"):
        D.find_default_dataset()


def test_installed_fashion_mnist_if_present(monkeypatch):
    monkeypatch.delenv(D.DATA_ENV, raising=False)
    if not D.is_idx_dir(D.DEFAULT_DATA_DIRS[0]):
        pytest.skip("dataset-fashion-mnist is not installed")
    ds = D.open_dataset(D.find_default_dataset(), "val")
    assert len(ds) == 10000 and ds.kind == "fashion-mnist" and ds[0][0].shape == (28, 28, 1)


# --------------------------------------------------------------------------- image folders

def make_image_folder(root, per_class=3, size=(12, 10)):
    """train/{cat,dog,emu} with small PNG/JPEGs, plus a corrupt .jpg and a truncated .png."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("dog", "cat", "emu"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                a = rng.integers(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)
                Image.fromarray(a).save(d / f"{c}{i}.png")
            (d / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no jpeg at all")
    big = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(big).save(root / "train" / "dog" / "whole.png")
    data = (root / "train" / "dog" / "whole.png").read_bytes()
    (root / "train" / "dog" / "truncated.png").write_bytes(data[: len(data) // 2])
    return root


def test_image_folder_layout_and_bad_files(tmp_path):
    root = make_image_folder(tmp_path / "imnet")
    assert D.detect_layout(root) == "imagefolder"
    ds = D.open_dataset(root, "train")
    assert ds.classes == ds.class_names == ["cat", "dog", "emu"]
    assert len(ds) == 3 * 3 + 3            # + corrupt.jpg, whole.png, truncated.png; no .txt
    bad = [ds.samples[i][0] for i in range(len(ds)) if D.is_bad(ds[i][0])]
    assert sorted(os.path.basename(p) for p in bad) == ["corrupt.jpg", "truncated.png"]
    img, label = ds[ds.samples.index((str(root / "train" / "emu" / "emu1.png"), 2))]
    assert img.shape == (12, 10, 3) and img.dtype == np.uint8 and label == 2
    grey = D.open_dataset(root, "train", channels=1)
    assert grey[0][0].shape == (12, 10, 1)
    val = D.open_dataset(root, "val")
    assert val.classes == ds.classes and len(val) == 9


def test_val_class_not_in_train(tmp_path):
    root = make_image_folder(tmp_path / "imnet")
    (root / "val" / "yak").mkdir()
    with pytest.raises(D.DatasetError, match="yak"):
        D.open_dataset(root, "val")


def test_open_dataset_errors(tmp_path):
    with pytest.raises(D.DatasetError, match="nowhere: no such directory"):
        D.open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.DatasetError, match="empty: not a dataset directory"):
        D.open_dataset(tmp_path / "empty")
    f = tmp_path / "file.bin"
    f.write_bytes(b"x")
    with pytest.raises(D.DatasetError, match="file.bin: not a directory"):
        D.open_dataset(f)


def _ident(img, rng):
    import torch

    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()


def test_loader_workers_drop_and_report_bad_images(tmp_path):
    root = make_image_folder(tmp_path / "imnet", size=(8, 8))
    ds = D.open_dataset(root, "train")
    good = [i for i in range(len(ds)) if os.path.basename(ds.samples[i][0]) not in
            ("corrupt.jpg", "truncated.png", "whole.png")]
    # whole.png is 64x64: keep only same-size images plus the two bad ones
    keep = good + [i for i in range(len(ds)) if os.path.basename(ds.samples[i][0]) in ("corrupt.jpg", "truncated.png")]

    class Sub:
        def __init__(self, base, idx):
            self.base, self.idx = base, idx

        def __len__(self):
            return len(self.idx)

        def __getitem__(self, i):
            return self.base[self.idx[i]]

    sub = Sub(ds, keep)
    loader = make_loader(sub, _ident, batch_size=4, shuffle=True, seed=3, num_workers=2)
    seen = 0
    for x, y in loader:
        assert x.shape[1:] == (3, 8, 8) and x.dtype.is_floating_point and y.dtype == torch.int64
        seen += len(y)
    assert seen == len(good) == 9
    assert len(loader.skipped) == 2
    msg = loader.skipped_message()
    assert msg.startswith("skipped 2 unreadable images: ") and "corrupt.jpg" in msg and "truncated.png" in msg


def test_loader_order_deterministic_and_resumable(tmp_path):
    d = tmp_path / "m"
    make_idx_dir(d, n_train=23)
    ds = D.IdxDataset(d)
    a = epoch_order(23, True, seed=5, epoch=2)
    assert sorted(a.tolist()) == list(range(23))
    assert np.array_equal(a, epoch_order(23, True, 5, 2)) and not np.array_equal(a, epoch_order(23, True, 5, 3))

    def noisy(img, rng):          # an augmentation that draws from the per-sample generator
        return _ident(img, rng) + float(rng.normal())

    full = [(x.clone(), y.clone()) for x, y in make_loader(ds, noisy, 5, True, seed=5, epoch=2)]
    assert [len(y) for _, y in full] == [5, 5, 5, 5, 3]
    workers = list(make_loader(ds, noisy, 5, True, seed=5, epoch=2, num_workers=2))
    resumed = list(make_loader(ds, noisy, 5, True, seed=5, epoch=2, start_batch=2))
    for (x1, y1), (x2, y2) in zip(full, workers):
        assert np.array_equal(y1, y2) and bool((x1 == x2).all())
    assert len(resumed) == 3
    for (x1, y1), (x2, y2) in zip(full[2:], resumed):
        assert np.array_equal(y1, y2) and bool((x1 == x2).all())
    dropped = make_loader(ds, noisy, 5, True, seed=5, epoch=2, drop_last=True)
    assert len(dropped) == 4 and len(list(dropped)) == 4
    limited = make_loader(ds, noisy, 5, True, seed=5, epoch=2, start_batch=1, limit_batches=3)
    assert len(limited) == 2 and len(list(limited)) == 2


def test_sharded_loader_slices_every_global_batch(tmp_path):
    """oracle: the unsharded loader (one process). For 1, 2, 3 and 6 shards, slice r of each batch is
    the contiguous part r of the same global batch, augmentation included (keyed by sample, not by
    shard); shards concatenate to the global batch; an empty slice is yielded as an empty batch, and a
    resumed sharded epoch continues with the same slices."""
    d = tmp_path / "m"
    make_idx_dir(d, n_train=23)
    ds = D.IdxDataset(d)

    def noisy(img, rng):
        return _ident(img, rng) + float(rng.normal())

    full = list(make_loader(ds, noisy, 5, True, seed=5, epoch=2))
    for world in (1, 2, 3, 6):
        parts = [list(make_loader(ds, noisy, 5, True, seed=5, epoch=2, shard=(r, world),
                                  num_workers=1 if r == 1 else 0)) for r in range(world)]
        assert all(len(p) == len(full) for p in parts)
        for b, (x, y) in enumerate(full):
            xs = torch.cat([p[b][0].reshape(-1, *x.shape[1:]) for p in parts])
            ys = torch.cat([p[b][1] for p in parts])
            assert torch.equal(ys, y) and torch.equal(xs, x)
            assert [len(p[b][1]) for p in parts] == [len(range(5)[s.start:s.stop])
                                                     for s in (shard(len(y), r, world) for r in range(world))]
    resumed = list(make_loader(ds, noisy, 5, True, seed=5, epoch=2, shard=(1, 3), start_batch=3))
    again = list(make_loader(ds, noisy, 5, True, seed=5, epoch=2, shard=(1, 3)))[3:]
    assert len(resumed) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(resumed, again))
    with pytest.raises(LoaderError):
        make_loader(ds, noisy, 5, shard=(3, 3))


def test_an_empty_class_folder_is_refused_unless_allowed(tmp_path, capsys):
    """A class folder with no image trained a network with that class and said nothing (issue 25, item
    5). Now an error naming the folder; --allow-empty-classes trains anyway, with a warning."""
    from PIL import Image

    from alexnetc.runtime.app.cli import main

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b", "c"):
            os.makedirs(tmp_path / "d" / split / c)
            if split == "train" and c == "b":
                continue
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / "d" / split / c / f"{i}.png")
    ds = D.open_dataset(tmp_path / "d", "train", channels=1)
    assert ds.empty_classes == ["b"] and ds.classes == ["a", "b", "c"]
    assert D.open_dataset(tmp_path / "d", "val", channels=1).empty_classes == []
    spec = tmp_path / "s.yaml"
    spec.write_text("input: {channels: 1, height: 8, width: 8}\nclasses: 3\nlayers:\n  - {name: fc, op: fc, units: 3}\n"
                    "  - {name: loss, op: softmax_loss}\ntrain: {batch_size: 4, epochs: 1}\n"
                    "data: {mirror: false, mean: [127.5], std: [64.0]}\n")
    argv = ["train", str(spec), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--workers", "0",
            "--no-progress"]
    assert main(argv) == 2
    root = tmp_path / "d" / "train"
    assert capsys.readouterr().err.strip() == \
        f"alexnetc: error: {root}: 1 class folder holds no image (b): the network would have a class it can never " \
        "learn; add images, remove the folder, or pass --allow-empty-classes to train anyway"
    assert main(argv + ["--allow-empty-classes"]) == 0
    assert f"warning: {root}: 1 class folder holds no image (b); training anyway (--allow-empty-classes): the " \
           "network can never predict it" in capsys.readouterr().out
