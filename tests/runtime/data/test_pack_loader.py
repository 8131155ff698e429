"""The pack's batched loader: the per-sample loader's batches (order, shards, resume, limits), the same
batches whatever the number of worker threads, exact shards, ten-crop evaluation, a corrupt chunk
stopping the epoch by name; training from a pack resumes exactly; the data-wait share and its warning.

Oracles: the per-sample loader (`make_loader` on the same pack through the DataLoader path) for the
order and for evaluation pixels; an uninterrupted epoch for resumed ones; the whole batch for shards.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest
import torch

from alexnetc.runtime.data.augment import build_transforms
from alexnetc.runtime.data.data_wait import DataWait
from alexnetc.runtime.data.loader import TransformedDataset, make_loader
from alexnetc.runtime.data.pack import PackError, open_pack
from alexnetc.runtime.data.pack_loader import PackLoader
from alexnetc.runtime.data.packer import list_sources, pack_split
from alexnetc.runtime.training.loop import Trainer

from ..training.test_train import TINY, _final_params, _opts, _pattern_dataset, run_interrupted
from .test_pack import packed_tree

SIZE = 36
CFG = {"resize": SIZE, "crop": 32, "mirror": True, "pca_lighting": 0.1, "test_crops": "ten"}


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return packed_tree(tmp_path_factory, SIZE, chunk=3)


def _transforms(ds):
    return build_transforms(CFG, ds, cache_dir=os.path.join(os.path.dirname(ds.path), "cache"))


def _epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_batches_do_not_depend_on_the_number_of_workers(pack):
    ds = open_pack(pack, "train")
    train_tf, _ = _transforms(ds)
    kw = dict(shuffle=True, seed=4, epoch=1, drop_last=True)
    runs = [_epoch(make_loader(ds, train_tf, 5, num_workers=w, **kw)) for w in (0, 1, 3)]
    assert isinstance(make_loader(ds, train_tf, 5, **kw), PackLoader)
    assert len(runs[0]) == len(ds) // 5 and runs[0][0][0].shape == (5, 3, 32, 32)
    _same(runs[0], runs[1])
    _same(runs[0], runs[2])
    other_epoch = _epoch(make_loader(ds, train_tf, 5, shuffle=True, seed=4, epoch=2, drop_last=True))
    assert not torch.equal(other_epoch[0][0], runs[0][0][0])


def test_batches_kept_by_the_consumer_are_never_overwritten(pack):
    """The host path reuses its output arrays once nothing holds them: batches (and views of them)
    kept by the consumer must keep their values, batches dropped are reused."""
    ds = open_pack(pack, "train")
    train_tf, _ = _transforms(ds)
    kw = dict(shuffle=True, seed=6, epoch=0, drop_last=True)
    cloned = _epoch(make_loader(ds, train_tf, 2, **kw))
    kept = [(x[0], y) for x, y in make_loader(ds, train_tf, 2, num_workers=2, **kw)]    # views of each batch
    for (x, y), (cx, cy) in zip(kept, cloned):
        assert torch.equal(x, cx[0]) and torch.equal(y, cy)
    loader = make_loader(ds, train_tf, 2, **kw)
    seen = {x.data_ptr() for x, _ in loader}            # each batch dropped before the next is made
    assert len(seen) < len(cloned)


def test_the_device_path_gives_the_host_paths_batches(pack):
    """The GPU's path (whole images copied, cut and normalised on the device), run on the CPU."""
    ds = open_pack(pack, "train")
    for tf in _transforms(ds):
        kw = dict(shuffle=True, seed=3, epoch=0, drop_last=True, num_workers=2)
        host = make_loader(ds, tf, 4, **kw)
        device = make_loader(ds, tf, 4, **kw)
        device.augment_on_host = False
        _same(_epoch(host), _epoch(device))


def test_the_batches_are_the_per_sample_loaders(pack):
    """Same samples in the same batches as the DataLoader path (order from (seed, epoch)); for
    evaluation (no draws) the same pixels too."""
    ds = open_pack(pack, "train")
    train_tf, eval_tf = _transforms(ds)
    kw = dict(shuffle=True, seed=9, epoch=3, drop_last=False)
    ours = _epoch(make_loader(ds, train_tf, 4, **kw))
    theirs = _epoch(make_loader(TransformedDataset(ds, None, 0, 0), train_tf, 4, **kw))   # not a pack: per sample
    assert [y.tolist() for _, y in ours] == [y.tolist() for _, y in theirs]
    _same(_epoch(make_loader(ds, eval_tf, 3)), _epoch(make_loader(TransformedDataset(ds, None, 0, 0), eval_tf, 3)))
    ten = _epoch(make_loader(ds, eval_tf, 3))
    assert ten[0][0].shape == (3, 10, 3, 32, 32)


def test_resume_and_limits_give_the_rest_of_the_same_epoch(pack):
    ds = open_pack(pack, "train")
    train_tf, _ = _transforms(ds)
    kw = dict(shuffle=True, seed=1, epoch=0, drop_last=True)
    full = _epoch(make_loader(ds, train_tf, 3, **kw))
    _same(_epoch(make_loader(ds, train_tf, 3, start_batch=2, num_workers=2, **kw)), full[2:])
    _same(_epoch(make_loader(ds, train_tf, 3, start_batch=1, limit_batches=4, **kw)), full[1:4])


