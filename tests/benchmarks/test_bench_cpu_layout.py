"""The CPU layout benchmark runs at a tiny batch, so it cannot rot: every op row timed both ways, every
step setting run in its own process (the heap setting held where asked), and the patch it times "before"
with restored afterwards."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_writes_both_layouts_and_heap_settings(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_cpu_layout", ROOT / "benchmarks" / "bench_cpu_layout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = mod.main(["--batch", "2", "--specs", "variants/mini", "--out", str(tmp_path)])
    data = json.loads(Path(result["path"]).read_text())
    assert data["benchmark"] == "cpu_layout" and len(data["ops"]) == 8
    assert all(r["nchw_ms"] > 0 and r["channels_last_ms"] > 0 for r in data["ops"])
    assert sorted((r["layout"], r["heap_kept"]) for r in data["steps"]) == [
        ("channels_last", False), ("channels_last", True), ("nchw", False), ("nchw", True)]
    from alexnetc.kernels.reference import _common, conv, pool

    assert conv.maps is _common.maps and pool.maps is _common.maps   # the "before" patch undone
