"""`alexnetc profile SPEC --predict DEVICE --kernels`: which Triton kernel and tile configs serve each
layer of the training step on the named GPU, with what they compile to for its architecture
(registers per thread, bytes spilled, shared memory per block, occupancy), without a GPU.

The launches are the training step's own (kernels/aot/launches: the step run on meta tensors with the
Triton backend); each is compiled at every config its kernel's autotuner would try (kernels/aot/compile)
and the results cached on disk (kernels/aot/cache), so the first run compiles and later ones read.
Which config the autotuner picks is measured on the GPU and cannot be known here: an autotuned
kernel's row shows the largest tile that does not spill (the likeliest fast one; ties: more warps)
and how many configs the autotuner tries, the JSON every candidate.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ...compiler.cost import DeviceSpec, Prediction
from .format import row_label, table

# The run's dtype -> the precision its kernels run in (fp32 convolutions in TF32: PyTorch's default)
PRECISION_OF = {"float32": "fp32-tf32", "bfloat16": "bf16"}


@dataclass
class KernelRow:
    label: str
    device: str
    phase: str
    kernel: str
    dtype: str
    autotuned: bool
    candidates: list[dict] = field(default_factory=list)     # compile results, one per config
    cached: int = 0

    @property
    def shown(self) -> dict:
        """The largest config that compiles without spilling and fits (else the one spilling least)."""
        ok = [c for c in self.candidates if "error" not in c and not c["spill_stores"] and not c["over_shared_limit"]]
        if ok:
            return max(ok, key=lambda c: (math.prod(c["config_constexprs"].values()), c["num_warps"]))
        built = [c for c in self.candidates if "error" not in c]
        return min(built, key=lambda c: c["spill_stores"]) if built else self.candidates[0]


@dataclass
class KernelReport:
    device: DeviceSpec
    arch: str
    precision: str
    folder: str
    rows: list[KernelRow]
    compiles: int
    from_cache: int
    seconds: float


def cache_folder() -> str:
    from ..data.augment import default_cache_dir

    return os.path.join(str(default_cache_dir()), "aot")


def check_device(dev: DeviceSpec, dtype: str) -> str:
    """The architecture to compile for, or ValueError (one line) when there is none to compile for."""
    from ...kernels.aot.archs import ARCHS

    if dev.arch is None:
        raise ValueError(f"--kernels: Triton does not compile for the {dev.title} (no architecture Triton supports)")
    if dev.arch not in ARCHS:
        raise ValueError(f"--kernels: no per-SM limits for {dev.arch} ({dev.title}); "
                         f"the ahead-of-time compile knows {', '.join(ARCHS)} (h100, h200, a100)")
    if dtype not in PRECISION_OF:
        raise ValueError(f"--kernels: the Triton kernels do not run in {dtype} (float32 or bfloat16)")
    return dev.arch


def kernel_report(pred: Prediction, dtype: str, workers: int = 2, folder: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> KernelReport:
    """Compile (or read from the cache) every launch of `pred`'s training step for the device's arch."""
    from ...kernels.aot.cache import compile_cached
    from ...kernels.aot.launches import Matrix, check_compiled_mode, configs, record_step
    from ...kernels.aot.matrix import Job

    arch = check_device(pred.device, dtype)
    check_compiled_mode()
    precision = PRECISION_OF[dtype]
    matrix = Matrix()
    record_step(pred.net, pred.net.name, precision, matrix)
    by_node: dict[str, list] = {}
    for launch, uses in matrix.uses.items():
        for u in uses:
            by_node.setdefault(u.node, []).append(launch)
    rows: list[KernelRow] = []
    work: list[Job] = []
    for r in pred.rows:
        for phase in ("forward", "backward"):
            seen = []
            for c in r.row.nodes[phase]:
                for launch in by_node.get(c.node.name, []):
                    if launch not in seen:
                        seen.append(launch)
            for launch in seen:
                jobs = [Job(launch, cfg, arch) for cfg in configs(launch)]
                rows.append(KernelRow(row_label(r.row), r.row.device, phase, launch.name, launch.dtype,
                                      launch.autotuned, [{"job": len(work) + i} for i in range(len(jobs))]))
                work += jobs
    folder = folder or cache_folder()
    start = time.time()
    unique = list(dict.fromkeys(work))
    results = dict(zip(unique, compile_cached(unique, folder, workers, progress)))
    for row in rows:
        picked = [results[work[c["job"]]] for c in row.candidates]
        row.candidates = [res for res, _ in picked]
        row.cached = sum(hit for _, hit in picked)
    hits = sum(hit for _, hit in results.values())
    return KernelReport(pred.device, arch, precision, folder, rows, len(unique), hits, time.time() - start)


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f}"


def format_kernels(rep: KernelReport) -> str:
    head = ("layer", "device", "phase", "kernel", "dtype", "config (of those tried)", "regs", "spill B", "smem KiB",
            "occupancy", "spilling")
    body = []
    for r in rep.rows:
        c = r.shown
        tried = f" (1 of {len(r.candidates)})" if r.autotuned else ""
        label = c["config"] if r.autotuned else " ".join(
            [f"{k}={v}" for k, v in c.get("constexprs", {}).items() if k.startswith("BLOCK")]
            + ([f"w{c['num_warps']}"] if "num_warps" in c else []))
        if "error" in c:
            body.append((r.label, r.device, r.phase, r.kernel, r.dtype, label + tried, "-", "-", "-",
                         f"error: {c['error'][:60]}", "-"))
            continue
        spilling = sum(1 for x in r.candidates if x.get("spill_stores"))
        body.append((r.label, r.device, r.phase, r.kernel, r.dtype, label + tried, str(c["registers"]),
                     str(c["spill_stores"]), _kib(c["shared"]),
                     f"{100 * c['occupancy']:.1f}% ({c['occupancy_limit']})", f"{spilling}/{len(r.candidates)}"))
    new = rep.compiles - rep.from_cache
    where = (f"{rep.from_cache} of {rep.compiles} compiles from the cache in {rep.folder}"
             + (f", {new} compiled now in {rep.seconds:,.0f} s" if new else ""))
    out = ["", f"Triton kernels for the {rep.device.title} ({rep.arch}), {rep.precision}: {where}",
           "an autotuned kernel shows the largest tile that compiles without spilling (the autotuner measures "
           "all of them on the GPU); occupancy: warps resident per SM / 64, and what limits it;",
           "layers without a row launch no Triton kernel (fc: cuBLAS GEMMs; data movement: torch)", ""]
    out += table(head, body, right={6, 7, 8})
    return "\n".join(out)


def kernels_json(rep: KernelReport) -> dict[str, Any]:
    keep = ("config", "registers", "spill_stores", "spill_loads", "shared", "num_warps", "num_stages",
            "blocks_per_sm", "occupancy", "occupancy_limit", "over_shared_limit", "error")
    return {"arch": rep.arch, "precision": rep.precision, "cache": rep.folder, "compiles": rep.compiles,
            "from_cache": rep.from_cache,
            "rows": [{"label": r.label, "device": r.device, "phase": r.phase, "kernel": r.kernel, "dtype": r.dtype,
                      "autotuned": r.autotuned, "shown": r.shown.get("config"),
                      "candidates": [{k: c[k] for k in keep if k in c} for c in r.candidates]} for r in rep.rows]}
