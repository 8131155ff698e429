"""Compiled resources kept on disk, so a launch is compiled for an architecture once per kernel source.

One JSON file per compile under the given folder (`alexnetc profile` passes ~/.cache/alexnetc/aot, or
$ALEXNETC_CACHE/aot), named by a hash of: the Triton version, the kernel's source hash (Triton's own
`cache_key`: the function's source and every jitted function and global it uses), the launch
(types, constexprs, alignment), the config and the architecture. A kernel edited, a Triton upgrade or
another config is a new file; an unreadable or malformed file is compiled again.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Callable

from .launches import Launch, _jit_function, kernel_object
from .matrix import Job, run


def cache_key(job: Job) -> str:
    import triton

    fn = _jit_function(kernel_object(job.launch))
    blob = json.dumps({"triton": triton.__version__, "source": fn.cache_key, "launch": job.launch.as_dict(),
                       "config": job.config, "arch": job.arch}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _read(path: str) -> dict | None:
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > 1 << 20:
            return None
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and ("registers" in data or "error" in data) else None


def _write(path: str, data: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except OSError:   # a cache that cannot be written only costs a compile next time
        if os.path.exists(tmp):
            os.remove(tmp)


def compile_cached(work: list[Job], folder: str, workers: int = 2,
                   progress: Callable[[int, int], None] | None = None) -> list[tuple[dict, bool]]:
    """(result, from_cache) per job, in order: cached results read, the others compiled (in `workers`
    processes) and stored. A result is run()'s row: the job's description with resources or `error`."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"{cache_key(j)}.json") for j in work]
    cached = [_read(p) for p in paths]
    missing = [i for i, c in enumerate(cached) if c is None]
    fresh = run([work[i] for i in missing], workers, progress) if missing else []
    for i, row in zip(missing, fresh):
        _write(paths[i], row)
        cached[i] = row
    missing_set = set(missing)
    return [(c, i not in missing_set) for i, c in enumerate(cached)]


__all__ = ["Launch", "cache_key", "compile_cached"]
