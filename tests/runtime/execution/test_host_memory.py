"""Freed maps stay in the process's heap on the CPU by default, and go back to the OS with
ALEXNETC_HOST_HEAP=off (runtime/execution/host_memory.py). Oracle: the kernel's count of minor page
faults (getrusage) of each of five training steps after two warm-up steps, the median step (now and then
a step grows the kept heap by one to three maps' worth of pages, 392 faults each: the mean of three steps
once read 425 kept against 3,987 returned), in fresh processes with and without it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, resource, torch
torch.set_num_threads(1)
from alexnetc.compiler import compile_spec
from alexnetc.runtime.app.specs import resolve_spec_path
from alexnetc.runtime.execution import host_memory
from alexnetc.runtime.execution.executor import Executor
from alexnetc.runtime.execution.params import init_params
net = compile_spec(resolve_spec_path("variants/mini"), batch=32)
ex = Executor(net, {d: "cpu" for d in net.devices}, params=init_params(net, 0))
x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
def step():
    ex.forward(x, y, is_train=True); ex.backward()
step(); step()
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": host_memory.keep_freed_maps(), "faults_per_step": sorted(faults)[2]}))
"""


def _run(env_extra: dict) -> dict:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_training_step_reuses_mapped_pages_unless_told_not_to():
    kept = _run({"ALEXNETC_HOST_HEAP": ""})
    os_heap = _run({"ALEXNETC_HOST_HEAP": "off"})
    assert kept["kept"] is True and os_heap["kept"] is False
    # the mini's maps at batch 32 are ~1.6 MB each: returned to the OS, every step faults them in again
    assert os_heap["faults_per_step"] > 2000
    assert kept["faults_per_step"] < os_heap["faults_per_step"] / 10


@pytest.mark.parametrize("value,kept", [("", True), ("keep", True), ("KEEP", True), ("off", False), (" off ", False)])
def test_the_setting_is_read_from_the_environment(monkeypatch, value, kept):
    from alexnetc.runtime.execution import host_memory

    monkeypatch.setenv("ALEXNETC_HOST_HEAP", value)
    assert host_memory.requested() is kept


def test_an_unknown_value_is_an_error_naming_the_choices(monkeypatch):
    from alexnetc.runtime.execution import host_memory

    monkeypatch.setenv("ALEXNETC_HOST_HEAP", "no")
    with pytest.raises(ValueError, match="ALEXNETC_HOST_HEAP='no': expected one of keep, off"):
        host_memory.requested()
