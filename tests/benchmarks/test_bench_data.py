"""benchmarks/bench_data.py runs end to end on a tiny generated folder and writes well-formed JSON, so
it cannot rot; its generated images compress like photographs, not like flat colour."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_writes_rows(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    bench = importlib.import_module("bench_data")
    threads = torch.get_num_threads()
    result = bench.run(["--images", "10", "--batch", "4", "--rounds", "2", "--data", str(tmp_path / "data"),
                        "--out", str(tmp_path / "out")])
    assert torch.get_num_threads() == threads       # restored: later tests' bit patterns depend on it
    data = json.loads(Path(result["path"]).read_text())
    assert data["benchmark"] == "data" and data["settings"]["per_round"] == 8
    assert [r["contender"] for r in data["rows"]] == ["imagefolder", "pillow", "pack-raw", "pack-jpeg",
                                                       "pack-raw-gpu-host"]
    for row in data["rows"]:
        assert len(row["rounds"]) == 2 and all(r["images"] == 8 for r in row["rounds"])
        assert row["images_per_core_second"] > 0 and row["x_imagefolder_per_core"] > 0
    assert {r["contender"]: r["goal_x"] for r in data["rows"] if "goal_x" in r} == {"pack-raw": 10, "pack-jpeg": 2}
    assert 60 < data["folder"]["mean_kb"] < 200          # quality-90 JPEGs of 500x375 photographs: ~110 kB
    assert 196.6 <= data["packs"]["raw"]["kb_per_image"] < 205    # 196,608 bytes an image, plus the index
    assert data["load_before"]["load_average_1_5_15min"] and "| pack-raw |" in bench.markdown(data)
