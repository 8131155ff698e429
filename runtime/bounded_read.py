"""Reading a file alexnetc did not write in this run (class lists, checkpoint records and tensor files,
caches, imported weights, query images): typed and bounded before a byte is read.

Only a regular file is read: a directory, FIFO, socket or device is refused by name (a FIFO would
block, ``/dev/zero`` never ends), never opened. Its size is checked against a named limit first, each
with an environment variable that raises it; hitting one is a one-line message naming the file, its
size, the limit and the variable::

    ckpt-000003-e0003.json: too large for a checkpoint record (239,075,328 bytes, limit 16,777,216; ALEXNETC_MAX_RECORD_BYTES)

=====================  ================================  =======  ==============================================
limit                  environment variable               default  what
=====================  ================================  =======  ==============================================
MAX_CLASS_LIST_BYTES   ALEXNETC_MAX_CLASS_LIST_BYTES      16 MiB   ``import --classes FILE``
MAX_RECORD_BYTES       ALEXNETC_MAX_RECORD_BYTES          16 MiB   a checkpoint's JSON record, a statistics cache
MAX_WEIGHTS_BYTES      ALEXNETC_MAX_WEIGHTS_BYTES         16 GiB   a checkpoint's tensor file, imported weights
MAX_CACHE_BYTES        ALEXNETC_MAX_CACHE_BYTES           16 GiB   a feature cache (``neighbors``)
=====================  ================================  =======  ==============================================

Files that must also not grow between the check and the read are read with :func:`read_bounded` (at
most limit + 1 bytes, from a descriptor opened without blocking and checked again); libraries that open
a file themselves (safetensors, torch.load, numpy, Pillow) are given it after :func:`check_file`.
"""
from __future__ import annotations

import os
import stat

from ..compiler.limits import env_limit

MAX_CLASS_LIST_BYTES = 16 << 20
MAX_RECORD_BYTES = 16 << 20
MAX_WEIGHTS_BYTES = 16 << 30
MAX_CACHE_BYTES = 16 << 30

ENV = {
    "MAX_CLASS_LIST_BYTES": "ALEXNETC_MAX_CLASS_LIST_BYTES",
    "MAX_RECORD_BYTES": "ALEXNETC_MAX_RECORD_BYTES",
    "MAX_WEIGHTS_BYTES": "ALEXNETC_MAX_WEIGHTS_BYTES",
    "MAX_CACHE_BYTES": "ALEXNETC_MAX_CACHE_BYTES",
}


class UnreadableFile(Exception):
    """A file that is missing, not a regular file, or over its size limit; the message names it."""


def read_limit(name: str) -> int:
    """The current value of read limit ``name`` (``"MAX_RECORD_BYTES"`` ...): its variable, else the default."""
    return env_limit(ENV[name], globals()[name])


def file_kind(mode: int) -> str:
    """'a directory', 'a FIFO', ... for a stat mode that is not a regular file's."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a file"


def _a(what: str) -> str:
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"


def _checked(path: str, st: os.stat_result, limit_name: str | None, what: str) -> int:
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFile(f"{path}: not a regular file ({file_kind(st.st_mode)}); {_a(what)} must be a regular "
                             "file")
    if limit_name is not None:
        cap = read_limit(limit_name)
        if st.st_size > cap:
            raise UnreadableFile(f"{path}: too large for {_a(what)} ({st.st_size:,} bytes, limit {cap:,}; "
                                 f"{ENV[limit_name]})")
    return st.st_size


def check_file(path: str | os.PathLike, limit_name: str | None, what: str) -> int:
    """The size of ``path`` after checking that it is a regular file (symbolic links followed) within
    limit ``limit_name`` (None: no size limit, e.g. an image); UnreadableFile saying why not."""
    path = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UnreadableFile(f"{path}: no such {what}") from None
    except (OSError, ValueError) as exc:   # ValueError: a NUL in the path
        raise UnreadableFile(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return _checked(path, st, limit_name, what)


def read_bounded(path: str | os.PathLike, limit_name: str, what: str) -> bytes:
    """The bytes of a regular file within limit ``limit_name``: checked before reading, opened without
    blocking, checked again on the open descriptor, read to at most the limit (a file that grows past
    it meanwhile is refused too)."""
    path = str(path)
    check_file(path, limit_name, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UnreadableFile(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        _checked(path, os.fstat(fd), limit_name, what)   # the file opened is the file checked
        cap = read_limit(limit_name)
        chunks, n = [], 0
        while n <= cap:
            b = os.read(fd, min(1 << 20, cap + 1 - n))
            if not b:
                break
            chunks.append(b)
            n += len(b)
    except OSError as exc:
        raise UnreadableFile(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if n > cap:
        raise UnreadableFile(f"{path}: too large for {_a(what)} (more than {cap:,} bytes; {ENV[limit_name]})")
    return b"".join(chunks)
