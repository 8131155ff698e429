"""Cells and columns of the profile tables (measured and predicted): numbers in the units the tables
print, a table with aligned columns. No torch here, so `--predict` runs without it."""
from __future__ import annotations

from typing import Sequence

from ...compiler.cost import CostRow


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}" if n else "-"


def gflop(n: float) -> str:
    return f"{n / 1e9:,.3f}" if n else "-"


def ms(s: float) -> str:
    return f"{s * 1e3:,.3f}"


def table(head: Sequence[str], body: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(head), line(["-" * w for w in widths]), *(line(b) for b in body)]


def row_label(r: CostRow) -> str:
    return f"{r.label} (copy)" if r.kind == "copy" else r.label