@pytest.mark.parametrize("world", [2, 3])
def test_shards_cut_every_global_batch_exactly(pack, world):
    ds = open_pack(pack, "train")
    train_tf, _ = _transforms(ds)
    kw = dict(shuffle=True, seed=2, epoch=5, drop_last=True)
    whole = _epoch(make_loader(ds, train_tf, 4, **kw))
    parts = [_epoch(make_loader(ds, train_tf, 4, shard=(r, world), num_workers=r, **kw)) for r in range(world)]
    for b, (x, y) in enumerate(whole):
        assert all(len(p) == len(whole) for p in parts)      # every process steps every batch
        assert torch.equal(torch.cat([p[b][0] for p in parts if p[b][1].numel()]), x)
        assert torch.equal(torch.cat([p[b][1] for p in parts]), y)
    if world == 3:   # batch 4 on 3 processes: slices 2, 1, 1; 5 would leave one empty
        last = _epoch(make_loader(ds, train_tf, 2, shard=(2, 3), **kw))
        assert all(x.numel() == 0 and y.numel() == 0 for x, y in last)


def test_a_corrupt_chunk_stops_the_epoch_naming_it(pack, tmp_path):
    path = str(tmp_path / "train.pack")
    with open(os.path.join(pack, "train.pack"), "rb") as a, open(path, "wb") as b:
        b.write(a.read())
    with open(path, "r+b") as fh:
        fh.seek(4096 + 4 * SIZE * SIZE * 3 + 10)   # in sample 4: chunk 1 (3 samples per chunk)
        fh.write(b"\x00\x01\x02")
    os.symlink(os.path.join(pack, "val.pack"), str(tmp_path / "val.pack"))
    ds = open_pack(str(tmp_path), "train")
    train_tf, _ = _transforms(open_pack(pack, "train"))
    with pytest.raises(PackError, match=r"chunk 1 \(samples 3-5, .*fails its checksum"):
        _epoch(make_loader(ds, train_tf, 4, shuffle=True, num_workers=2))


# --------------------------------------------------------------------------- training

AUG = "data: {resize: 32, crop: 28, mirror: true}"


@pytest.fixture
def packed_pattern(tmp_path):
    """TINY's four-quadrant data, packed at 32x32 (upscaled), and TINY trained on random 28 crops of it."""
    data = _pattern_dataset(tmp_path / "data", n_train=64, n_val=16)
    out = str(tmp_path / "pack")
    for src in list_sources(data, 1):
        pack_split(src, out, size=32, workers=1, progress=False)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY.replace("data: {mirror: false}", AUG))
    return str(spec), out


def test_training_from_a_pack_resumes_exactly_whatever_the_workers(packed_pattern, tmp_path, monkeypatch):
    spec, data = packed_pattern
    logs = []
    straight = tmp_path / "straight"
    opts = _opts(spec, data, straight, epochs=2, batch_size=16, workers=2)
    opts = dataclasses.replace(opts, log=logs.append)
    Trainer(opts).run()
    assert any("data wait" in line for line in logs if line.startswith("epoch 1:"))
    record = json.loads((straight / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 <= record["data_wait_share"] <= 1

    stopped = tmp_path / "stopped"
    run_interrupted(monkeypatch, _opts(spec, data, stopped, epochs=2, batch_size=16, workers=0), at=7)  # mid-epoch 2
    Trainer(_opts(spec, data, stopped, epochs=2, resume=True, workers=3)).run()
    a, _ = _final_params(straight)
    b, _ = _final_params(stopped)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_two_processes_on_a_pack_train_like_one(packed_pattern, tmp_path, monkeypatch):
    """oracle: one process on the same global batches (tolerance as test_data_parallel's)."""
    from ..execution.test_data_parallel import _run

    spec, data = packed_pattern
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    kw = dict(spec=spec, epochs=1, batch_size=8, limit_train_batches=3, limit_val_batches=2, seed=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = Trainer(_opts(data=data, out=str(tmp_path / "one"), **kw))
        one.run()
    finally:
        torch.set_num_threads(threads)
    params = _run(2, data, str(tmp_path / "dp2"), **kw)
    for k, w in one.executor.params.items():
        torch.testing.assert_close(params[0][k], w, rtol=1e-4, atol=2e-6)
        assert torch.equal(params[1][k], params[0][k])


# --------------------------------------------------------------------------- the data-wait share

class Slow:
    """A loader whose batches take `wait` seconds to arrive."""

    def __init__(self, n, wait):
        self.n, self.wait = n, wait

    def __iter__(self):
        for i in range(self.n):
            time.sleep(self.wait)
            yield i


def test_data_wait_share_and_its_warning(pack, monkeypatch):
    waits = DataWait(Slow(4, 0.03))
    for _ in waits:
        time.sleep(0.01)            # the "step"
    assert 0.6 < waits.share < 0.9 and waits.describe().startswith("data wait ")
    assert "pack the dataset once (alexnetc pack" in waits.warning()
    quick = DataWait(Slow(4, 0.0))
    for _ in quick:
        time.sleep(0.01)
    assert quick.share < 0.2 and quick.warning() is None
    monkeypatch.setenv("ALEXNETC_DATA_WAIT_WARN", "0.95")
    assert waits.warning() is None
    monkeypatch.delenv("ALEXNETC_DATA_WAIT_WARN")
    ds = open_pack(pack, "train")
    loader = make_loader(ds, _transforms(ds)[0], 4, num_workers=1)
    waits = DataWait(loader)
    waits.waited, waits.elapsed = 0.9, 1.0
    assert "raise --workers (now 1)" in waits.warning()
