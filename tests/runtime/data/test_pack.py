"""`alexnetc pack` and the pack file: the paper's preprocessing, pixel for pixel; labels, classes and
sources; unreadable images named; atomic, resumable packing; corrupt and cut packs refused.

Oracle for the pixels: Pillow called here directly — convert to RGB (or L), resize the shorter side
to the size (bilinear, no reducing gap, the long side rounded), cut the central square — and, for a
JPEG pack, Pillow's encoding of those pixels at the same quality, decoded.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from alexnetc.runtime.app import cli
from alexnetc.runtime.data.datasets import DatasetError, open_dataset
from alexnetc.runtime.data.pack import PackDataset, PackError, open_pack
from alexnetc.runtime.data.packer import list_sources, pack_split

from .test_datasets import make_idx_dir

SIZE = 32


def paper_pixels(path, size=SIZE, mode="RGB") -> np.ndarray:
    """The oracle: the paper's preprocessing with Pillow, written out here."""
    with Image.open(path) as im:
        im = im.convert(mode)
        w, h = im.size
        if min(h, w) != size:
            nh, nw = (size, max(1, round(w * size / h))) if h <= w else (max(1, round(h * size / w)), size)
            im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        a = np.asarray(im.crop((left, top, left + size, top + size)))
    return a[:, :, None] if a.ndim == 2 else a


def jpeg_round_trip(pixels: np.ndarray, quality=90) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buf, "JPEG", quality=quality)
    a = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    return a[:, :, None] if a.ndim == 2 else a


