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
