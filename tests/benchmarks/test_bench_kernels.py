"""benchmarks/bench_kernels.py runs end to end at --tiny sizes on the CPU and writes well-formed JSON.

Oracle: the JSON layout the script documents (device, versions, date, one row per op x layer x dtype
x mode with ms per implementation and speed ratios), and docs/kernel-interface.md for the backend
entries the script calls. Timings themselves are not checked.
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_kernels.py"
DOC = Path(__file__).resolve().parents[2] / "docs" / "kernel-interface.md"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_calls_only_documented_entries():
    """oracle: the entry names of docs/kernel-interface.md (read statically: no backend is built)."""
    entries = set(re.findall(r"^\| `(\w+)\(", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE))
    called = set(re.findall(r"(?<![.\w])backend\.(\w+)\(", SCRIPT.read_text(encoding="utf-8")))
    assert called and called <= entries, called - entries
    assert {"conv", "conv_backward_data", "conv_backward_weight", "bias_backward", "lrn", "lrn_backward",
            "maxpool", "maxpool_backward"} <= called


def test_tiny_run_writes_json(bench, tmp_path, capsys):
    res = bench.main(["--tiny", "--device", "cpu", "--no-compile", "--reps", "1", "--dtypes", "fp32,bf16",
                      "--out", str(tmp_path)])
    files = list(tmp_path.glob("kernels-*-tiny-*.json"))
    assert len(files) == 1 and str(files[0]) == res["path"]
    data = json.loads(files[0].read_text())
    assert {"device", "torch", "triton", "date", "backend", "batch", "tiny", "rows"} <= set(data)
    assert data["torch"] == torch.__version__ and data["tiny"] is True
    dt.datetime.fromisoformat(data["date"])
    ops = {(r["op"], r["dtype"], r["mode"]) for r in data["rows"]}
    assert ops == {(op, d, m) for op in ("conv", "lrn", "maxpool") for d in ("fp32", "bf16") for m in ("fwd", "fwd+bwd")}
    for r in data["rows"]:
        assert {"op", "layer", "shape", "dtype", "mode", "ms", "errors", "speedup"} <= set(r)
        assert r["ms"]["ours"] is not None and r["ms"]["ours"] > 0, r
        assert r["errors"]["compile"].startswith("disabled")
        if r["dtype"] == "fp32":
            assert r["ms"]["aten"] > 0 and r["speedup"]["aten"] > 0
    out = capsys.readouterr().out
    assert "aten/ours" in out and "written" in out


def test_compile_failure_is_recorded_not_fatal(bench, tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    res = bench.main(["--tiny", "--device", "cpu", "--reps", "1", "--dtypes", "fp32", "--out", str(tmp_path)])
    assert res["rows"] and all("no compiler here" in r["errors"]["compile"] for r in res["rows"])
    assert all(r["ms"].get("compile") is None for r in res["rows"])
