"""Runs without --out never collide (runtime/training/versions.py): each gets runs/<spec name>/version_N,
printed at the start; --resume without --out continues the spec's newest run; reading commands take
runs/<spec name> for its newest run; --out keeps its refusals."""
from __future__ import annotations

import os

import pytest

from alexnetc.runtime.app.cli import main
from alexnetc.runtime.training.versions import new_version, newest_run, versions

from .test_train import TINY, _pattern_dataset

LIMITS = ["--limit-train-batches", "1", "--limit-val-batches", "1", "--workers", "0", "--no-progress"]


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A working directory with the tiny spec (name: tiny) and its data; runs/ goes here."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY)
    return tmp_path, _pattern_dataset(tmp_path / "data", n_train=64, n_val=32)


def test_version_numbers_are_next_free_and_atomic(tmp_path):
    runs = str(tmp_path / "runs" / "x")
    assert [os.path.basename(new_version(runs)) for _ in range(3)] == ["version_0", "version_1", "version_2"]
    os.makedirs(os.path.join(runs, "version_10"))
    os.makedirs(os.path.join(runs, "version_x"))            # not a version: ignored
    assert os.path.basename(new_version(runs)) == "version_11"
    assert [n for n, _ in versions(runs)] == [0, 1, 2, 10, 11]


def test_each_run_gets_its_own_directory_and_resume_continues_the_newest(here, capsys):
    tmp, data = here
    for _ in range(2):
        assert main(["train", "tiny.yaml", "--data", data, "--epochs", "1", *LIMITS]) == 0
    out = capsys.readouterr().out
    assert "run directory: runs/tiny/version_0 (a new one for this run; --out DIR to choose)" in out
    assert "run directory: runs/tiny/version_1 (a new one for this run" in out
    assert (tmp / "runs/tiny/version_1/checkpoints").is_dir()
    assert main(["train", "tiny.yaml", "--data", data, "--epochs", "2", "--resume", *LIMITS]) == 0
    out = capsys.readouterr().out
    assert "run directory: runs/tiny/version_1 (the newest run of tiny)" in out and "resumed from" in out
    assert len((tmp / "runs/tiny/version_1/metrics.jsonl").read_text().splitlines()) == 2
    # reading commands take runs/<spec name>: its newest run with a checkpoint
    (tmp / "runs/tiny/version_2").mkdir()                 # a run that has not written one yet
    assert newest_run("runs/tiny") == os.path.join("runs/tiny", "version_1")
    assert main(["eval", "runs/tiny", "--workers", "0"]) == 0
    assert capsys.readouterr().out.startswith("tiny on ")


def test_refusals_without_out(here, capsys):
    tmp, data = here
    assert main(["train", "tiny.yaml", "--data", data, "--resume", *LIMITS]) == 2
    err = capsys.readouterr().err
    assert err == ("alexnetc: error: --resume: no run of tiny in runs/tiny to continue (runs without --out go to "
                   "version_N there); give --out DIR to resume a run elsewhere\n")
    assert main(["train", "tiny.yaml", "--data", data, "--overwrite", *LIMITS]) == 2
    assert "--overwrite replaces the run in --out: give --out DIR" in capsys.readouterr().err
    # a run that fails before writing anything leaves no empty version directory behind
    assert main(["train", "tiny.yaml", "--data", str(tmp / "nowhere"), *LIMITS]) == 2
    capsys.readouterr()
    assert not (tmp / "runs/tiny/version_0").exists()
    # --out keeps today's refusal
    assert main(["train", "tiny.yaml", "--data", data, "--epochs", "1", "--out", "mine", *LIMITS]) == 0
    assert main(["train", "tiny.yaml", "--data", data, "--epochs", "1", "--out", "mine", *LIMITS]) == 2
    assert "mine already holds a training run" in capsys.readouterr().err
