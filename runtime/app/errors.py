"""The command-line application's error type, imported by every command module (so none imports cli)."""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (a path, an option): printed as one line, exit status 2."""
