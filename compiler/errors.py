"""Spec diagnostics: a source position, one error at that position, and the collection raised together.

Every problem the compiler finds in a spec becomes a `SpecError` that prints as
``FILE:LINE:COL: layer NAME: message``; the frontend collects them and raises one `SpecErrors`,
which the CLI prints (one per line) before exiting with status 2.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, NamedTuple


class Mark(NamedTuple):
    """A 1-based source position."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, order=True)
class SpecError:
    mark: Mark
    message: str
    layer: str | None = None

    def __str__(self) -> str:
        where = f"layer {self.layer}: " if self.layer else ""
        return f"{self.mark}: {where}{self.message}"


class SpecErrors(Exception):
    """One or more spec errors, reported together (sorted by position, duplicates removed)."""

    def __init__(self, errors: Iterable[SpecError]):
        uniq = sorted(set(errors), key=lambda e: (e.mark.file, e.mark.line, e.mark.col, e.message))
        self.errors: list[SpecError] = uniq
        super().__init__("\n".join(str(e) for e in uniq))


class ShapeError(Exception):
    """Shape inference failed at a node; names the node, its layer and spec position when known.

    `key`: the spec attribute (or attributes, first present wins) a located error should point at."""

    def __init__(self, message: str, *, node_name: str | None = None, layer: str | None = None,
                 mark: Mark | None = None, key: str | tuple[str, ...] | None = None):
        self.node_name, self.layer, self.mark, self.reason = node_name, layer, mark, message
        self.keys: tuple[str, ...] = (key,) if isinstance(key, str) else tuple(key or ())
        where = f"{mark}: " if mark else ""
        if layer and node_name and node_name != layer:
            who = f"layer {layer} (node {node_name}): "
        else:
            who = f"layer {layer}: " if layer else (f"node {node_name}: " if node_name else "")
        super().__init__(f"{where}{who}{message}")


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
