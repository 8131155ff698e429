"""Writing a file so that readers see the old one or the whole new one, never a half-written one.

Checkpoints have their own, stricter protocol (fsync and a commit record, see checkpoint.py); this is
for the plain outputs: plots, figures, caches, the compiled graph.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def replacing(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary name beside `path` (ending in `suffix`, for writers that infer the format from
    it); when the block succeeds it is renamed over `path`, when it fails it is removed."""
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
