"""Training end to end on the CPU: the loss falls, resuming equals not stopping, a NaN stops cleanly,
corrupt images are skipped and counted, a killed run's checkpoint always loads."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from alexnetc.runtime.training import checkpoint as ckpt
from alexnetc.runtime.training.errors import TrainingError
from alexnetc.runtime.training.loop import Trainer
from alexnetc.runtime.training.options import TrainOptions

from ..data.test_datasets import write_idx
from .faults import nan_loss_at_step

# A two-tower net of AlexNet's shape for 28x28 grey images, small enough for tests.
TINY = """
name: tiny
input: {channels: 1, height: 28, width: 28}
classes: 4
devices: [gpu0, gpu1]
defaults: {act: relu, weight_init: {type: kaiming}}
layers:
  - {name: conv1, op: conv, filters: 8, kernel: 5, stride: 2, pad: 2,
     groups: {count: 2, devices: [gpu0, gpu1], connect: all}}
  - {name: norm1, op: lrn, size: 3, k: 2, alpha: 1.0e-4, beta: 0.75, alpha_over_n: false}
  - {name: pool1, op: maxpool, kernel: 3, stride: 2}
  - {name: conv2, op: conv, filters: 16, kernel: 3, pad: 1,
     groups: {count: 2, devices: [gpu0, gpu1], connect: own}}
  - {name: pool2, op: maxpool, kernel: 3, stride: 2}
  - {name: fc3, op: fc, units: 32, groups: {count: 2, devices: [gpu0, gpu1], connect: all}}
  - {name: drop3, op: dropout, p: 0.5}
  - {name: fc4, op: fc, units: 4, act: none, device: gpu0}
  - {name: loss, op: softmax_loss}
train: {batch_size: 32, epochs: 2, lr: 0.05, momentum: 0.9, weight_decay: 0.0005, seed: 7,
        schedule: {type: step, every: 1, factor: 0.5}}
