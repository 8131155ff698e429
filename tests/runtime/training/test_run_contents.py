"""One run per directory, and the way out of a run killed before its first checkpoint (issue 25, items 5
and 6): `import` refuses a directory that holds another run as `train` does; after a kill during the
first checkpoint's write, plain `train` and `--resume` both point at `--overwrite` (they used to send
the user to each other); a killed writer's temporary file is removed when the next training starts,
and one interrupted by a signal removes its own."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from alexnetc.runtime.app.cli import main
from alexnetc.runtime.training import checkpoint as ckpt
from alexnetc.runtime.training.run_contents import run_contents


def one_error(argv, capsys, status=2) -> str:
    rc = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert rc == status and len(err) == 1 and err[0].startswith("alexnetc: error: "), (rc, err)
    return err[0][len("alexnetc: error: "):]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _killed_before_the_first_checkpoint(run) -> str:
    """What a kill -9 during the first checkpoint's write leaves: the epoch's metrics line and the
    writer's temporary tensor file (its pid no longer running)."""
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0}\n')
    tmp = run / "checkpoints" / f".tmp-ckpt-{_dead_pid()}-1-ckpt-000001-epoch0001.safetensors"
    tmp.write_bytes(b"\0" * 4096)
    return str(tmp)


def test_a_run_killed_before_its_first_checkpoint_points_at_overwrite(tiny_trained, tmp_path, capsys):
    spec, data, _ = tiny_trained
    run = tmp_path / "run"
    tmp = _killed_before_the_first_checkpoint(run)
    base = ["train", spec, "--data", data, "--out", str(run), "--workers", "0", "--no-progress", "--epochs", "1",
            "--limit-train-batches", "2", "--limit-val-batches", "1"]
    advice = f"the run in {run} stopped before its first checkpoint was complete, so there is nothing to resume; " \
             "start it again with --overwrite (or train into a new --out)"
    assert one_error(base, capsys) == f"{run} holds a run with no complete checkpoint (metrics.jsonl): {advice}"
    assert os.path.exists(tmp)   # refused before anything is touched
    assert one_error(base + ["--resume"], capsys) == f"--resume: {advice}"
    assert not os.path.exists(tmp)   # a dead writer's half file is removed whenever a training starts
    assert main(base + ["--overwrite"]) == 0
    assert ckpt.latest_checkpoint(str(run / "checkpoints"))
    # an empty or missing directory is no run: --resume says to start one
    assert one_error(base[:5] + [str(tmp_path / "none")] + base[6:] + ["--resume"], capsys) == \
        f"--resume: no checkpoint in {tmp_path}/none/checkpoints to continue from; train without --resume to start a new run"


def test_a_killed_writers_temporary_file_is_removed_at_the_next_start(tiny_trained, tiny_copy, capsys):
    """A SIGTERM during a large checkpoint write left its .tmp file (490 MB) until the next save."""
    spec, data, _ = tiny_trained
    tmp = tiny_copy / "checkpoints" / f".tmp-ckpt-{_dead_pid()}-1-ckpt-000002-epoch0002.safetensors"
    tmp.write_bytes(b"\0" * 4096)
    mine = tiny_copy / "checkpoints" / f".tmp-ckpt-{os.getpid()}-1-ckpt-000002-epoch0002.safetensors"
    mine.write_bytes(b"\0")   # a live writer's (this process's): kept
    assert run_contents(tiny_copy).leftovers == 2
    # --epochs 1: the run is already there, so training stops at once, after the start's clean-up
    argv = ["train", spec, "--data", data, "--out", str(tiny_copy), "--workers", "0", "--no-progress", "--resume",
            "--epochs", "1"]
    assert main(argv) == 0
    assert not tmp.exists() and mine.exists()


def test_a_signal_during_a_checkpoint_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    import safetensors.torch

    real = safetensors.torch.save_file

    def interrupted(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)   # the file is there, half-way through the protocol
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, {"w": torch.ones(3)}, {"n": 1})
    assert os.listdir(tmp_path) == []


def test_import_refuses_a_directory_holding_another_run(tmp_path, capsys):
    """`import -o DIR` wrote a checkpoint into a directory that held another run's metrics (or a
    checkpoint failing verification), which `train` refuses."""
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "w.pth")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    argv = ["import", "torchvision-alexnet", str(tmp_path / "w.pth"), "-o", str(run)]
    assert one_error(argv, capsys) == f"{run} already holds a run (metrics.jsonl); import into a new directory"
    (run / "metrics.jsonl").unlink()
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "ckpt-000001-x.json").write_text("{}")   # fails verification: still a run's
    assert one_error(argv, capsys) == f"{run} already holds a run (1 checkpoint); import into a new directory"
