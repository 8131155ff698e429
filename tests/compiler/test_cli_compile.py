"""`alexnetc compile` in a subprocess: totals, exit status 2 with located errors, --json, --dot, no torch."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from alexnetc.compiler import Graph

ROOT = Path(__file__).resolve().parents[2]
ALEXNET = ROOT / "specs" / "alexnet.yaml"


def run(*args, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "alexnetc.runtime.app.cli", "compile", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def test_compile_prints_the_totals():
    r = run(str(ALEXNET), "--batch", "128")
    assert r.returncode == 0, r.stderr
    assert "parameters            60,965,224" in r.stdout
    assert "multiply-adds/image   724,406,816  (724 M)" in r.stdout
    assert "(copies into: conv3, fc6, fc7, fc8)" in r.stdout
    assert re.search(r"planned peak gpu0 .* \(training step at batch 128, fp32\)", r.stdout)
    assert re.search(r"planned peak gpu1 ", r.stdout)


def _peak(stdout: str, device: str) -> float:
    m = re.search(rf"planned peak {device} +([0-9.]+) MiB activations", stdout)
    return float(m.group(1))


def test_dtype_override_plans_in_that_precision(tmp_path):
    """oracle: the float32 plan of the same spec; bf16 values are half its bytes and float64's twice
    (within the planner's rounding to the nearest 0.1 MiB: argmax indices and the fp32 loss and
    probabilities keep their own dtypes, so the ratios are close to, not exactly, 1/2 and 2)."""
    base = run("variants/mini", "--batch", "128")
    bf16 = run("variants/mini", "--batch", "128", "--dtype", "bfloat16", "--json", str(tmp_path / "g.json"))
    f64 = run("variants/mini", "--batch", "128", "--dtype", "float64")
    assert base.returncode == bf16.returncode == f64.returncode == 0, bf16.stderr + f64.stderr
    assert "(training step at batch 128, bf16 values, fp32 master parameters)" in bf16.stdout
    assert "(training step at batch 128, fp64)" in f64.stdout
    for dev in ("gpu0", "gpu1"):
        assert 0.45 <= _peak(bf16.stdout, dev) / _peak(base.stdout, dev) <= 0.55
        assert 1.9 <= _peak(f64.stdout, dev) / _peak(base.stdout, dev) <= 2.05
    report = Graph.load_json((tmp_path / "g.json").read_text()).attrs["report"]
    assert report["totals"]["dtype"] == "bfloat16"
    bad = run("variants/mini", "--dtype", "float16")
    assert bad.returncode == 2 and "invalid choice: 'float16'" in bad.stderr


def test_shipped_name_resolves():
    r = run("variants/mini", "-q")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_a_mistyped_shipped_name_says_which_was_meant():
    r = run("variants/mni", "-q")
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == ("variants/mni:1:1: spec file not found (did you mean 'variants/mini'?); "
                                        "`alexnetc specs` lists the shipped specs")


def test_specs_lists_every_shipped_spec_with_its_description():
    from alexnetc.runtime.app.specs import description, shipped_specs

    r = run(code="from alexnetc.runtime.app.cli import main; main(['specs'])")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()[1:]
    assert len(lines) == len(shipped_specs())
    for name, line in zip(shipped_specs(), lines):
        assert line.split()[0] == name[:-5] and description(name), name   # every shipped spec says what it is
        assert line.endswith(description(name))


def test_bad_spec_exits_2_with_located_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: {channels: 3, height: 32, width: 32}\nclasses: 10\nlayers:\n"
                   "  - {name: c1, op: conv, filters: 8, kernal: 3}\n"
                   "  - {name: f1, op: fc, units: 10, input: c9, device: gpu3}\n"
                   "  - {name: loss, op: softmax_loss}\n")
    r = run(str(bad))
    assert r.returncode == 2
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        f"{bad}:4:5: layer c1: missing required key 'kernel'",
        f"{bad}:4:38: layer c1: unknown key 'kernal' in conv layer (did you mean 'kernel'?)",
        f"{bad}:5:42: layer f1: input 'c9' is not a layer",
        f"{bad}:5:54: layer f1: device 'gpu3' is not declared in devices ['gpu0'] (did you mean 'gpu0'?)",
        "4 errors",
    ]


def test_missing_file_and_bad_yaml_exit_2(tmp_path):
    r = run(str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and r.stderr.splitlines() == [f"{tmp_path}/nope.yaml:1:1: spec file not found", "1 error"]
    (tmp_path / "t.yaml").write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    r = run(str(tmp_path / "t.yaml"))
    assert r.returncode == 2 and "pwned" not in r.stdout + r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"{tmp_path}/t.yaml:1:7: YAML tag ")


def test_json_and_dot_files(tmp_path):
    js, dot = tmp_path / "out" / "g.json", tmp_path / "g.dot"
    r = run(str(ALEXNET), "--json", str(js), "--dot", str(dot), "-q")
    assert r.returncode == 0, r.stderr
    g = Graph.load_json(js.read_text())
    report = g.attrs["report"]
    assert report["totals"]["params"] == 60_965_224 and report["totals"]["macs_per_image"] == 724_406_816
    assert len(g.attrs["spec_hash"]) == 64
    assert sum(1 for n in g.nodes() if n.op == "copy") == 7
    text = dot.read_text()
    assert text.startswith('digraph "alexnet" {') and text.rstrip().endswith("}")
    assert text.count("subgraph cluster_") == 2
    assert re.findall(r'label="(gpu\d)"', text) == ["gpu0", "gpu1"]
    assert text.count("{") == text.count("}")


def test_one_cluster_for_one_device(tmp_path):
    dot = tmp_path / "g.dot"
    assert run(str(ROOT / "specs" / "alexnet-1gpu.yaml"), "--dot", str(dot), "-q").returncode == 0
    assert dot.read_text().count("subgraph cluster_") == 1


def test_compile_imports_neither_torch_nor_triton():
    code = ("import sys\nfrom alexnetc.runtime.app.cli import main\n"
            f"rc = main(['compile', {str(ALEXNET)!r}, '--batch', '128', '-q'])\n"
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'triton')))\n")
    r = run(code=code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0 []"


def test_compile_is_fast():
    code = ("import time\nt0 = time.perf_counter()\nfrom alexnetc.runtime.app.cli import main\n"
            f"rc = main(['compile', {str(ALEXNET)!r}, '--batch', '128', '-q'])\n"
            "print(rc, time.perf_counter() - t0)\n")
    r = run(code=code)
    rc, seconds = r.stdout.split()
    assert rc == "0" and float(seconds) < 1.0, r.stdout


def test_batch_must_be_positive():
    r = run(str(ALEXNET), "--batch", "0")
    assert r.returncode == 2 and r.stderr == "alexnetc: error: --batch must be at least 1, got 0\n"
