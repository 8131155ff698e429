"""Nothing lost, nothing silently wrong (issue 13): resume never discards, one run per directory,
divergence caught before it is saved, checkpoints checked against the spec, SIGTERM saves, hostile
data and checkpoints give one-line errors. Every training here is a few batches of the tiny net."""
from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnetc.runtime.app.cli import main
from alexnetc.runtime.training import checkpoint as ckpt
from alexnetc.runtime.training.errors import TrainingError
from alexnetc.runtime.training.loop import Trainer

from .test_train import TINY, _opts, _pattern_dataset

ROOT = Path(__file__).resolve().parents[3]
FAST = dict(limit_train_batches=2, limit_val_batches=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _pattern_dataset(tmp_path_factory.mktemp("data"), n_train=96, n_val=32)


@pytest.fixture
def spec(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    return str(p)


def train(spec, data, out, logs=None, **kw):
    for k, v in FAST.items():
        kw.setdefault(k, v)
    if logs is not None:
        kw["log"] = logs.append
    return Trainer(_opts(spec, data, out, **kw)).run()


def cli(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, [line for line in cap.err.splitlines() if line], cap.out


def one_error(rc, err, status=2):
    assert rc == status and len(err) == 1 and err[0].startswith("alexnetc: error: "), (rc, err)
    assert "Traceback" not in err[0] and "\x1b" not in err[0]
    return err[0]


def flip_byte(path: Path) -> None:
    b = bytearray(path.read_bytes())
    b[len(b) // 2] ^= 0x01
    path.write_bytes(bytes(b))


def ckpts(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.json"))


# ------------------------------------------------------------------------------------------ 1. resume

def test_resume_skips_a_corrupt_newest_checkpoint_and_says_so(spec, data, tmp_path, capsys):
    run = tmp_path / "run"
    train(spec, data, run, epochs=2)
    names = ckpts(run)
    assert names == ["ckpt-000001-epoch0001.json", "ckpt-000002-epoch0002.json"]
    flip_byte(run / "checkpoints" / names[1].replace(".json", ".safetensors"))
    logs = []
    train(spec, data, run, logs, epochs=4, resume=True)
    assert any(l.startswith("warning: --resume skipped 1 newer checkpoint") and names[1].replace(".json", "")
               in l and "SHA-256" in l for l in logs), logs
    assert any(f"resumed from {run}/checkpoints/{names[0]}: epoch 2" in l for l in logs), logs
    # the corrupt checkpoint is kept for inspection (pruning keeps 3 verified ones, never a failing one)
    left = ckpts(run)
    assert names[1] in left and names[0] not in left and len(left) == 4, left
    # eval RUN falls back with a warning
    rc, err, out = cli(["eval", str(run), "--data", data, "--workers", "0", "--limit-batches", "1"], capsys)
    assert rc == 0 and "accuracy" in out
    assert err == [], err  # the newest checkpoint verifies now: nothing to warn about
    flip_byte(run / "checkpoints" / left[-1].replace(".json", ".safetensors"))
    rc, err, out = cli(["eval", str(run), "--data", data, "--workers", "0", "--limit-batches", "1"], capsys)
    assert rc == 0 and "accuracy" in out
    assert len(err) == 1 and err[0].startswith(f"warning: using {run}/checkpoints/{left[-2]}; 1 newer checkpoint "
                                               "failed verification: ") and "SHA-256" in err[0], err


def test_resume_refuses_when_nothing_verifies(spec, data, tmp_path, capsys):
    run = tmp_path / "run"
    train(spec, data, run, epochs=1)
    (j,) = (run / "checkpoints").glob("*.json")
    rec = json.loads(j.read_text())
    rec["version"] = 99
    j.write_text(json.dumps(rec))
    base = ["train", spec, "--data", data, "--out", str(run), "--workers", "0", "--no-progress",
            "--limit-train-batches", "2", "--limit-val-batches", "1"]
    line = one_error(*cli(base + ["--resume"], capsys)[:2])
    assert "no checkpoint in" in line and "verifies; refusing to start over" in line and "version 99" in line
    assert ckpts(run) == [j.name]  # nothing deleted, nothing new
    line = one_error(*cli(["eval", str(run), "--data", data], capsys)[:2])
    assert "version 99" in line
    empty = tmp_path / "empty"
    line = one_error(*cli(base[:5] + [str(empty)] + base[6:] + ["--resume"], capsys)[:2])
    assert "--resume: no checkpoint in" in line and "to continue from" in line


def test_lr_and_epochs_apply_from_the_resume_point(spec, data, tmp_path):
    run = tmp_path / "run"
    train(spec, data, run, epochs=1)
    logs = []
    train(spec, data, run, logs, epochs=2, resume=True, lr=0.001)
    _, state = ckpt.load_checkpoint(str(run / "checkpoints"))
    assert state["history"][1]["lr"] == pytest.approx(0.001)
    assert any(l.startswith("--lr 0.001: learning rate 0.001 from the resume point on (the run was at 0.025)")
               for l in logs), logs
    with pytest.raises(TrainingError, match=r"--epochs 1: the run in .* is already at epoch 2"):
        train(spec, data, run, epochs=1, resume=True)
    with pytest.raises(TrainingError, match="cannot resume it with --limit-train-batches 3"):
        train(spec, data, run, epochs=3, resume=True, limit_train_batches=3)


def test_pruning_keeps_failing_and_last_verified_checkpoints(tmp_path):
    d = tmp_path / "c"
    t = {"param/w": torch.ones(3)}
    p1 = ckpt.save_checkpoint(d, t, {"n": 1}, keep=None)
    p2 = ckpt.save_checkpoint(d, t, {"n": 2}, keep=None)
    flip_byte(Path(p2).with_suffix(".safetensors"))
    ckpt._prune(str(d), 1, set(), current=p2)  # the newest is damaged: the last verified one must stay
    assert sorted(os.listdir(d)) == sorted(Path(p).name for p in (p1, p2) for p in (p, p.replace(".json", ".safetensors")))
    p3 = ckpt.save_checkpoint(d, t, {"n": 3}, keep=1)
    left = sorted(i.path for i in ckpt.list_checkpoints(d))
    assert left == [p2, p3]  # p1 pruned (verified, older); p2 kept (failed verification)


# ------------------------------------------------------------------------------------------ 2. run directories

def test_one_run_one_directory(spec, data, tmp_path, capsys):
    run = tmp_path / "run"
    train(spec, data, run, epochs=1)
    base = ["train", spec, "--data", data, "--out", str(run), "--workers", "0", "--no-progress",
            "--limit-train-batches", "2", "--limit-val-batches", "1", "--epochs", "1"]
    line = one_error(*cli(base, capsys)[:2])
    assert f"{run} already holds a training run (1 checkpoint, metrics.jsonl): pass --resume" in line
    rc, err, out = cli(base + ["--overwrite"], capsys)
    assert rc == 0, err
    assert "--overwrite: removed the previous run's" in out
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1 and ckpts(run) == ["ckpt-000001-epoch0001.json"]
    line = one_error(*cli(base + ["--overwrite", "--resume"], capsys)[:2])
    assert "give one of them" in line
    (tmp_path / "file").write_text("x")
    line = one_error(*cli(base[:5] + [str(tmp_path / "file")] + base[6:], capsys)[:2])
    assert line == f"alexnetc: error: --out {tmp_path}/file: not a directory"


def test_lock_keeps_a_second_training_out_and_stale_locks_are_taken_over(spec, data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".alexnetc.lock").write_text(f"{sleeper.pid}\n")
        with pytest.raises(TrainingError, match=rf"is in use by another training \(pid {sleeper.pid}"):
            train(spec, data, run, epochs=1)
    finally:
        sleeper.kill()
        sleeper.wait()
    logs = []
    train(spec, data, run, logs, epochs=1)  # the sleeper is gone: its lock is stale
    assert any(f"taking over the stale lock {run}/.alexnetc.lock (pid {sleeper.pid} is no longer running)" in l
               for l in logs), logs
    assert not (run / ".alexnetc.lock").exists()


def test_metrics_are_never_duplicated_after_a_crash(trained, spec, data, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    # a crash after epoch 2's metrics line was appended but before its checkpoint was written
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"epoch": 2, "train_loss": 9.0}) + "\n")
    train(spec, data, run, epochs=2, resume=True)
    records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[1]["train_loss"] != 9.0


# ------------------------------------------------------------------------------------------ 3. divergence

def test_divergence_in_the_last_batch_is_not_saved(spec, data, tmp_path, monkeypatch):
    from alexnetc.runtime.execution.optim import SGD

    run = tmp_path / "run"
    real = SGD.step
    calls = {"n": 0}

    def poison_last_step_of_epoch_2(self, grads, lr):
        real(self, grads, lr)
        calls["n"] += 1
        if calls["n"] == 4:  # 2 batches per epoch: the last batch of epoch 2
            next(iter(self.params.values())).view(-1)[0] = float("inf")

    monkeypatch.setattr(SGD, "step", poison_last_step_of_epoch_2)
    with pytest.raises(TrainingError, match=r"training diverged at epoch 2, batch 2 \(step 4\): parameter \S+ became "
                                            r"non-finite after the update; stopped without saving\. The last good "
                                            r"checkpoint is .*ckpt-000001-epoch0001\.json; continue from it with a "
                                            r"lower learning rate: alexnetc train --resume --out .* --lr 0\.0025"):
        train(spec, data, run, epochs=3)
    assert ckpts(run) == ["ckpt-000001-epoch0001.json"]
    assert not (run / ".alexnetc.lock").exists()


def test_non_finite_gradient_and_validation_loss_stop_training(spec, data, tmp_path, monkeypatch):
    from alexnetc.runtime.training import loop

    monkeypatch.setattr(loop, "_global_norm", lambda ts: float("nan"))
    with pytest.raises(TrainingError, match=r"diverged at epoch 1, batch 1 \(step 1\): the gradient norm became nan"):
        train(spec, data, tmp_path / "g", epochs=1)
    monkeypatch.undo()
    monkeypatch.setattr(Trainer, "evaluate", lambda self, epoch: {"loss": float("inf"), "top1": 0.5, "top5": 0.0})
    with pytest.raises(TrainingError, match=r"diverged after epoch 1 \(step 2\): the validation loss became inf"):
        train(spec, data, tmp_path / "v", epochs=1)
    assert ckpts(tmp_path / "v") == []


def _broken_folder(root: Path, good_val: bool) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            os.makedirs(root / split / c)
            for i in range(4):
                if split == "val" and good_val:
                    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / split / c / f"{i}.png")
                else:
                    (root / split / c / f"{i}.jpg").write_bytes(b"not an image")


def test_zero_usable_images_is_an_error_not_a_score(spec, tmp_path, capsys):
    gray = tmp_path / "g.yaml"
    gray.write_text(TINY.replace("height: 28, width: 28", "height: 16, width: 16").replace("classes: 4", "classes: 2")
                    .replace("units: 4,", "units: 2,").replace("data: {mirror: false}",
                                                               "data: {mirror: false, mean: [127.5], std: [64.0]}"))
    root = tmp_path / "bad"
    _broken_folder(root, good_val=False)
    base = ["train", str(gray), "--data", str(root), "--workers", "0", "--no-progress", "--epochs", "1", "--batch", "2"]
    line = one_error(*cli(base + ["--out", str(tmp_path / "r1")], capsys)[:2])
    assert "epoch 1: no usable training image" in line and "skipped 8 unreadable images" in line
    # a readable training set, an unreadable validation split: eval refuses to score it
    good = tmp_path / "good"
    _broken_folder(good, good_val=True)
    import shutil

    shutil.rmtree(good / "train")
    shutil.copytree(good / "val", good / "train")
    rc, err, _ = cli(base[:3] + [str(good)] + base[4:] + ["--out", str(tmp_path / "r2")], capsys)
    assert rc == 0, err
    shutil.rmtree(good / "val")
    shutil.copytree(root / "val", good / "val")
    line = one_error(*cli(["eval", str(tmp_path / "r2"), "--data", str(good), "--workers", "0"], capsys)[:2])
    assert "no usable image in this split" in line


# ------------------------------------------------------------------------------------------ 4. inputs fit the net

def test_predict_maps_or_refuses_images_of_another_size(trained, tmp_path, capsys):
    rng = np.random.default_rng(1)
    small = rng.integers(0, 255, (28, 28), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((280, 280), Image.NEAREST))
    Image.fromarray(small).save(tmp_path / "small.png")
    Image.fromarray(big).save(tmp_path / "big.png")
    Image.fromarray(big[:28]).save(tmp_path / "wide.png")  # 280x28: no sensible way onto 28x28
    rc, err, out = cli(["predict", str(trained), str(tmp_path / "big.png")], capsys)
    assert rc == 0, err
    assert f"{tmp_path}/big.png: 280x280 resized and centre-cropped to the network's 28x28 input" in out
    top_big = out.splitlines()[2]
    mapped = np.asarray(Image.fromarray(big).resize((28, 28), Image.BILINEAR, reducing_gap=None))
    Image.fromarray(mapped).save(tmp_path / "mapped.png")
    rc, err, out = cli(["predict", str(trained), str(tmp_path / "mapped.png")], capsys)
    assert rc == 0 and out.splitlines()[1] == top_big  # the same prediction as the resized image
    line = one_error(*cli(["predict", str(trained), str(tmp_path / "wide.png")], capsys)[:2])
    assert "wide.png: a 280x28 image cannot be mapped onto the network's 28x28 input" in line
    line = one_error(*cli(["predict", str(trained), str(tmp_path / "small.png"), "--truth", "Sneakers"], capsys)[:2])
    assert "--truth: 'Sneakers' is not a class of this model (classes: 0, 1, 2, 3)" in line
    line = one_error(*cli(["predict", str(trained), str(tmp_path / "small.png"), "--truth", "1", "2"], capsys)[:2])
    assert "--truth: 2 labels for 1 image" in line
    # neighbors maps its queries the same way (and searches the checkpoint's own dataset by default)
    nn = ["neighbors", str(trained), "--limit", "8", "--k", "2", "--workers", "0", "-o", str(tmp_path / "nn.png"),
          "--query"]
    rc, err, out = cli(nn + [str(tmp_path / "big.png")], capsys)
    assert rc == 0, err
    assert f"{tmp_path}/big.png: 280x280 resized and centre-cropped to the network's 28x28 input" in out
    line = one_error(*cli(nn + [str(tmp_path / "wide.png")], capsys)[:2])
    assert "wide.png: a 280x28 image cannot be mapped" in line


def _into_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess:
    """The command line with its stdout a pipe whose reader has already gone (`... | head` once head
    has exited), so every write to it fails with EPIPE, deterministically."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, "-m", "alexnetc.runtime.app.cli", *argv], stdout=w,
                              stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT)
    finally:
        os.close(w)


def test_predict_into_a_closed_pipe_exits_quietly(trained, tmp_path):
    """`alexnetc predict ... | head`: no traceback, no 'Exception ignored', no error line; the status
    of a Unix tool ended by SIGPIPE (128 + 13). Oracle: the same command into a working pipe prints."""
    imgs = []
    for i in range(40):  # more lines than one buffer flush, so the write fails inside the command too
        Image.fromarray(np.full((28, 28), i * 6, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        imgs.append(str(tmp_path / f"{i}.png"))
    ok = subprocess.run([sys.executable, "-m", "alexnetc.runtime.app.cli", "predict", str(trained), *imgs],
                        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert ok.returncode == 0 and ok.stdout.count(".png") >= 40, ok.stderr
    done = _into_closed_pipe(["predict", str(trained), *imgs])
    assert done.stderr == "" and done.returncode == 141, done.stderr
    # a command whose whole output fits the buffer fails only at the final flush: caught there too
    done = _into_closed_pipe(["compile", "--expand", "variants/mini"])
    assert done.stderr == "" and done.returncode == 141, done.stderr


# ------------------------------------------------------------------------------------------ 5. checkpoint checks

@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """One epoch of the tiny net, trained once for the tests that tamper with a copy of it."""
    d = tmp_path_factory.mktemp("trained")
    (d / "tiny.yaml").write_text(TINY)
    train(str(d / "tiny.yaml"), data, d / "run", epochs=1)
    return d / "run"


def _resign(run: Path, edit_tensors=None, edit_state=None) -> str:
    """Rewrite the newest checkpoint as a validly signed one with edited tensors or state; its path."""
    path = ckpt.latest_checkpoint(str(run / "checkpoints"))
    tensors, state = ckpt.load_checkpoint(path)
    if edit_tensors:
        edit_tensors(tensors)
    if edit_state:
        edit_state(state)
    return ckpt.save_checkpoint(run / "checkpoints", tensors, state, tag="edited", keep=None)


@pytest.mark.parametrize("edit, message", [
    (dict(edit_tensors=lambda t: t.update({"param/fc4.weight": torch.zeros(4, 1)})),
     r"does not fit tiny: layer fc4: fc4\.weight is \(4, 1\) there, \(4, 32\) in tiny"),
    (dict(edit_tensors=lambda t: t.pop("param/fc4.bias")), r"has no parameter fc4\.bias for layer fc4 of tiny \(shape \(4,\)\)"),
    (dict(edit_tensors=lambda t: t.update({"param/fc9.weight": torch.zeros(1)})),
     r"has parameters that tiny lacks: fc9\.weight"),
    (dict(edit_tensors=lambda t: t.update({"param/fc4.bias": torch.zeros(4, dtype=torch.float64)})),
     r"fc4_bias is float64, the spec needs float32"),
    (dict(edit_state=lambda s: s["spec"]["layers"][0].update(filters=10)),
     r"state\.spec was changed after the checkpoint was written"),
    (dict(edit_state=lambda s: s.pop("epoch")), r"state\.epoch is missing"),
    (dict(edit_state=lambda s: s.update(batch=-3)), r"state\.batch is -3"),
    (dict(edit_state=lambda s: s.update(classes=["a", "b"])), r"state\.classes lists 2 class names for a network with 4"),
    (dict(edit_state=lambda s: s["rng"]["numpy"].update(keys=[1, 2])),
     r"cannot restore the optimizer, schedule or random state from this checkpoint \((Value|Index)Error"),
])
def test_checkpoints_are_checked_against_the_spec(trained, spec, data, tmp_path, capsys, edit, message):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    _resign(run, **edit)
    base = ["train", spec, "--data", data, "--out", str(run), "--workers", "0", "--no-progress", "--epochs", "2",
            "--resume"]
    line = one_error(*cli(base, capsys)[:2])
    assert "ckpt-000002-edited.json" in line
    assert re.search(message, line), line
    if not re.search("epoch|batch|restore", message):  # eval reads neither
        line = one_error(*cli(["eval", str(run / "checkpoints" / "ckpt-000002-edited.json"), "--data", data], capsys)[:2])
        assert re.search(message, line), line


def test_deeply_nested_checkpoint_record_is_a_message(tmp_path, capsys):
    d = tmp_path / "checkpoints"
    d.mkdir()
    (d / "ckpt-000001-x.json").write_text("[" * 100_000 + "]" * 100_000)
    line = one_error(*cli(["eval", str(d / "ckpt-000001-x.json"), "--data", str(tmp_path)], capsys)[:2])
    assert "nested too deeply" in line


# ------------------------------------------------------------------------------------------ 6. SIGTERM

def test_sigterm_saves_like_ctrl_c_then_exits_143(spec, data, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "alexnetc.runtime.app.cli", "train", spec, "--data", data, "--out", str(run),
           "--workers", "0", "--no-progress", "--epochs", "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(run.glob("checkpoints/*epoch0001.json")):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM): saved" in out and "Traceback" not in err
    latest = ckpt.latest_checkpoint(str(run / "checkpoints"))
    assert "interrupt" in latest
    assert not (run / ".alexnetc.lock").exists()


# ------------------------------------------------------------------------------------------ 7. bounded data, memory

def test_gzip_bomb_and_corrupt_gzip_idx_are_refused(spec, data, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bomb"
    shutil.copytree(data, bad)
    header = bytes([0, 0, 8, 3]) + np.array([96, 28, 28], dtype=">u4").tobytes()
    os.unlink(bad / "train-images-idx3-ubyte")
    (bad / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(64 << 20), 1))
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        line = one_error(*cli(["train", spec, "--data", str(bad), "--out", str(tmp_path / "r"), "--no-progress"],
                              capsys)[:2])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 10 and peak < 32 << 20, (time.perf_counter() - t0, peak)
    assert "gzip data inflates to more than the 75,280 bytes its header promises" in line
    (bad / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(96 * 784))[:-30])
    line = one_error(*cli(["train", spec, "--data", str(bad), "--out", str(tmp_path / "r"), "--no-progress"], capsys)[:2])
    assert "corrupt gzip data" in line


def test_idx_header_size_limit(tmp_path, monkeypatch):
    from alexnetc.runtime.data.datasets import DatasetError, read_idx

    p = tmp_path / "big-idx"
    p.write_bytes(bytes([0, 0, 8, 3]) + np.array([60000, 4096, 4096], dtype=">u4").tobytes())
    with pytest.raises(DatasetError, match=r"more than the 4,294,967,296 bytes allowed \(set ALEXNETC_MAX_IDX_BYTES"):
        read_idx(p)
    monkeypatch.setenv("ALEXNETC_MAX_IDX_BYTES", "100")
    q = tmp_path / "small-idx"
    q.write_bytes(bytes([0, 0, 8, 1]) + np.array([200], dtype=">u4").tobytes() + bytes(200))
    with pytest.raises(DatasetError, match=r"\(208 bytes\), more than the 100 bytes allowed"):
        read_idx(q)


def test_memory_is_estimated_before_binding(spec, tmp_path, capsys, monkeypatch):
    big = tmp_path / "big.yaml"
    big.write_text(TINY.replace("height: 28, width: 28", "height: 4096, width: 4096")
                   .replace("filters: 8, kernel: 5, stride: 2", "filters: 4096, kernel: 1, stride: 1"))
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        line = one_error(*cli(["train", str(big), "--synthetic", "64", "--out", str(tmp_path / "r"), "--no-progress"],
                              capsys)[:2])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 20 and peak < 64 << 20, (time.perf_counter() - t0, peak)
    assert "this spec needs about 57,496.1 GiB for batch 32 on cpu to train" in line and "ALEXNETC_MAX_BIND_GIB" in line
    monkeypatch.setenv("ALEXNETC_MAX_BIND_GIB", "0.001")
    line = one_error(*cli(["train", spec, "--synthetic", "64", "--out", str(tmp_path / "s"), "--no-progress"],
                          capsys)[:2])
    assert re.search(r"needs about 0\.\d GiB for batch 32 on cpu to train, more than the 0\.0 GiB allowed "
                     r"\(ALEXNETC_MAX_BIND_GIB=0\.001\)", line), line


# ------------------------------------------------------------------------------------------ 8. environment failures

def test_read_only_run_directory_exits_1(spec, data, tmp_path, capsys, monkeypatch):
    import errno

    def read_only(path, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(os, "makedirs", read_only)  # as root, chmod would not stop the write
    line = one_error(*cli(["train", spec, "--data", data, "--out", str(tmp_path / "run"), "--no-progress"],
                          capsys)[:2], status=1)
    monkeypatch.undo()
    assert line == f"alexnetc: error: {tmp_path}/run: cannot create the run directory: Read-only file system"


def test_full_disk_during_training_exits_1(spec, data, tmp_path, capsys, monkeypatch):
    import errno

    real = ckpt.save_checkpoint.__globals__["_fsync_dir"]

    def full(directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setitem(ckpt.save_checkpoint.__globals__, "_fsync_dir", full)
    line = one_error(*cli(["train", spec, "--data", data, "--out", str(tmp_path / "run"), "--no-progress",
                           "--workers", "0", "--epochs", "1", "--limit-train-batches", "1", "--limit-val-batches", "1"],
                          capsys)[:2], status=1)
    assert line == f"alexnetc: error: no space left on device writing checkpoint {tmp_path}/run/checkpoints/" \
                   "ckpt-000001-epoch0001", line
    monkeypatch.setitem(ckpt.save_checkpoint.__globals__, "_fsync_dir", real)



# ------------------------------------------------------------------------------------------ 9. small things

def test_every_option_has_help_text():
    import argparse

    from alexnetc.runtime.app.cli import build_parser

    missing = []
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += [f"{name} {x.option_strings or x.dest}" for x in sub._actions
                            if not x.help and not isinstance(x, argparse._HelpAction)]
    assert missing == []


def test_shipped_variants_describe_themselves():
    from alexnetc.compiler import compile_spec
    from alexnetc.compiler.pipeline import plain

    base = compile_spec(ROOT / "specs" / "alexnet.yaml").spec["description"]
    for p in sorted((ROOT / "specs" / "variants").glob("*.yaml")):
        desc = plain(compile_spec(p).spec).get("description")  # what a checkpoint's state.spec carries
        assert desc and desc != base, p.name
    assert "28x28" in compile_spec(ROOT / "specs" / "variants" / "mini.yaml").spec["description"]


def test_epoch_lines_eval_default_data_and_validation_progress(trained, data, capsys, monkeypatch):
    from alexnetc.runtime.training import loop

    lines = (trained / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    # eval without --data: the dataset the checkpoint was trained on
    rc, err, out = cli(["eval", str(trained), "--workers", "0"], capsys)
    assert rc == 0, err
    assert out.startswith(f"tiny on {data} (val, 32 images") and "accuracy" in out
    # validation reports progress batch by batch; the epoch line shows accuracy and says "1 epoch"
    seen = []
    real = loop.evaluate_loader
    monkeypatch.setattr(loop, "evaluate_loader",
                        lambda ex, ld, c, progress=None, **kw: seen.append(type(progress).__name__)
                        or real(ex, ld, c, progress, **kw))
    logs = []
    train(str(trained.parent / "tiny.yaml"), data, trained.parent / "again", logs, epochs=1)
    assert seen == ["Progress"]
    assert any(l.startswith("epoch 1: train loss") and " accuracy " in l and "val loss" in l for l in logs), logs
    assert any(", 1 epoch, lr" in l for l in logs) and any(l.startswith("done: 1 epoch;") for l in logs), logs


def test_a_second_signal_exits_at_once(tmp_path):
    code = (
        "import os, signal, time\n"
        "from alexnetc.runtime.training.errors import Terminated\n"
        "from alexnetc.runtime.training.signals import SignalGuard\n"
        "with SignalGuard():\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(30)\n"
        "    except Terminated:\n"
        "        print('saving', flush=True)\n"
        "        os.kill(os.getpid(), signal.SIGTERM)  # a second signal while 'saving'\n"
        "        time.sleep(30)\n"
        "        print('not reached', flush=True)\n")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (143, "saving\n"), r.stderr
    assert time.perf_counter() - t0 < 25
