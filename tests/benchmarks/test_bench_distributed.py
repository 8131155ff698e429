"""The data-parallel benchmark runs at tiny sizes on the CPU, so it cannot rot; checks its JSON."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_run_writes_rows(tmp_path, monkeypatch):
    # Imported by name (not from a file spec): its spawned workers import it again by that name.
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    result = importlib.import_module("bench_distributed").run(
        ["--tiny", "--processes", "1", "2", "--threads", "1", "--out", str(tmp_path)])
    data = json.loads(Path(result["path"]).read_text())
    assert data["benchmark"] == "distributed_train_step" and data["torch"] == torch.__version__
    assert {"device", "date", "machine", "rows", "bucket_mb"} <= data.keys()
    assert [(r["processes"], r["mode"]) for r in data["rows"]] == [
        (1, "plain"), (1, "overlap"), (1, "after-backward"), (2, "overlap"), (2, "after-backward")]
    assert all(r["ms_per_step"] > 0 for r in data["rows"])
    assert all(r["buckets"] > 1 for r in data["rows"][1:])


@pytest.mark.slow
def test_tiny_run_with_sync_batchnorm_times_a_third_mode(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    result = importlib.import_module("bench_distributed").run(
        ["variants/resnet-mini", "--tiny", "--sync-bn", "--processes", "2", "--threads", "1", "--out", str(tmp_path)])
    data = json.loads(Path(result["path"]).read_text())
    assert [(r["processes"], r["mode"]) for r in data["rows"]] == [
        (2, "overlap"), (2, "after-backward"), (2, "overlap+sync-bn")]
    assert all(r["ms_per_step"] > 0 for r in data["rows"])