def photo(h, w, seed=0) -> np.ndarray:
    """Smooth colour gradients plus noise: enough structure that resizing and JPEG matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) * 127 / max(h + w - 2, 1)], axis=2)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def make_tree(root, *, bad=True) -> dict[str, str]:
    """train/ and val/ with images of odd sizes and kinds: RGB JPEG, grey JPEG, CMYK JPEG, PNG (RGBA,
    palette), an image already 32 on its shorter side, a tiny one; plus an unreadable file."""
    files = {}
    kinds = [
        ("a_rgb.jpg", lambda: Image.fromarray(photo(67, 101, 1)), {}),
        ("b_tall.png", lambda: Image.fromarray(photo(101, 45, 2)), {}),
        ("c_grey.jpg", lambda: Image.fromarray(photo(50, 77, 3)[:, :, 0]), {}),
        ("d_cmyk.jpg", lambda: Image.fromarray(np.dstack([photo(41, 63, 4), photo(41, 63, 5)[:, :, :1]]), "CMYK"), {}),
        ("e_rgba.png", lambda: Image.fromarray(np.dstack([photo(40, 39, 6), photo(40, 39, 7)[:, :, :1]]), "RGBA"), {}),
        ("f_palette.png", lambda: Image.fromarray(photo(36, 70, 8)).convert("P"), {}),
        ("g_exact.jpg", lambda: Image.fromarray(photo(SIZE, 48, 9)), {}),
        ("h_tiny.png", lambda: Image.fromarray(photo(3, 5, 10)), {}),
    ]
    for split, classes in (("train", ("cat", "dog")), ("val", ("cat", "dog"))):
        for ci, c in enumerate(classes):
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for k, (name, make, kw) in enumerate(kinds):
                if (k + ci) % 2 and split == "val":
                    continue
                p = os.path.join(root, split, c, name)
                make().save(p, **kw)
                files[f"{split}/{c}/{name}"] = p
    if bad:
        with open(os.path.join(root, "train", "cat", "zz_broken.jpg"), "wb") as fh:
            fh.write(b"\xff\xd8 this is not a JPEG")
    return files


def packed_tree(tmp_path_factory, size: int, chunk: int) -> str:
    """A folder of make_tree's images (none broken) packed raw at `size`: the pack's folder."""
    root = str(tmp_path_factory.mktemp("tree"))
    make_tree(root, bad=False)
    out = str(tmp_path_factory.mktemp("pack"))
    for src in list_sources(root, 3):
        pack_split(src, out, size=size, workers=1, progress=False, chunk=chunk)
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    return str(root), make_tree(str(root))


@pytest.fixture(scope="module")
def packs(tree, tmp_path_factory):
    root, _ = tree
    out = {}
    for fmt in ("raw", "jpeg"):
        d = str(tmp_path_factory.mktemp(f"pack-{fmt}"))
        for src in list_sources(root, 3):
            pack_split(src, d, size=SIZE, fmt=fmt, workers=1, progress=False, chunk=3)
        out[fmt] = d
    return out


@pytest.mark.parametrize("fmt", ["raw", "jpeg"])
def test_pack_holds_the_papers_preprocessing_pixel_for_pixel(tree, packs, fmt):
    root, files = tree
    for split in ("train", "val"):
        ds = open_dataset(packs[fmt], split)
        assert ds.format == fmt and ds.classes == ["cat", "dog"] and ds.channels == 3
        names = [os.path.relpath(ds.source(i), root) for i in range(len(ds))]
        assert names == sorted(n for n in files if n.startswith(split + "/"))   # the folder's order, broken file left out
        batch = ds.read(np.arange(len(ds)))
        for i, name in enumerate(names):
            want = paper_pixels(files[name])
            if fmt == "jpeg":
                want = jpeg_round_trip(want)
            assert np.array_equal(batch[i], want), name
            img, label = ds[i]
            assert np.array_equal(img, want) and label == (0 if "/cat/" in name else 1)
            assert ds.samples[i] == (files[name], label)


def test_unreadable_images_are_named_not_packed(tree, packs):
    root, _ = tree
    ds = open_pack(packs["raw"], "train")
    assert [os.path.basename(p) for p, _ in ds.unreadable] == ["zz_broken.jpg"]
    assert "UnidentifiedImageError" in ds.unreadable[0][1] or "OSError" in ds.unreadable[0][1]
    assert not open_pack(packs["raw"], "val").unreadable


def test_idx_files_pack_at_their_own_size(tmp_path):
    src = tmp_path / "idx"
    arrays = make_idx_dir(str(src), n_train=11, n_test=5)
    out = str(tmp_path / "p")
    assert cli.main(["pack", str(src), "-o", out, "--no-progress", "--workers", "1"]) == 0
    ds = open_dataset(out, "train")
    assert (ds.height, ds.width, ds.stored_channels, len(ds)) == (28, 28, 1, 11)
    assert np.array_equal(ds.read(np.arange(11))[:, :, :, 0], arrays["train"][0])
    assert np.array_equal(ds.labels, arrays["train"][1])
    assert ds.meta["layout"] == "idx" and ds.empty_classes == []   # IDX class names are guessed: not checked
    val = open_dataset(out, "val", channels=3)           # a grey pack feeds a colour network
    img, _ = val[4]
    assert img.shape == (28, 28, 3) and np.array_equal(img[:, :, 2], arrays["t10k"][0][4])


def test_pack_with_workers_equals_pack_in_one_process(tree, packs, tmp_path):
    root, _ = tree
    src = list_sources(root, 3)[0]
    pack_split(src, str(tmp_path), size=SIZE, fmt="raw", workers=2, progress=False, chunk=2)
    a, b = open_pack(str(tmp_path), "train"), open_pack(packs["raw"], "train")
    assert np.array_equal(a.read(np.arange(len(a))), b.read(np.arange(len(b))))
    assert a.unreadable == b.unreadable and np.array_equal(a.labels, b.labels)


def test_classes_map_labels_by_name(packs):
    ds = open_pack(packs["raw"], "train", classes=["bird", "dog", "cat"])
    base = open_pack(packs["raw"], "train")
    assert np.array_equal(ds.labels, np.where(base.labels == 0, 2, 1))
    assert ds.empty_classes == ["bird"] and base.empty_classes == []
    with pytest.raises(DatasetError, match="packed class.*cat.*not among"):
        open_pack(packs["raw"], "train", classes=["dog"])
    with pytest.raises(DatasetError, match="pack the data again with --channels 1"):
        open_pack(packs["raw"], "train", channels=1)


# --------------------------------------------------------------------------- corrupt, cut, unfinished

def _copy(src, dst):
    with open(src, "rb") as a, open(dst, "wb") as b:
        b.write(a.read())
    return dst


def test_flipped_byte_in_a_chunk_is_refused_naming_the_chunk(packs, tmp_path):
    path = _copy(os.path.join(packs["raw"], "train.pack"), str(tmp_path / "train.pack"))
    ds = PackDataset(path)
    victim = 7
    c = int(ds.chunks_of([victim])[0])
    with open(path, "r+b") as fh:
        fh.seek(4096 + victim * ds.sample_bytes + 100)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x10]))
    ds = PackDataset(path)                  # opening reads only the index: fine
    first = int(ds.chunk_first[c])
    ds.read([first - 1] if first else [int(ds.chunk_first[c + 1])])   # another chunk reads
    with pytest.raises(PackError, match=rf"chunk {c} \(samples {first}-.*fails its checksum.*pack the data again"):
        ds.read([victim])
    with pytest.raises(PackError, match=f"chunk {c} "):
        ds.verify()


@pytest.mark.parametrize("where", ["metadata", "labels", "trailer", "header"])
def test_damaged_index_is_refused_on_opening(packs, tmp_path, where):
    path = _copy(os.path.join(packs["jpeg"], "train.pack"), str(tmp_path / "train.pack"))
    meta = PackDataset(path).meta
    size = os.path.getsize(path)
    at = {"metadata": size - 40, "labels": meta["blocks"]["labels"]["offset"] + 1, "trailer": size - 30,
          "header": 2}[where]
    with open(path, "r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(PackError, match=os.path.basename(path)):
        PackDataset(path)


@pytest.mark.parametrize("cut", [1, 32, 5000])
def test_truncated_pack_is_refused(packs, tmp_path, cut):
    path = _copy(os.path.join(packs["raw"], "train.pack"), str(tmp_path / "train.pack"))
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - cut)
    with pytest.raises(PackError, match="truncated|cut|damaged"):
        PackDataset(path)


def test_an_unfinished_pack_is_not_a_dataset(tmp_path):
    (tmp_path / "train.pack.partial").write_bytes(b"ALXPACK\x00")
    with pytest.raises(DatasetError, match="unfinished pack.*run the same alexnetc pack command again"):
        open_dataset(str(tmp_path), "train")


# --------------------------------------------------------------------------- resume and atomicity

KILLED_PACKER = """
import sys, time
from alexnetc.runtime.data import packer
slow = packer.encode_unit
def encode_unit(task):
    time.sleep(0.05)
    return slow(task)
