"""Writing a file so that readers see the old one or the whole new one, never a half-written one, and
never through something that is not a regular file.

Checkpoints have their own, stricter protocol (fsync and a commit record, see checkpoint.py); this is
for the plain outputs: plots, figures, caches, the compiled graph, ONNX files. Every target is checked
first (:func:`check_write_target`): a missing path or a regular file (replaced whole) is written; a
directory, FIFO, socket or device is refused, never opened or renamed over (a rename over ``/dev/full``
would replace the device node). :func:`write_problem` says whether a failed write was the machine's
fault (disk full, read-only file system: exit status 1) or the input's (status 2), in one line.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from typing import Iterator

# errno values that mean the machine failed the write, not the input (the CLI's exit status 1)
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                            errno.EFBIG})


class WriteTargetError(OSError):
    """The path to write names something that is not a regular file (a directory, FIFO, socket, device)."""


def check_write_target(path: str | os.PathLike) -> None:
    """Refuse (WriteTargetError) to write ``path`` unless it is missing or a regular file (symbolic
    links followed: a link to a device is refused too)."""
    from .bounded_read import file_kind

    path = str(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError:
        return   # unreadable metadata: the write itself will say why
    if not stat.S_ISREG(st.st_mode):
        raise WriteTargetError(errno.EINVAL, f"not a regular file ({file_kind(st.st_mode)}); alexnetc writes "
                                             "only to a new path or over a regular file", path)


def os_error_of(exc: BaseException) -> OSError | None:
    """``exc`` as an OSError: itself, or the OS error a library reported in its own type (safetensors'
    ``SafetensorError: ... (os error 28)``); None when it is neither."""
    if isinstance(exc, OSError):
        return exc
    m = re.search(r"os error (\d+)|Os \{ code: (\d+)", str(exc))
    if m:
        code = int(m.group(1) or m.group(2))
        return OSError(code, os.strerror(code))
    return None


def write_problem(path: str | os.PathLike, exc: OSError, what: str = "") -> tuple[str, bool]:
    """``(message, machine)`` for a failed write of ``path`` (a ``what``, e.g. "checkpoint"): one line
    ("no space left on device writing PATH", "PATH: cannot write: Read-only file system", ...) and
    whether the machine is at fault."""
    if isinstance(exc, WriteTargetError):
        return f"{path}: cannot write{' ' + what if what else ''}: {exc.strerror}", False
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device writing {what + ' ' if what else ''}{path}", True
    return f"{path}: cannot write{' ' + what if what else ''}: {exc.strerror or exc}", exc.errno in MACHINE_ERRNOS


@contextlib.contextmanager
def replacing(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary name beside `path` (ending in `suffix`, for writers that infer the format from
    it); when the block succeeds it is renamed over `path`, when it fails it is removed. A `path` that
    exists and is not a regular file raises WriteTargetError (an OSError) before anything is written."""
    path = str(path)
    check_write_target(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}{suffix}"
    try:
        yield tmp
        check_write_target(path)   # still not a device: nothing may have appeared there meanwhile
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
