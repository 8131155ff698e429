"""`alexnetc profile`: measured per-layer rows (every node timed once per iteration, the rows adding
up to the step), the Chrome trace's format, the --predict table, and the one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexnetc.compiler import compile_spec
from alexnetc.runtime.app.cli import main
from alexnetc.runtime.execution.params import init_params
from alexnetc.runtime.profile.profiler import profile_training
from alexnetc.runtime.profile.report import format_profile, profile_json
from alexnetc.runtime.profile.trace import trace_events

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def mini_profile():
    net = compile_spec(ROOT / "specs/variants/mini.yaml", batch=32)
    g2c = {d: torch.device("cpu") for d in net.devices}
    return profile_training(net, g2c, params=init_params(net, 0), iterations=3, warmup=1)


def test_every_node_is_in_one_row_and_timed_every_iteration(mini_profile):
    p = mini_profile
    program = p.net.training()
    op_nodes = [n for n in program.graph.nodes() if not n.is_variable]
    in_rows = [c.node.name for m in p.rows for cs in m.row.nodes.values() for c in cs]
    assert sorted(in_rows) == sorted(n.name for n in op_nodes)
    for it in p.iterations:
        timed = [s.key for s in it.spans if isinstance(s.key, int)]
        assert sorted(timed) == sorted(id(n) for n in op_nodes)   # once each, every iteration
        assert all(s.seconds >= 0 for s in it.spans)
    assert {m.row.device for m in p.rows if m.row.kind == "layer"} == {"gpu0", "gpu1"}   # towers split
    assert {m.row.device for m in p.rows if m.row.kind == "copy"} == {"gpu0->gpu1", "gpu1->gpu0"}
    assert all(m.total > 0 for m in p.rows if m.row.kind in ("layer", "update"))


def test_rows_account_for_the_step(mini_profile):
    """The rows time each node's step, the bucket copies and the update, all inside the instrumented
    step; what they leave out (feeding the inputs, Python between nodes) is small. Compared within each
    instrumented step, so a loaded CI machine cannot make it flaky; the comparison with the plain steps
    (the issue's 10 %) is printed, and recorded for quiet runs in docs/performance.md."""
    p = mini_profile
    for it in p.iterations:
        inside = sum(s.seconds for s in it.spans)
        assert inside <= it.step_s * 1.001, (inside, it.step_s)
        assert inside >= 0.7 * it.step_s, (inside, it.step_s)
    text = format_profile(p)
    assert "% of the step" in text and "instrumentation costs" in text and "images/s" in text


def test_profiler_leaves_the_executor_untouched(mini_profile):
    """Training pays nothing for the profiler: no wrapper survives it."""
    from alexnetc.runtime.execution.executor import Executor
    from alexnetc.runtime.profile.timing import NodeTimer

    net = mini_profile.net
    ex = Executor(net, {d: torch.device("cpu") for d in net.devices}, params=init_params(net, 0))
    t = NodeTimer(ex)
    t.install()
    assert "_exec_step" in ex.__dict__
    t.remove()
    assert "_exec_step" not in ex.__dict__ and "_grads_done" not in ex.__dict__


def test_json_has_rows_and_totals(mini_profile):
    d = profile_json(mini_profile)
    json.dumps(d)
    assert d["totals"]["step_ms"] > 0 and d["batch"] == 32 and d["iterations"] == 3
    conv = next(r for r in d["rows"] if r["label"] == "conv2" and r["device"] == "gpu0")
    assert conv["flops"]["forward"] > 0 and conv["forward_ms"] > 0 and conv["kept_bytes"] > 0
    assert conv["nodes"]["forward"] == ["conv2_g0"]


def test_trace_is_chrome_trace_event_format(mini_profile):
    t = trace_events(mini_profile)
    events = t["traceEvents"]
    meta = [e for e in events if e["ph"] == "M"]
    spans = [e for e in events if e["ph"] == "X"]
    lanes = {e["args"]["name"] for e in meta if e["name"] == "process_name"}
    assert {"gpu0", "gpu1", "optimizer"} <= lanes
    for e in spans:
        assert {"name", "ph", "pid", "tid", "ts", "dur"} <= set(e)
        assert isinstance(e["ts"], (int, float)) and e["dur"] >= 0
    program = mini_profile.net.training()
    names = [n.name for n in program.graph.nodes() if not n.is_variable]
    for i in range(len(mini_profile.iterations)):
        got = sorted(e["name"] for e in spans if e["args"].get("iteration") == i and "layer" in e["args"])
        assert got == sorted(names)
    starts = [e["ts"] for e in spans if e["args"].get("iteration") == 1]
    ends0 = max(e["ts"] + e["dur"] for e in spans if e["args"].get("iteration") == 0)
    assert min(starts) >= ends0 - 1e-3   # iterations follow one another


def _cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alexnetc.runtime.app.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def test_cli_profile_writes_json_and_trace(tmp_path, capsys):
    rc = main(["profile", "variants/mini", "--batch", "8", "--iterations", "2", "--warmup", "1", "--sort", "total",
               "--json", str(tmp_path / "p.json"), "--trace", str(tmp_path / "t.json"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "norm1" in out and "step (uninstrumented)" in out
    assert json.loads((tmp_path / "p.json").read_text())["rows"]
    assert json.loads((tmp_path / "t.json").read_text())["traceEvents"]


def test_cli_predict_needs_no_torch(tmp_path):
    r = _cli("profile", "alexnet", "--batch", "128", "--predict", "h100", "--json", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "p.json").read_text())["step"]["lower_bound_ms"] > 0
    assert "step lower bound" in r.stdout and "NVIDIA H100 SXM5" in r.stdout
    code = ("import sys; from alexnetc.runtime.app.cli import main; "
            "main(['profile', 'alexnet', '--batch', '2', '--predict', 'gtx580']); assert 'torch' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr


def test_cli_predict_of_resnet50_expands_a_block(capsys):
    assert main(["profile", "resnet50", "--batch", "4", "--predict", "a100", "--dtype", "bfloat16",
                 "--expand", "layer4"]) == 0
    out = capsys.readouterr().out
    assert "\nlayer4." in out and "\nlayer3 " in out and "\nlayer4 " not in out


@pytest.mark.parametrize("args, message", [
    (["alexnet", "--predict", "h10"], "unknown device 'h10' (did you mean 'h100'?"),
    (["alexnet", "--predict", "h100", "--link", "usb"], "unknown link 'usb'"),
    (["alexnet", "--iterations", "0"], "--iterations 0: must be at least 1"),
    (["alexnet", "--predict", "h100", "--dtype", "float64"], "float64 runs on the CPU reference kernels only"),
    (["alexnet", "--predict", "h100", "--dtype", "half"], "--dtype half: expected one of"),
    (["resnet18", "--predict", "h100", "--expand", "layr1"], "not a block instance of resnet18 (did you mean 'layer1'?"),
])
def test_cli_errors_are_one_line(args, message):
    r = _cli("profile", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_cli_run_without_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    r = _cli("profile", str(tmp_path / "run"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "checkpoint" in r.stderr


def test_cli_spec_errors_are_located(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: {channels: 1, height: 8, width: 8}\nclasses: 2\nlayers:\n  - {name: c, op: conv, filter: 3}\n")
    r = _cli("profile", str(bad), "--predict", "h100")
    assert r.returncode == 2 and f"{bad}:4:" in r.stderr
    r = _cli("profile", "no/such/spec.yaml")
    assert r.returncode == 2 and "no/such/spec.yaml:1:1: spec file not found" in r.stderr


TINY = """input: {channels: 3, height: 12, width: 12}
classes: 4
layers:
  - {name: conv1, op: conv, filters: 16, kernel: 3, pad: 1}
  - {name: pool1, op: maxpool, kernel: 2, stride: 2}
  - {name: fc, op: fc, units: 4, act: none}
  - {name: loss, op: softmax_loss}
train: {batch_size: 8}
"""


def test_cli_predict_kernels_compiles_once_then_reads_the_cache(tmp_path):
    """--kernels: each layer's Triton kernels compiled for the device's arch (sm_80 for the A100), the
    numbers from ptxas; a second run reads them all from the cache and says so."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["ALEXNETC_CACHE"] = str(tmp_path / "cache")
    cmd = [sys.executable, "-m", "alexnetc.runtime.app.cli", "profile", str(spec), "--predict", "a100", "--kernels",
           "--dtype", "bfloat16", "--json", str(tmp_path / "p.json")]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Triton kernels for the NVIDIA A100 SXM4 80GB (sm_80), bf16" in first.stdout
    assert "0 of " in first.stdout and "compiled now" in first.stdout
    kernels = json.loads((tmp_path / "p.json").read_text())["kernels"]
    rows = {(r["label"], r["phase"], r["kernel"]) for r in kernels["rows"]}
    assert ("conv1", "forward", "conv._conv_fwd_kernel") in rows and ("conv1", "backward", "conv._conv_bwd_weight_kernel") in rows
    assert ("pool1", "backward", "pool._pool_bwd_kernel") in rows
    conv = next(r for r in kernels["rows"] if r["kernel"] == "conv._conv_fwd_kernel")
    assert conv["autotuned"] and len(conv["candidates"]) > 1 and conv["shown"] in {c["config"] for c in conv["candidates"]}
    assert all(1 <= c["registers"] <= 255 and c["shared"] <= 166912 for c in conv["candidates"])
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    n = kernels["compiles"]
    assert f"{n} of {n} compiles from the cache in {tmp_path / 'cache' / 'aot'}" in second.stdout
    assert "compiled now" not in second.stdout


@pytest.mark.parametrize("args, message", [
    (["alexnet", "--kernels"], "--kernels needs --predict DEVICE"),
    (["alexnet", "--predict", "gtx580", "--kernels"], "Triton does not compile for the NVIDIA GeForce GTX 580"),
    (["alexnet", "--predict", "l40s", "--kernels"], "no per-SM limits for sm_89"),
    (["alexnet", "--predict", "h100", "--kernels", "--dtype", "float64"], "do not run in float64"),
])
def test_cli_kernels_errors_are_one_line(args, message):
    r = _cli("profile", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_cli_kernels_under_the_interpreter_is_refused():
    r = _cli("profile", "variants/mini", "--predict", "h100", "--kernels")   # conftest: TRITON_INTERPRET=1
    assert r.returncode == 2 and "unset TRITON_INTERPRET" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
