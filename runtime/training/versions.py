"""Where a run goes without ``--out``: its own directory, ``runs/<spec name>/version_N`` (as Lightning's
``lightning_logs/version_N``), so trainings never collide by default.

A new run takes the next number (one more than the highest there, from 0), created atomically so two
trainings started at once get two directories. ``--resume`` without ``--out`` continues the newest run
of the spec (the highest number). Commands that read a run (``eval``, ``predict``, the figures,
``export``, ``--init-from``) accept ``runs/<spec name>`` too: its newest version that holds a checkpoint.
"""
from __future__ import annotations

import os
import re

from .errors import TrainingEnvironmentError, TrainingError

RUNS_ROOT = "runs"
_VERSION = re.compile(r"^version_(\d{1,9})$")


def spec_runs(spec_name: str, root: str = RUNS_ROOT) -> str:
    """The directory holding a spec's runs: ``runs/<spec name>``."""
    return os.path.join(root, spec_name)


def versions(directory: str) -> list[tuple[int, str]]:
    """The ``version_N`` subdirectories of `directory`, (N, path) in increasing N (none: [])."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    found = []
    for e in entries:
        m = _VERSION.match(e.name)
        if m and e.is_dir(follow_symlinks=False):
            found.append((int(m.group(1)), e.path))
    return sorted(found)


def new_version(directory: str) -> str:
    """Create and return ``directory/version_N``, N one more than the highest there (0 for the first)."""
    os.makedirs(directory, exist_ok=True)
    n = versions(directory)[-1][0] + 1 if versions(directory) else 0
    while True:
        path = os.path.join(directory, f"version_{n}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:   # another training took this number a moment ago: the next one
            n += 1


def newest_version(directory: str) -> str | None:
    """The highest ``version_N`` in `directory` (None when it has none)."""
    found = versions(directory)
    return found[-1][1] if found else None


def newest_run(path: str) -> str:
    """`path`, or where `path` holds ``version_N`` runs and no checkpoints of its own, the newest of them
    that holds a checkpoint (the newest of all when none does, so the error names it)."""
    if not os.path.isdir(path) or os.path.isdir(os.path.join(path, "checkpoints")):
        return path
    found = versions(path)
    if not found:
        return path
    with_checkpoints = [p for _, p in found if os.path.isdir(os.path.join(p, "checkpoints"))
                        and any(f.endswith(".json") for f in os.listdir(os.path.join(p, "checkpoints")))]
    return with_checkpoints[-1] if with_checkpoints else found[-1][1]


def choose(spec_name: str, *, resume: bool, restarted: bool, overwrite: bool,
           root: str = RUNS_ROOT) -> tuple[str, bool]:
    """The directory of a run given no --out, and whether it was created for it: a new version; for
    --resume the spec's newest run with a checkpoint; for a torchrun restart the newest (the job's own,
    checkpoint or not). TrainingError for --overwrite (nothing to replace) and for --resume of a spec
    that has no run."""
    runs = spec_runs(spec_name, root)
    if overwrite:
        raise TrainingError("--overwrite replaces the run in --out: give --out DIR (without --out every run "
                            f"gets a new directory, {runs}/version_N)")
    if resume and newest_version(runs) is not None:
        return newest_run(runs), False
    if restarted and newest_version(runs) is not None:
        return newest_version(runs), False
    if resume:
        raise TrainingError(f"--resume: no run of {spec_name} in {runs} to continue (runs without --out go to "
                            "version_N there); give --out DIR to resume a run elsewhere")
    try:
        return new_version(runs), True
    except OSError as exc:
        raise TrainingEnvironmentError(f"{runs}: cannot create the run directory: {exc.strerror or exc}") from None
