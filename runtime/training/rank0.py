"""What rank 0 decides for every process under torchrun: the run directory, whether it may be used,
the checkpoint a run resumes or starts from.

`on_rank0(fn, dist)` runs `fn` on rank 0 only (in one process: just runs it) and hands its value to
every process. When `fn` raises, rank 0 raises it (its one-line error is the job's message) and every
other process raises `StoppedByRank0` at once, instead of waiting in its next collective until rank 0
is gone and then reporting a failed collective with advice that does not apply.
"""
from __future__ import annotations

from typing import Any, Callable

from ..execution import distributed as dp
from .errors import StoppedByRank0, TrainingEnvironmentError


def _status(exc: BaseException) -> int:
    """The exit status rank 0's CLI gives `exc`: 1 for a failure of the machine, else 2."""
    return 1 if isinstance(exc, (TrainingEnvironmentError, OSError)) else 2


def on_rank0(fn: Callable[[], Any], dist: dp.DistContext | None) -> Any:
    if dist is None:
        return fn()
    if dist.is_writer:
        try:
            value = fn()
        except Exception as exc:
            dist.broadcast(("stop", _status(exc)))
            raise
        dist.broadcast(("ok", value))
        return value
    kind, value = dist.broadcast(None)
    if kind == "stop":
        raise StoppedByRank0(value)
    return value
