"""Per-layer rows of a cost table: nodes grouped by the spec layer they implement and the device they
run on, the way `alexnetc profile` prints them (measured) and `--predict` prints them (bounded).

A row holds one layer on one device (a tower's share is its own row), a cross-device copy (its
own row, named after the layer that needs the copy, with the two devices), or a device's SGD update.
Layers of a block instance (`inception_3a.b2`) fold into one row per instance and device
(`inception_3a`) unless the caller expands that instance (or all of them). Forward and backward
are kept apart. Rows come in execution order of their first forward node.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Iterable

from ..ops.tensor import copy_source
from .node_cost import NodeCost, UpdateCost


@dataclass
class CostRow:
    label: str                 # layer (or block instance) name; for a copy, the layer that reads it
    kind: str                  # "layer", "block", "copy" or "update"
    op: str                    # the layer's op, "block", "copy" or "sgd"
    device: str                # gpu0, or "gpu1->gpu0" for a copy
    flops: dict[str, int] = field(default_factory=lambda: {"forward": 0, "backward": 0})
    bytes: dict[str, int] = field(default_factory=lambda: {"forward": 0, "backward": 0})
    link: int = 0              # bytes across the link
    kept: int = 0              # bytes held from forward to backward
    nodes: dict[str, list[NodeCost]] = field(default_factory=lambda: {"forward": [], "backward": []})

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.label, self.device)

    def add(self, c: NodeCost) -> None:
        self.flops[c.phase] += c.flops
        self.bytes[c.phase] += c.bytes
        self.link += c.link
        self.kept += c.kept
        self.nodes[c.phase].append(c)


def block_of(layer: str) -> str | None:
    """The outermost block instance a layer belongs to (`layer1` of `layer1.1.conv1`), or None."""
    return layer.split(".", 1)[0] if "." in layer else None


def _folded(layer: str, expand: bool | Collection[str]) -> str | None:
    block = block_of(layer)
    if block is None or expand is True or (expand and block in expand):
        return None
    return block


def cost_rows(costs: Iterable[NodeCost], layer_ops: dict[str, str], updates: Iterable[UpdateCost] = (),
              expand: bool | Collection[str] = False) -> list[CostRow]:
    """Rows of `costs` (execution order); `layer_ops` maps a spec layer to its op; `expand`: True for
    every layer on its own, or the block instances to show layer by layer."""
    rows: dict[tuple[str, str, str], CostRow] = {}
    for c in costs:
        n = c.node
        layer = n.layer or n.name
        if c.link:
            row = CostRow(layer, "copy", "copy", f"{copy_source(n)}->{n.device}")
        else:
            block = _folded(layer, expand)
            row = (CostRow(block, "block", "block", n.device or "host") if block is not None
                   else CostRow(layer, "layer", layer_ops.get(layer, n.op), n.device or "host"))
        rows.setdefault(row.key, row).add(c)
    out = list(rows.values())
    for u in updates:
        row = CostRow("sgd update", "update", "sgd", u.device)
        row.flops["backward"] = u.flops
        row.bytes["backward"] = u.bytes
        out.append(row)
    return out


def block_names(layers: Iterable[str]) -> set[str]:
    return {b for b in (block_of(l) for l in layers) if b is not None}
