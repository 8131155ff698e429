"""The command-line application's error types, imported by every command module (so none imports cli),
and the one-line formatting every message goes through before it reaches the terminal."""
from __future__ import annotations

DEBUG_ENV = "ALEXNETC_DEBUG"  # set to 1: let tracebacks through instead of one-line messages


class UserError(Exception):
    """A problem with the user's input (a path, an option, a file's content): one line, exit status 2."""


class EnvironmentFailure(Exception):
    """The machine failed, not the input (disk full, read-only directory, no device): one line, exit 1."""


def one_line(text: object, limit: int = 2000) -> str:
    """``text`` on one line with control characters (ESC, NUL, newlines...) escaped, at most ``limit``
    characters: what a spec or a file holds must never reach the terminal raw."""
    from ...compiler.limits import excerpt

    return excerpt(text, limit)


def write_failure(path: object, exc: BaseException) -> Exception:
    """The error to raise when writing ``path`` failed with ``exc``: EnvironmentFailure (exit 1) for the
    machine's failures (disk full, read-only file system), UserError (exit 2) for the input's (a target
    that is a device or a directory, a missing parent); one plain line either way."""
    from ..atomic import os_error_of, write_problem

    err = os_error_of(exc)
    if err is None:
        return UserError(f"{path}: cannot write: {exc}")
    message, machine = write_problem(path, err)
    return EnvironmentFailure(message) if machine else UserError(message)


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a new file, or a regular file replaced whole); a failure is
    `write_failure`'s one line."""
    from ..atomic import replacing

    try:
        with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise write_failure(path, exc) from None


def shown(text: object) -> str:
    """A user-supplied string (a file name, a class name) as it may be printed: on one line, control
    characters escaped (a name holding ESC [2J must not clear the terminal)."""
    return one_line(text, 10_000)


def say(text: object, file: object = None, flush: bool = False) -> None:
    """print() for lines that carry user-supplied strings (file, class and spec names): each line with its
    control characters escaped (``\x1b``), the line breaks the message itself has kept."""
    import sys

    print("\n".join(shown(line) for line in str(text).split("\n")), file=file or sys.stdout, flush=flush)