packer.encode_unit = encode_unit
packer.FLUSH_SECONDS = 0.0       # journal every chunk, so the kill lands between journaled chunks
src = packer.list_sources(sys.argv[1], 3)[0]
packer.pack_split(src, sys.argv[2], size=32, fmt=sys.argv[3], workers=1, progress=False, chunk=1)
"""


@pytest.mark.parametrize("fmt", ["raw", "jpeg"])
def test_killed_pack_leaves_no_pack_and_resumes_exactly(tree, packs, tmp_path, fmt):
    root, _ = tree
    out = str(tmp_path / "out")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PACKER, root, out, fmt])
    journal = os.path.join(out, "train.pack.journal")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.exists(journal) and open(journal).read().count("\n") >= 5:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(out, "train.pack"))
    assert os.path.exists(os.path.join(out, "train.pack.partial"))
    with open(os.path.join(out, "train.pack.partial"), "ab") as fh:   # bytes no journal line vouches for
        fh.write(b"garbage past the journal")
    with open(journal, "a") as fh:                                     # and a torn journal line
        fh.write('{"unit": 99, "byt')
    src = list_sources(root, 3)[0]
    s = pack_split(src, out, size=SIZE, fmt=fmt, workers=1, progress=False, chunk=1, log=lambda m: None)
    assert 4 <= s.resumed_from < len(src)
    assert not os.path.exists(journal) and not os.path.exists(os.path.join(out, "train.pack.partial"))
    a, b = open_pack(out, "train"), open_pack(packs[fmt], "train")
    assert np.array_equal(a.read(np.arange(len(a))), b.read(np.arange(len(b))))
    assert np.array_equal(a.labels, b.labels) and a.unreadable == b.unreadable
    assert [a.source(i) for i in range(len(a))] == [b.source(i) for i in range(len(b))]


def test_interrupted_pack_resumes_and_other_options_start_over(tree, tmp_path, monkeypatch):
    from alexnetc.runtime.data import packer

    root, _ = tree
    src = list_sources(root, 3)[0]
    real, calls = packer.encode_unit, []

    def interrupted(task):
        calls.append(task[0])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(packer, "encode_unit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pack_split(src, str(tmp_path), size=SIZE, workers=1, progress=False, chunk=2)
    monkeypatch.setattr(packer, "encode_unit", real)
    lines = (tmp_path / "train.pack.journal").read_text().splitlines()
    assert json.loads(lines[0])["params"]["side"] == SIZE and len(lines) == 1 + 3   # the three finished chunks
    logged = []
    s = pack_split(src, str(tmp_path), size=SIZE + 1, workers=1, progress=False, chunk=2, log=logged.append)
    assert s.resumed_from == 0 and "starting over" in logged[0]
    assert open_pack(str(tmp_path), "train").height == SIZE + 1


def test_existing_pack_is_skipped_or_refused(tree, packs, tmp_path):
    root, _ = tree
    out = str(tmp_path)
    for name in ("train.pack", "val.pack"):
        _copy(os.path.join(packs["raw"], name), os.path.join(out, name))
    src = list_sources(root, 3)[0]
    s = pack_split(src, out, size=SIZE, fmt="raw", workers=1, progress=False, chunk=3)
    assert s.skipped and s.count == len(open_pack(out, "train"))
    with pytest.raises(DatasetError, match="other options.*--overwrite"):
        pack_split(src, out, size=SIZE, fmt="jpeg", workers=1, progress=False)
    s = pack_split(src, out, size=SIZE, fmt="jpeg", workers=1, progress=False, overwrite=True)
    assert not s.skipped and open_pack(out, "train").format == "jpeg"


# --------------------------------------------------------------------------- the command

def test_pack_command(tree, tmp_path, capsys):
    root, _ = tree
    out = str(tmp_path / "p")
    assert cli.main(["pack", root, "-o", out, "--size", "24", "--format", "jpeg", "--quality", "80",
                     "--workers", "2", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "train: 16 images into" in captured.out and "val: 8 images into" in captured.out
    assert "1 unreadable image not packed: train/cat/zz_broken.jpg" in captured.err
    ds = open_dataset(out, "train")
    assert (ds.format, ds.height, ds.meta["quality"]) == ("jpeg", 24, 80)
    assert cli.main(["pack", root, "-o", out, "--size", "25", "--no-progress"]) == 2
    assert "other options" in capsys.readouterr().err
    assert cli.main(["pack", root, "-o", out, "--spec", "alexnet", "--no-progress", "--workers", "1",
                     "--overwrite"]) == 0
    assert open_dataset(out, "val").height == 256                  # alexnet.yaml's data.resize
    assert cli.main(["pack", out, "-o", str(tmp_path / "q")]) == 2  # a pack is not a source
    assert "already a pack" in capsys.readouterr().err
    assert cli.main(["pack", root, "-o", out, "--quality", "0"]) == 2


def test_a_raw_pack_that_cannot_fit_is_refused_before_writing(tree, tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    root, _ = tree
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 ** 9, 10 ** 9 - 1000, 1000))
    out = str(tmp_path / "p")
    assert cli.main(["pack", root, "-o", out, "--size", "64", "--no-progress", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "a raw pack of 17 images at 64x64x3 needs about" in err and "pack with --format jpeg" in err
    assert not os.listdir(out)


def test_a_pack_travels_to_another_process_by_path(packs):
    import pickle

    ds = open_pack(packs["raw"], "train", classes=["dog", "cat"])
    copy = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 2000          # the path and options, not the mapped samples
    assert np.array_equal(copy.read([0, 3]), ds.read([0, 3])) and np.array_equal(copy.labels, ds.labels)