data: {mirror: false}
"""


def _pattern_dataset(d, n_train=256, n_val=64, seed=0):
    """4 classes: a bright 8x8 square in one of the four quadrants, on noise. Learnable in an epoch."""
    rng = np.random.default_rng(seed)
    os.makedirs(d, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_val)):
        labels = rng.integers(0, 4, n).astype(np.uint8)
        imgs = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            r, q = divmod(int(c), 2)
            imgs[i, 3 + 14 * r:11 + 14 * r, 3 + 14 * q:11 + 14 * q] = 230
        write_idx(os.path.join(d, f"{prefix}-images-idx3-ubyte"), imgs, False)
        write_idx(os.path.join(d, f"{prefix}-labels-idx1-ubyte"), labels, False)
    return str(d)


@pytest.fixture
def tiny(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    return str(spec), _pattern_dataset(tmp_path / "data")


def _opts(spec, data, out, **kw):
    kw.setdefault("workers", 0)
    kw.setdefault("log", lambda s: None)
    kw.setdefault("progress", False)
    return TrainOptions(spec=spec, data=data, out=str(out), **kw)


def test_loss_falls_and_artifacts_are_written(tiny, tmp_path):
    spec, data = tiny
    out = tmp_path / "run"
    final = Trainer(_opts(spec, data, out, epochs=2)).run()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    import json
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    assert len(lines) == 2
    assert last["train_loss"] < first["train_loss"] < np.log(4) + 0.5
    assert final["val_top1_err"] < 0.5            # chance is 0.75
    assert last["lr"] == pytest.approx(0.05 * 0.5)  # step schedule: halved after epoch 1
    png = Image.open(out / "curves.png")
    assert png.size[0] > 400 and png.size[1] > 200
    tensors, state = ckpt.load_checkpoint(str(out / "checkpoints"))
    assert state["epoch"] == 2 and state["classes"] == ["0", "1", "2", "3"]
    assert any(k.startswith("momentum/") for k in tensors)


def run_interrupted(monkeypatch, opts, at: int) -> None:
    """Train with `opts` until the `at`-th training step, which raises KeyboardInterrupt there (Ctrl-C)."""
    real_step = Trainer.train_step
    calls = {"n": 0}

    def interrupt(self, images, labels, step):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return real_step(self, images, labels, step)

    monkeypatch.setattr(Trainer, "train_step", interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            Trainer(opts).run()
    finally:
        monkeypatch.setattr(Trainer, "train_step", real_step)


def _final_params(out):
    tensors, state = ckpt.load_checkpoint(str(out / "checkpoints"))
    return {k: v for k, v in tensors.items() if k.startswith(("param/", "momentum/", "exp_avg"))}, state


def test_adamw_with_warm_up_and_cosine_resumes_exactly(tiny, tmp_path, monkeypatch):
    """AdamW and a warmed-up cosine schedule, interrupted mid-epoch 2 and resumed, end bit-identical to
    the uninterrupted run (weights and moments); the per-epoch lr is the schedule's at the epoch's last
    update (oracle: the formula by hand, 8 updates per epoch, 2 epochs, warm-up 4 updates)."""
    spec, data = tiny
    kw = dict(epochs=2, optimizer="adamw", lr=0.004, weight_decay=0.05, schedule="cosine", warmup_epochs=0.5)
    straight = tmp_path / "straight"
    Trainer(_opts(spec, data, straight, **kw)).run()
    stopped = tmp_path / "stopped"
    run_interrupted(monkeypatch, _opts(spec, data, stopped, **kw), at=11)
    with pytest.raises(TrainingError, match="trained with adamw; cannot resume it with sgd"):
        Trainer(_opts(spec, data, stopped, resume=True, optimizer="sgd")).run()
    Trainer(_opts(spec, data, stopped, resume=True)).run()   # the spec says sgd: the run's own options continue
    a, sa = _final_params(straight)
    b, sb = _final_params(stopped)
    assert any(k.startswith("exp_avg/") for k in a) and not any(k.startswith("momentum/") for k in a)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert sa["optimizer"] == sb["optimizer"] == {"type": "adamw", "steps": 16}
    lr = [0.004 * 0.5 * (1 + math.cos(math.pi * k / 12)) for k in (3, 11)]   # updates 7 and 15: 4 and 12 past W
    assert [r["lr"] for r in sa["history"]] == pytest.approx(lr, rel=1e-12)


def test_resume_without_repeating_the_options_continues_the_same_run(tiny, tmp_path, monkeypatch):
    # `alexnetc train --resume --out RUN` (the README's line) must continue the run that was started,
    # with its seed, batch size and epoch count, not the spec's defaults; a conflicting value is an error.
    spec, data = tiny
    straight = tmp_path / "straight"
    Trainer(_opts(spec, data, straight, epochs=3, seed=3, batch_size=16)).run()

    stopped = tmp_path / "stopped"
    run_interrupted(monkeypatch, _opts(spec, data, stopped, epochs=3, seed=3, batch_size=16), at=20)  # mid-epoch 2
    for kw in (dict(seed=4), dict(batch_size=32)):
        with pytest.raises(TrainingError, match="resume"):
            Trainer(_opts(spec, data, stopped, resume=True, **kw)).run()
    Trainer(_opts(spec, data, stopped, resume=True)).run()
    a, sa = _final_params(straight)
    b, sb = _final_params(stopped)
    assert (sb["epoch"], sb["seed"], sb["batch_size"]) == (3, 3, 16)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_after_interrupt_at_the_end_of_an_epoch_equals_uninterrupted(tiny, tmp_path, monkeypatch):
    # Ctrl-C while the epoch's curves are drawn: the epoch is evaluated and its schedule step taken, so
    # resuming must neither redo them (a second lr step, a duplicate history record) nor lose them.
    from alexnetc.runtime.training import loop as train_mod

    spec, data = tiny
    straight = tmp_path / "straight"
    Trainer(_opts(spec, data, straight, epochs=2)).run()

    stopped = tmp_path / "stopped"
    real_plot = train_mod.plot_curves

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "plot_curves", interrupt)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_opts(spec, data, stopped, epochs=2)).run()
    monkeypatch.setattr(train_mod, "plot_curves", real_plot)
    Trainer(_opts(spec, data, stopped, epochs=2, resume=True)).run()
    a, sa = _final_params(straight)
    b, sb = _final_params(stopped)
    assert [r["epoch"] for r in sb["history"]] == [1, 2]
    assert [r["lr"] for r in sb["history"]] == [r["lr"] for r in sa["history"]]
    assert sb["schedule"] == sa["schedule"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    spec, data = tiny
    out = tmp_path / "nan"
    nan_loss_at_step(monkeypatch, 9)   # in epoch 2
    with pytest.raises(TrainingError, match=r"diverged at epoch 2, batch 2 \(step 10\): the loss became nan; "
                                             r"stopped without saving\. "
                                             r"The last good checkpoint is .*epoch0001"):
        Trainer(_opts(spec, data, out, epochs=2)).run()
    _, state = ckpt.load_checkpoint(str(out / "checkpoints"))
    assert state["epoch"] == 1


def test_corrupt_images_are_counted_and_skipped(tmp_path):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for c in ("a", "b"):
            os.makedirs(root / split / c)
            for i in range(n // 2):
                Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    (root / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    spec = tmp_path / "rgb.yaml"
    spec.write_text(TINY.replace("channels: 1", "channels: 3").replace("height: 28, width: 28", "height: 16, width: 16")
                    .replace("classes: 4", "classes: 2").replace("units: 4,", "units: 2,")
                    .replace("data: {mirror: false}", "data: {resize: 18, crop: 16, mirror: true, pca_lighting: 0.1}"))
    logs = []
    opts = _opts(str(spec), str(root), tmp_path / "run", epochs=1, batch_size=4, log=logs.append)
    final = Trainer(opts).run()
    assert final["skipped_images"] == 1
    assert any("skipped 1 unreadable image: broken.jpg" in line for line in logs)


@pytest.mark.parametrize("argv, message", [
    (["train", "{spec}", "--synthetic", "64", "--epochs", "0"], "--epochs 0: must be at least 1"),
    (["train", "{spec}", "--synthetic", "64", "--epochs", "-2"], "--epochs -2: must be at least 1"),
    (["train", "{spec}", "--synthetic", "64", "--workers", "-1"], "--workers -1: must be at least 0"),
    (["train", "{spec}", "--synthetic", "64", "--limit-train-batches", "-1"], "--limit-train-batches -1"),
    (["train", "{spec}", "--synthetic", "64", "--limit-val-batches", "0"], "--limit-val-batches 0"),
    (["train", "{spec}", "--synthetic", "-5"], "--synthetic -5: must be at least 1"),
    (["train", "{spec}", "--synthetic", "64", "--lr", "0"], "--lr 0"),
    (["train", "{spec}", "--synthetic", "64", "--lr", "-1"], "--lr -1"),
    (["train", "{spec}", "--synthetic", "64", "--lr", "nan"], "--lr nan"),
    (["train", "{spec}", "--synthetic", "20"], "20 training images make no full batch of 32"),
    (["train", "{spec}", "--synthetic", "64", "--bucket-mb", "0"], "bucket_mb 0: must be a positive number"),
    (["train", "{spec}", "--synthetic", "64", "--dist-timeout", "-1"], "dist_timeout -1: must be a positive"),
    (["eval", "{out}", "--data", "{data}", "--workers", "-1"], "--workers -1"),
    (["eval", "{out}", "--data", "{data}", "--limit-batches", "-1"], "--limit-batches -1"),
    (["neighbors", "{out}", "--data", "{data}", "--query", "q.png", "-o", "n.png", "--workers", "-3"], "--workers -3"),
])
def test_bad_options_are_one_line_errors(tiny, tmp_path, capsys, argv, message):
    from alexnetc.runtime.app.cli import main

    spec, data = tiny
    out = tmp_path / "run"
    fill = {"spec": spec, "data": data, "out": str(out)}
    rc = main([a.format(**fill) for a in argv] + (["--out", str(out), "--no-progress"] if argv[0] == "train" else []))
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert rc == 2 and len(err) == 1 and err[0].startswith("alexnetc: error: ") and message in err[0], err
    assert not (out / "metrics.jsonl").exists()  # nothing was trained


def test_bad_data_options_are_one_line_errors(tiny, tmp_path, capsys):
    # The tiny spec has no data.crop: ten-crop evaluation cannot work, whether the spec or --crops asks.
    from alexnetc.runtime.app.cli import main

    spec, data = tiny
    run = tmp_path / "run"
    Trainer(_opts(spec, data, run, epochs=1, limit_train_batches=1, limit_val_batches=1)).run()
    ten = tmp_path / "ten.yaml"
    ten.write_text(open(spec).read().replace("data: {mirror: false}", "data: {mirror: false, test_crops: ten}"))
    q = tmp_path / "q.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(q)
    for argv in (["eval", str(run), "--data", data, "--crops", "ten", "--workers", "0"],
                 ["predict", str(run), str(q), "--crops", "ten"],
                 ["train", str(ten), "--data", data, "--out", str(tmp_path / "ten"), "--workers", "0",
                  "--no-progress"]):
        assert main(argv) == 2, argv
        err = [line for line in capsys.readouterr().err.splitlines() if line]
        assert len(err) == 1 and err[0].startswith("alexnetc: error: ") and "test_crops" in err[0], (argv, err)


def test_options_are_checked_when_not_from_the_command_line(tiny, tmp_path):
    spec, data = tiny
    for kw, message in ((dict(epochs=0), "epochs"), (dict(limit_val_batches=0), "limit_val_batches"),
                        (dict(lr=0.0), "lr"), (dict(workers=-1), "workers")):
        with pytest.raises(TrainingError, match=message):
            Trainer(_opts(spec, data, tmp_path / "api", **kw)).run()


def test_killed_run_leaves_a_loadable_checkpoint_and_resumes(tiny, tmp_path):
    spec, data = tiny
    out = tmp_path / "killed"
    base = [sys.executable, "-m", "alexnetc.runtime.app.cli", "train", spec, "--data", data, "--out", str(out),
            "--workers", "0", "--no-progress"]
    proc = subprocess.Popen(base + ["--epochs", "40"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpts = out / "checkpoints"
    while time.time() < deadline and len(list(ckpts.glob("*.json")) if ckpts.exists() else []) < 2:
        time.sleep(0.05)
    time.sleep(float(np.random.default_rng().uniform(0, 0.5)))  # somewhere inside an epoch or a save
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    path = ckpt.latest_checkpoint(str(out / "checkpoints"))
    assert path is not None
    tensors, state = ckpt.load_checkpoint(path)
    assert state["epoch"] >= 2 and tensors
    r = subprocess.run(base + ["--epochs", str(state["epoch"] + 1), "--resume"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"resumed from {path}" in r.stdout


@pytest.mark.slow
def test_embedded_default_reaches_90_percent_on_fashion_mnist(tmp_path):
    """The README's promise: `alexnetc train` with no arguments reaches >= 90% test accuracy on
    Fashion-MNIST (about 10 minutes on 2 cores; run with -m slow)."""
    from alexnetc.runtime.app.specs import resolve_spec_path
    from alexnetc.runtime.data.datasets import DatasetError, find_default_dataset

    try:
        find_default_dataset()
    except DatasetError as exc:
        pytest.skip(str(exc))
    final = Trainer(TrainOptions(spec=resolve_spec_path(None), out=str(tmp_path / "run"), progress=False,
                                 log=lambda s: None)).run()
    assert 1 - final["val_top1_err"] >= 0.90


_KILLER = r"""
import os, signal, sys
from alexnetc.runtime.training import loop
mode, argv = sys.argv[1], sys.argv[2:]
if mode == "last-batch":          # SIGKILL right after the weights took the epoch's last step
    real = loop.Trainer.train_step
    def step(self, images, labels, step):
        out = real(self, images, labels, step)
        if step == 3:             # 2 batches per epoch: the last batch of epoch 2
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    loop.Trainer.train_step = step
else:                             # SIGKILL while pruning: after the first old checkpoint's JSON is gone
    real_unlink = os.unlink
    def unlink(p, *a, **k):
        real_unlink(p, *a, **k)
        if os.path.basename(str(p)).startswith("ckpt-") and str(p).endswith(".json"):
            os.kill(os.getpid(), signal.SIGKILL)
    os.unlink = unlink
