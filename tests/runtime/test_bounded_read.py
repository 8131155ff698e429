"""Every file alexnetc reads that it did not just write (class lists, checkpoint records and tensor
files, imported weights, query images, caches) is typed and bounded before it is read (issue 25, item
2): a directory, FIFO or device is refused as "not a regular file" without being opened (a FIFO would
block, /dev/zero never ends), and a file over its named limit as "too large (N bytes, limit M;
ALEXNETC_MAX_...)", in bounded time and memory."""
from __future__ import annotations

import json
import os
import time
import tracemalloc

import pytest

from alexnetc.runtime.app.cli import main
from alexnetc.runtime.bounded_read import UnreadableFile, check_file, read_bounded


def cli(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, [line for line in cap.err.splitlines() if line], cap.out


def one_error(argv, capsys, status=2) -> str:
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        rc, err, _ = cli(argv, capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rc == status and len(err) == 1 and err[0].startswith("alexnetc: error: "), (rc, err)
    assert time.perf_counter() - t0 < 30 and peak < 64 << 20, (time.perf_counter() - t0, peak)
    return err[0][len("alexnetc: error: "):]


def test_check_and_read(tmp_path, monkeypatch):
    f = tmp_path / "f.txt"
    f.write_bytes(b"x" * 100)
    assert check_file(f, "MAX_RECORD_BYTES", "record") == 100
    assert read_bounded(f, "MAX_RECORD_BYTES", "record") == b"x" * 100
    monkeypatch.setenv("ALEXNETC_MAX_RECORD_BYTES", "99")
    with pytest.raises(UnreadableFile, match=rf"^{f}: too large for a record \(100 bytes, limit 99; "
                                             r"ALEXNETC_MAX_RECORD_BYTES\)$"):
        read_bounded(f, "MAX_RECORD_BYTES", "record")
    os.mkfifo(tmp_path / "fifo")
    for path, kind in ((tmp_path / "fifo", "a FIFO"), (tmp_path, "a directory"), ("/dev/zero", "a character device")):
        with pytest.raises(UnreadableFile, match=rf"^{path}: not a regular file \({kind}\); an image file must "
                                                 "be a regular file$"):
            check_file(path, None, "image file")
    with pytest.raises(UnreadableFile, match="no such class list"):
        check_file(tmp_path / "missing", "MAX_CLASS_LIST_BYTES", "class list")


def test_import_class_list_from_a_device_or_too_large(tmp_path, capsys, monkeypatch):
    """`import --classes /dev/zero` ran for 17 s and died out of memory at 3 GB."""
    import torch

    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "w.pth")
    base = ["import", "torchvision-alexnet", str(tmp_path / "w.pth"), "-o", str(tmp_path / "out"), "--classes"]
    assert one_error(base + ["/dev/zero"], capsys) == \
        "/dev/zero: not a regular file (a character device); a class list must be a regular file"
    big = tmp_path / "classes.txt"
    big.write_text("".join(f"class {i}\n" for i in range(1000)))
    monkeypatch.setenv("ALEXNETC_MAX_CLASS_LIST_BYTES", "1000")
    assert one_error(base + [str(big)], capsys) == \
        f"{big}: too large for a class list ({big.stat().st_size:,} bytes, limit 1,000; ALEXNETC_MAX_CLASS_LIST_BYTES)"
    assert not (tmp_path / "out").exists()


def test_weights_that_are_not_regular_files_or_too_large(tmp_path, capsys, monkeypatch):
    """A FIFO, /dev/zero and a directory were reported as "no such weights file"."""
    os.mkfifo(tmp_path / "w.pth")
    base = ["import", "torchvision-alexnet"]
    for path, kind in ((tmp_path / "w.pth", "a FIFO"), ("/dev/zero", "a character device"), (tmp_path, "a directory")):
        assert one_error(base + [str(path), "-o", str(tmp_path / "out")], capsys) == \
            f"{path}: not a regular file ({kind}); a weights file must be a regular file"
    w = tmp_path / "w.safetensors"
    w.write_bytes(b"\0" * 2000)
    monkeypatch.setenv("ALEXNETC_MAX_WEIGHTS_BYTES", "1000")
    assert one_error(base + [str(w), "-o", str(tmp_path / "out")], capsys) == \
        f"{w}: too large for a weights file (2,000 bytes, limit 1,000; ALEXNETC_MAX_WEIGHTS_BYTES)"


def test_checkpoint_record_and_tensor_file_are_bounded_and_typed(tiny_copy, capsys, monkeypatch):
    """A 228 MiB checkpoint record took 1.7 GB before "out of memory"; a FIFO in its place blocked."""
    ckdir = tiny_copy / "checkpoints"
    (rec,) = ckdir.glob("*.json")
    tensors = rec.with_suffix(".safetensors")
    big = ckdir / "ckpt-000009-big.json"
    with open(big, "wb") as fh:   # sparse: 17 MiB that would take a long time to parse, none of it read
        fh.truncate(17 << 20)
    assert one_error(["eval", str(big), "--data", str(tiny_copy)], capsys) == \
        f"{big}: too large for a checkpoint record (17,825,792 bytes, limit 16,777,216; ALEXNETC_MAX_RECORD_BYTES)"
    # eval RUN passes over it (with a warning naming why) to the good one
    rc, err, out = cli(["eval", str(tiny_copy), "--workers", "0", "--limit-batches", "1"], capsys)
    assert rc == 0 and "too large for a checkpoint record" in err[0], err
    big.unlink()
    fifo = ckdir / "ckpt-000009-fifo.json"
    os.mkfifo(fifo)
    assert one_error(["eval", str(fifo)], capsys) == \
        f"{fifo}: not a regular file (a FIFO); a checkpoint record must be a regular file"
    fifo.unlink()
    monkeypatch.setenv("ALEXNETC_MAX_WEIGHTS_BYTES", "1000")
    assert one_error(["eval", str(rec)], capsys) == \
        f"{tensors}: too large for a checkpoint tensor file ({tensors.stat().st_size:,} bytes, limit 1,000; " \
        "ALEXNETC_MAX_WEIGHTS_BYTES)"
    monkeypatch.delenv("ALEXNETC_MAX_WEIGHTS_BYTES")
    tensors.unlink()
    os.mkfifo(tensors)
    assert one_error(["eval", str(rec)], capsys) == \
        f"{tensors}: not a regular file (a FIFO); a checkpoint tensor file must be a regular file"


def test_query_images_must_be_regular_files(tiny_trained, tmp_path, capsys):
    run = str(tiny_trained[2])
    os.mkfifo(tmp_path / "q.png")
    for argv in (["predict", run, str(tmp_path / "q.png")],
                 ["neighbors", run, "-o", str(tmp_path / "nn.png"), "--query", str(tmp_path / "q.png")]):
        assert one_error(argv, capsys) == \
            f"{tmp_path}/q.png: not a regular file (a FIFO); an image file must be a regular file"
    assert one_error(["predict", run, str(tmp_path)], capsys) == \
        f"{tmp_path}: not a regular file (a directory); an image file must be a regular file"
    assert one_error(["predict", run, str(tmp_path / "none.png")], capsys) == f"{tmp_path}/none.png: no such image file"


def test_statistics_cache_is_bounded_and_checked(tmp_path, monkeypatch):
    """A statistics cache holding NaN (or too large, or not a file) is recomputed, never used."""
    import numpy as np

    from alexnetc.runtime.data.augment import dataset_stats, stats_cache_path

    from .data.test_datasets import make_idx_dir

    make_idx_dir(tmp_path / "d", n_train=50, n_test=5)
    from alexnetc.runtime.data.datasets import open_dataset

    ds = open_dataset(tmp_path / "d", "train")
    good = dataset_stats(ds, cache_dir=tmp_path / "c")
    path = stats_cache_path(ds, tmp_path / "c")
    record = json.loads(open(path).read())
    record["stats"]["mean"] = [float("nan")]
    with open(path, "w") as fh:
        json.dump(record, fh)
    assert dataset_stats(ds, cache_dir=tmp_path / "c") == good
    assert np.isfinite(json.loads(open(path).read())["stats"]["mean"]).all()   # and the cache is rewritten
    monkeypatch.setenv("ALEXNETC_MAX_RECORD_BYTES", "10")
    assert dataset_stats(ds, cache_dir=tmp_path / "c") == good
    monkeypatch.delenv("ALEXNETC_MAX_RECORD_BYTES")
    os.unlink(path)
    os.mkfifo(path)   # neither read (it would block) nor written through
    assert dataset_stats(ds, cache_dir=tmp_path / "c") == good
    assert os.path.exists(path) and not os.path.isfile(path)


def test_feature_cache_of_the_wrong_width_or_with_nan_is_recomputed(tiny_trained, tmp_path, capsys, monkeypatch):
    """A NaN feature cache was used by `neighbors` without a word; one of the wrong width ended in
    "internal error: RuntimeError"."""
    import numpy as np
    from PIL import Image

    run = str(tiny_trained[2])
    monkeypatch.setenv("ALEXNETC_CACHE", str(tmp_path / "cache"))
    Image.fromarray(np.full((28, 28), 90, np.uint8)).save(tmp_path / "q.png")
    argv = ["neighbors", str(run), "--limit", "8", "--k", "2", "--workers", "0", "-o", str(tmp_path / "nn.png"),
            "--query", str(tmp_path / "q.png")]
    rc, err, fresh = cli(argv, capsys)
    assert rc == 0, err
    (cache,) = (tmp_path / "cache").glob("features-*.npz")
    with np.load(cache) as z:
        f, i, key = z["features"], z["indices"], z["key"]
    rows = [line for line in fresh.splitlines() if line.startswith("  ")]
    for bad, problem in ((np.full_like(f, np.nan), "it holds non-finite features (NaN or infinity) for 8 images"),
                         (f[:, :5], f"its features are float32 (8, 5), not {f.shape[1]} float32 values per image")):
        np.savez(cache, features=bad, indices=i, key=key)
        rc, err, out = cli(argv, capsys)
        assert rc == 0, err
        assert f"warning: ignoring the feature cache {cache}: {problem}; recomputing" in out, out
        assert [line for line in out.splitlines() if line.startswith("  ")] == rows   # the fresh answer
        with np.load(cache) as z:
            assert np.array_equal(z["features"], f)
    cache.write_bytes(b"PK\x03\x04 not a zip")
    rc, err, out = cli(argv, capsys)
    assert rc == 0 and "unreadable (BadZipFile); recomputing" in out, (err, out)
