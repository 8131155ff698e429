"""`alexnetc place` on the command line: the table, the variant it writes (which compiles), no torch,
and one-line errors for nonsense and infeasible requests (exit status 2)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alexnetc.compiler import compile_spec
from alexnetc.runtime.app.cli import main

ROOT = Path(__file__).resolve().parents[3]


def test_place_prints_the_ranking_and_writes_a_variant_that_compiles(tmp_path, capsys):
    out = tmp_path / "placed.yaml"
    assert main(["place", "alexnet", "--devices", "2", "--gpu", "gtx580", "--link", "pcie2", "--batch", "128",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.strip().startswith("placement"))
    rows = lines[head + 2:head + 7]
    assert rows[0].startswith("*") and "as towers on gpu0+gpu1" in rows[0]
    assert any("alexnet.yaml (as written)" in r for r in rows) and any("alexnet-1gpu.yaml (shipped)" in r for r in rows)
    assert any("data parallel, 2 processes" in r for r in rows) and any(r.lstrip().startswith("one device") for r in rows)
    variant = out.read_text()
    assert "base: alexnet\n" in variant and "devices: [gpu0, gpu1]" in variant
    net = compile_spec(out, batch=128)
    assert net.devices == ["gpu0", "gpu1"] and len(net.training().memory.devices) == 2
    assert main(["compile", str(out), "--batch", "128", "-q"]) == 0


def test_place_needs_no_torch():
    code = ("import sys; from alexnetc.runtime.app.cli import main; "
            "main(['place', 'variants/mini', '--devices', '2', '--gpu', 'h100']); assert 'torch' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("args, message", [
    (["alexnet", "--devices", "0", "--gpu", "h100"], "--devices 0: expected 1 to 8 devices"),
    (["alexnet", "--devices", "9", "--gpu", "h100"], "--devices 9: expected 1 to 8 devices"),
    (["alexnet", "--gpu", "h100"], "--devices N: how many devices"),
    (["alexnet", "--devices", "2"], "name the device: --gpu NAME, or --memory GIB and --flops TFLOPS"),
    (["alexnet", "--devices", "2", "--gpu", "h10"], "unknown device 'h10' (did you mean 'h100'?"),
    (["alexnet", "--devices", "2", "--memory", "-1", "--flops", "10"], "--memory -1: must be a positive number"),
    (["alexnet", "--devices", "2", "--gpu", "h100", "--memory", "0"], "--memory 0: must be a positive number"),
    (["alexnet", "--devices", "2", "--gpu", "h100", "--link", "usb"], "unknown link 'usb'"),
    (["alexnet", "--devices", "2", "--gpu", "h100", "--link", "-4"], "--link -4: must be a positive number"),
    (["alexnet", "--devices", "2", "--gpu", "h100", "--dtype", "half"], "--dtype half: expected one of"),
    (["alexnet", "--devices", "2", "--gpu", "h100", "--dtype", "float64"], "float64 runs on the CPU"),
    (["alexnet", "--devices", "2", "--gpu", "gtx580", "--dtype", "bfloat16"], "has no bf16 units"),
    (["alexnet", "--devices", "2", "--gpu", "h100", "--batch", "0"], "--batch must be at least 1"),
    (["alexnet", "--devices", "2", "--gpu", "h100", "--profile", "/no/such/profile.json"],
     "--profile /no/such/profile.json: no such profile"),
    (["resnet50", "--devices", "1", "--gpu", "v100-16gb", "--batch", "256"],
     "GiB per device; 2 devices would fit"),   # the need itself: tests/compiler/test_placement.py
])
def test_errors_are_one_line(args, message, capsys):
    assert main(["place", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_profile_that_is_not_one_is_refused(tmp_path, capsys):
    f = tmp_path / "p.json"
    f.write_text('{"rows": 3}')
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)     # never opened: it would block
    for path, message in ((f, "not an alexnetc profile"), (fifo, "not a regular file (a FIFO)")):
        assert main(["place", "variants/mini", "--devices", "2", "--gpu", "h100", "--profile", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
