"""The compile matrix: every distinct (launch, tile config, architecture), compiled in worker processes.

`jobs(matrix, archs)` expands each distinct launch over its configs and the architectures, one job per
distinct compile; `run(jobs, workers)` compiles them in `workers` processes (spawned: each imports
Triton afresh, with its own empty Triton cache directory, removed when the pool ends) and returns one
result per job: the job's description and either its resources (compile.compile_launch) or `error`,
the compile's failure in one line. A job that fails never stops the others.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable

from .launches import Launch, Matrix, config_label, configs


@dataclass(frozen=True, eq=False)
class Job:
    launch: Launch
    config: dict
    arch: str

    def _key(self) -> tuple:
        return (self.launch, json.dumps(self.config, sort_keys=True), self.arch)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def describe(self) -> dict:
        return {"kernel": self.launch.name, "dtype": self.launch.dtype, "arch": self.arch,
                "config": config_label(self.config), "constexprs": dict(self.launch.constexprs),
                "config_constexprs": dict(self.config["constexprs"]), "aligned": list(self.launch.aligned)}


def jobs(matrix: Matrix, archs: tuple[str, ...]) -> list[Job]:
    out = []
    for launch in matrix.uses:
        for config in configs(launch):
            out.extend(Job(launch, config, a) for a in archs)
    return list(dict.fromkeys(out))


_CACHE_DIR: str | None = None


def _init_worker() -> None:
    global _CACHE_DIR
    os.environ.pop("TRITON_INTERPRET", None)
    _CACHE_DIR = tempfile.mkdtemp(prefix="alexnetc-aot-")
    import warnings

    # Triton 3.9 warns once per process that its fp-fusion default will change; the kernels compile with
    # the default a launch would use, so the warning says nothing about them.
    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION")
    from multiprocessing.util import Finalize

    Finalize(None, shutil.rmtree, args=(_CACHE_DIR, True), exitpriority=10)   # at the worker's exit


def _compile(payload: tuple[dict, dict, str]) -> dict:
    from .compile import compile_launch

    launch = Launch.from_dict(payload[0])
    try:
        res = compile_launch(launch, payload[1], payload[2], _CACHE_DIR)
    except Exception as exc:  # a compile error is a result, reported with its job
        lines = [l for l in str(exc).strip().splitlines() if l.strip()] or [type(exc).__name__]
        return {"error": f"{type(exc).__name__}: {lines[0][:300]}"}
    finally:
        if _CACHE_DIR is not None:   # always_compile writes every kernel again: keep the disk bounded
            shutil.rmtree(_CACHE_DIR, ignore_errors=True)
            os.makedirs(_CACHE_DIR, exist_ok=True)
    return res


def run(work: list[Job], workers: int = 2, progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Compile every job; results in the jobs' order, each {**job.describe(), **resources or error}."""
    import multiprocessing

    results: list[dict | None] = [None] * len(work)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx, initializer=_init_worker) as pool:
        futures = {pool.submit(_compile, (j.launch.as_dict(), j.config, j.arch)): i for i, j in enumerate(work)}
        for done, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            results[i] = {**work[i].describe(), **fut.result()}
            if progress is not None:
                progress(done, len(work))
    return [r for r in results if r is not None]


def _tile(job: Job) -> int:
    """The job's tile size: the product of its BLOCK_* constexprs (launch and config)."""
    sizes = {**dict(job.launch.constexprs), **job.config["constexprs"]}
    out = 1
    for k, v in sizes.items():
        if k.startswith("BLOCK") and isinstance(v, int):
            out *= v
    return out


def representative(work: list[Job], archs: tuple[str, ...]) -> list[Job]:
    """A subset that compiles in a minute or two and still touches every kernel in every dtype it runs
    in (and, for the conv GEMMs, each tl.dot precision) and every architecture: per (kernel, dtype,
    PREC) its largest tile (the likeliest to spill or overflow shared memory), on one architecture in
    turn; the autotuned GEMMs in fp32 and bf16, whose tiles are the largest, on every architecture."""
    best: dict[tuple, Job] = {}
    for j in work:
        key = (j.launch.name, j.launch.dtype, dict(j.launch.constexprs).get("PREC"), j.arch)
        if key not in best or _tile(j) > _tile(best[key]):
            best[key] = j
    picked = []
    for i, key in enumerate(dict.fromkeys(k[:3] for k in best)):
        every = best[(*key, next(a for a in archs if (*key, a) in best))].launch.autotuned and key[1] != "fp16"
        for a in archs if every else (archs[i % len(archs)],):
            picked.append(best.get((*key, a)) or next(j for k, j in best.items() if k[:3] == key))
    return list(dict.fromkeys(picked))
