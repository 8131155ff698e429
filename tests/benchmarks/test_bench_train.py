"""The training benchmark runs on the CPU at tiny sizes, so it cannot rot; checks its JSON's structure."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from alexnetc.compiler import compile_spec
from alexnetc.compiler.ops.lrn import lrn_formula, lrn_torch
from alexnetc.runtime.execution.eager import EagerNet
from alexnetc.runtime.execution.params import init_params

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(str(p.relative_to(ROOT / "specs").with_suffix("")) for p in (ROOT / "specs").rglob("*.yaml"))


def _small(name: str) -> bool:
    """The size class a CPU runs in a blink: inputs of at most 32x32 (the Fashion-MNIST minis)."""
    c, h, w = compile_spec(ROOT / "specs" / f"{name}.yaml").input_shape
    return h * w <= 32 * 32


def _load():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "benchmarks" / "bench_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_run_writes_rows(tmp_path):
    result = _load().run(["--tiny", "--device", "cpu", "--no-compile", "--out", str(tmp_path)])
    data = json.loads(Path(result["path"]).read_text())
    assert data["benchmark"] == "train_step" and data["batch"] == 4 and data["torch"] == torch.__version__
    assert {"device", "triton", "date", "rows"} <= data.keys()
    impls = [r["impl"] for r in data["rows"]]
    assert impls == ["alexnetc", "pytorch-eager"]
    assert all(r["images_per_second"] > 0 and len(r["rounds_ms"]) == data["repeats"] for r in data["rows"])
    for when in ("load_before", "load_after"):
        assert len(data[when]["load_average_1_5_15min"]) == 3


@pytest.mark.parametrize("name", [n for n in SHIPPED if _small(n)])
def test_every_small_shipped_spec_runs_one_step(name, tmp_path):
    """Blocks, residual adds, auxiliary loss heads, global pooling: one step of each contender."""
    result = _load().run([name, "--batch", "2", "--steps", "1", "--warmup", "0", "--repeats", "1",
                          "--device", "cpu", "--no-compile", "--out", str(tmp_path)])
    assert [r["impl"] for r in result["rows"]] == ["alexnetc", "pytorch-eager"]
    assert all(r["images_per_second"] > 0 for r in result["rows"])


def test_the_small_class_holds_every_mini():
    small = {n for n in SHIPPED if _small(n)}
    assert {"variants/mini", "variants/vgg-mini", "variants/nin-mini", "variants/googlenet-mini"} <= small
    assert "alexnet" in SHIPPED and "alexnet" not in small


def test_eager_baseline_computes_the_same_lrn_both_ways():
    """The baseline's F.local_response_norm path equals the paper's formula, for both alpha conventions
    and grouped LRN (oracle: lrn_formula in float64)."""
    x = torch.randn(2, 12, 5, 5, dtype=torch.float64)
    for over_n in (False, True):
        for groups in (1, 2):
            a = {"size": 5, "k": 2.0, "alpha": 1e-2, "beta": 0.75, "alpha_over_n": over_n, "num_group": groups}
            torch.testing.assert_close(lrn_torch(x, a), lrn_formula(x, a), rtol=1e-12, atol=1e-12)


def test_eager_net_matches_its_oracle_form(specs_dir):
    net = compile_spec(specs_dir / "variants" / "mini.yaml", batch=2)
    params = init_params(net, 0)
    x, y = torch.randn(2, 1, 28, 28), torch.tensor([1, 2])
    a = EagerNet(net, params, lrn="torch").eval()(x, y)
    b = EagerNet(net, params, lrn="formula").eval()(x, y)
    torch.testing.assert_close(a[1], b[1], rtol=1e-5, atol=1e-6)