from alexnetc.runtime.app.cli import main
sys.exit(main(argv))
"""


def test_sigkill_in_the_last_batch_of_an_epoch_or_while_pruning_resumes_bit_identical(tiny, tmp_path):
    spec, data = tiny
    fast = dict(limit_train_batches=2, limit_val_batches=1)
    straight = tmp_path / "straight"
    Trainer(_opts(spec, data, straight, epochs=5, **fast)).run()
    a, sa = _final_params(straight)
    for mode, expect in (("last-batch", ["ckpt-000001-epoch0001.json"]),
                         ("prune", ["ckpt-000002-epoch0002.json", "ckpt-000003-epoch0003.json",
                                    "ckpt-000004-epoch0004.json"])):
        out = tmp_path / mode
        argv = ["train", spec, "--data", data, "--out", str(out), "--workers", "0", "--no-progress", "--epochs", "5",
                "--limit-train-batches", "2", "--limit-val-batches", "1"]
        r = subprocess.run([sys.executable, "-c", _KILLER, mode, *argv], capture_output=True, text=True, timeout=120)
        assert r.returncode == -signal.SIGKILL, r.stderr
        assert sorted(p.name for p in (out / "checkpoints").glob("*.json")) == expect
        logs = []
        o = _opts(spec, data, out, resume=True, log=logs.append)
        Trainer(o).run()
        assert any("taking over the stale lock" in line for line in logs), logs
        b, sb = _final_params(out)
        assert sb["epoch"] == 5 and [r["epoch"] for r in sb["history"]] == [1, 2, 3, 4, 5]
        for k in a:
            assert torch.equal(a[k], b[k]), (mode, k)
        lines = (out / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5]
