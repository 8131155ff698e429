"""Every Triton kernel compiled for real GPUs (sm_80 and sm_90a) on this GPU-less machine, at every
autotune config and dtype its launchers pass for the shipped specs' training steps (kernels/aot).

Fails on any compile error, any config whose shared memory exceeds the architecture's per-block limit,
and any register spill not listed, with its reason, in kernels/aot/accepted.py (every launch in the
matrix is on the training step's path). The default suite compiles a representative subset (each
kernel in each dtype at its largest tile, both architectures); `-m slow` the whole matrix (most of
an hour on 2 cores). Compiling runs in a subprocess without TRITON_INTERPRET: the conftest sets it for
the interpreter tests, and under it the kernels carry the interpreter's single config.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alexnetc.kernels.aot.accepted import ACCEPTED, accepted_reason, stale
from alexnetc.kernels.aot.archs import ARCHS, arch, occupancy
from alexnetc.kernels.aot.compile import parse_ptxas

ROOT = Path(__file__).resolve().parents[2]
PTXAS_LOG = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_lrn_bwd_kernel' for 'sm_90a'
ptxas info    : Function properties for _lrn_bwd_kernel
    816 bytes stack frame, 812 bytes spill stores, 812 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers, 816 bytes cumulative stack size, 480 bytes cmem[0]
"""


def _compile_matrix(out: Path, *extra: str, timeout: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "aot_compile.py"), "--out", str(out), *extra],
                       env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    files = sorted(out.glob("aot-compile-*.json"))
    assert files, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads(files[-1].read_text())


def _failures(result: dict) -> list[str]:
    out = []
    for r in result["rows"]:
        where = f"{r['kernel']} {r['dtype']} {r['arch']} [{r['config']}] ({', '.join(r['specs'][:3])})"
        if "error" in r:
            out.append(f"{where}: compile error: {r['error']}")
        elif r["shared"] > ARCHS[r["arch"]].max_shared_per_block:
            out.append(f"{where}: {r['shared']} bytes of shared memory, over {r['arch']}'s per-block limit")
        elif r["spill_stores"] and not accepted_reason(r):
            out.append(f"{where}: spills {r['spill_stores']} bytes at {r['registers']} registers "
                       "(fix the config, or list it in kernels/aot/accepted.py with the reason)")
    return out


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> dict:
    return _compile_matrix(tmp_path_factory.mktemp("aot"), "--subset", timeout=900)


def test_subset_compiles_fits_and_does_not_spill(subset):
    assert _failures(subset) == []


def test_subset_covers_every_kernel_both_archs_and_each_dtype(subset):
    rows = subset["rows"]
    assert {r["kernel"] for r in rows} == set(subset["kernels_in_matrix"])
    assert {r["arch"] for r in rows} == set(ARCHS)
    assert {r["dtype"] for r in rows} == {"fp32", "bf16", "fp16"}
    families = {k.split(".")[0] for k in subset["kernels_in_matrix"]}
    # No shipped spec launches the elementwise add any more: every residual add of the ResNets follows a
    # batch norm and is folded into it (compiler/passes/fusion.py); the add kernel runs for adds that
    # do not (its interpreter tests: tests/kernels/test_elementwise.py)
    assert {"conv", "lrn", "pool", "batchnorm", "activation", "dropout", "loss"} <= families
    for name in ("conv._conv_fwd_kernel", "conv._conv_bwd_data_kernel", "conv._conv_bwd_weight_kernel"):
        precs = {r["constexprs"].get("PREC") for r in rows if r["kernel"] == name and r["dtype"] == "fp32"}
        assert precs == {"tf32", "ieee"}, (name, precs)
        assert {r["arch"] for r in rows if r["kernel"] == name and r["dtype"] == "bf16"} == set(ARCHS)


def test_subset_resources_are_what_ptxas_and_triton_report(subset):
    for r in subset["rows"]:
        assert 1 <= r["registers"] <= 255 and r["shared"] >= 0 and r["seconds"] > 0, r
        assert 0 < r["occupancy"] <= 1 and r["blocks_per_sm"] >= 1, r
        assert r["occupancy"] == occupancy(arch(r["arch"]), r["registers"], r["shared"], r["num_warps"])["occupancy"]
        if r["config_constexprs"]:     # an autotune config's warps and stages are what Triton compiled
            assert r["config"].endswith(f"w{r['num_warps']} s{r['num_stages']}"), r
        if r["constexprs"].get("PREC") == "ieee":   # conv's own IEEE list: <= 32 fp32 accumulators a thread
            c = r["config_constexprs"]
            assert c["BLOCK_M"] * c["BLOCK_N"] <= 32 * 32 * r["num_warps"], r


@pytest.mark.slow
def test_whole_matrix_compiles_fits_and_does_not_spill(tmp_path):
    result = _compile_matrix(tmp_path, timeout=3 * 3600)
    assert result["summary"]["compiles"] > 1000
    assert _failures(result) == []
    assert stale(result["rows"]) == [], "accepted spills that no longer happen: remove them"


def test_ptxas_report_is_parsed():
    assert parse_ptxas(PTXAS_LOG) == {"registers": 255, "spill_stores": 812, "spill_loads": 812, "stack": 816}
    with pytest.raises(ValueError, match="no register report"):
        parse_ptxas("ptxas fatal   : Unresolved extern function")


def test_arch_limits_and_occupancy():
    assert ARCHS["sm_90a"].max_shared_per_block == 232448 and ARCHS["sm_80"].max_shared_per_block == 166912
    a = arch("sm_90a")
    # 255 registers x 256 threads: 8 warps of 8192 registers fill the 64K register file once
    assert occupancy(a, 255, 0, 8) == {"blocks_per_sm": 1, "occupancy": 0.125, "limit": "registers"}
    assert occupancy(a, 32, 0, 4) == {"blocks_per_sm": 16, "occupancy": 1.0, "limit": "warps"}
    # 100 KiB + the 1 KiB the runtime reserves: two blocks in sm_90a's 228 KiB, one in sm_80's 164 KiB
    assert occupancy(a, 64, 100 * 1024, 4)["blocks_per_sm"] == 2
    assert occupancy(arch("sm_80"), 64, 100 * 1024, 4) == {"blocks_per_sm": 1, "occupancy": 0.0625, "limit": "shared"}
    assert occupancy(a, 64, 232449, 4)["blocks_per_sm"] == 0
    with pytest.raises(ValueError, match="unknown GPU architecture 'sm_89'"):
        arch("sm_89")


def test_accepted_spills_say_why():
    for a in ACCEPTED:
        assert a.arch in (None, *ARCHS) and a.dtype in ("fp32", "bf16", "fp16") and len(a.reason) > 40, a
        assert a.kernel.split(".")[0] in ("conv", "lrn", "pool", "batchnorm", "activation", "dropout", "elementwise",
                                          "loss"), a
