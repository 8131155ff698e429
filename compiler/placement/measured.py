"""Measured per-layer times (`alexnetc profile --json`) in place of the roofline's bounds.

A profile holds, per row (a layer or block instance on a device, a copy, a device's SGD update), the
forward and backward milliseconds measured at the profile's batch. The planner needs times for
placements that were never run (other devices, towers, batch sizes), so it keeps the roofline's
shape and the profile's level: each layer's measured time over its roofline bound (on one device, at
the profile's batch, on the planned GPU) is a factor, and every node of that layer is timed as its
bound times the factor. At the profiled batch on one device the layers then take exactly the measured
times; copies and the all-reduce stay bounded by the link. The SGD update rows (with the gradients'
copy into their buckets, which has no node of its own) scale the updates.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..cost import NodeCost, UpdateCost, block_of, cost_at_batch
from ..cost.roofline import Seconds
from .reference import Reference
from .units import PlacementError

UPDATE = "sgd update"


@dataclass(frozen=True)
class MeasuredProfile:
    path: str
    spec: str
    batch: int
    times: dict[str, float]      # row label -> seconds (forward + backward, summed over its devices)
    flops: dict[str, int]        # row label -> forward FLOPs at the profile's batch (what identifies the network)
    where: str                   # what it was measured on (the profile's devices)


def _number(value: Any, what: str, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise PlacementError(f"{path}: {what} is not a time in milliseconds")
    return float(value)


def parse_profile(text: str | bytes, path: str) -> MeasuredProfile:
    """The profile `alexnetc profile --json` wrote to `path` (its text; the command reads the file,
    bounded); anything that is not one is refused in one line."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PlacementError(f"{path}: not JSON ({str(exc)[:80]}): not an alexnetc profile") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or "batch" not in data:
        raise PlacementError(f"{path}: not an alexnetc profile (write one with alexnetc profile SPEC --json FILE)")
    batch = data["batch"]
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise PlacementError(f"{path}: batch is not a positive integer")
    times: dict[str, float] = {}
    flops: dict[str, int] = {}
    for k, row in enumerate(data["rows"]):
        if not isinstance(row, dict) or not isinstance(row.get("label"), str) or not isinstance(row.get("kind"), str):
            raise PlacementError(f"{path}: row {k} has no label and kind")
        if row["kind"] == "copy":
            continue
        # the gradients' copy into the flat buckets has no node of its own: it counts with the update
        label = UPDATE if row["kind"] in ("update", "buckets") else row["label"]
        ms = _number(row.get("forward_ms"), f"row {k} forward_ms", path) + \
            _number(row.get("backward_ms"), f"row {k} backward_ms", path)
        times[label] = times.get(label, 0.0) + ms / 1e3
        forward = (row.get("flops") or {}).get("forward") if isinstance(row.get("flops"), dict) else None
        if isinstance(forward, int) and not isinstance(forward, bool) and label != UPDATE:
            flops[label] = flops.get(label, 0) + forward
    env = data.get("environment") if isinstance(data.get("environment"), dict) else {}
    devices = env.get("devices") if isinstance(env.get("devices"), list) else []
    return MeasuredProfile(path, str(data.get("spec", "?"))[:64], batch, times, flops,
                           ", ".join(str(d)[:60] for d in devices[:4]) or "unknown devices")


def measured_seconds(profile: MeasuredProfile, ref: Reference, roofline: Seconds) -> Seconds:
    """Node times from `profile`: each node's roofline bound times its layer's measured/bound factor,
    the factors taken from the width-1 reference `ref` (every unit whole) at the profile's batch."""
    labels = set(profile.times)

    def label(node) -> str | None:
        layer = node.layer or node.name
        if layer in labels:
            return layer
        block = block_of(layer)
        return block if block in labels else None

    bound: dict[str, float] = {}
    flops: dict[str, int] = {}
    missing = set()
    for c1, c2 in ref.ordered:
        if c1.link:
            continue
        name = label(c1.node)
        if name is None:
            missing.add(block_of(c1.node.layer or c1.node.name) or c1.node.layer or c1.node.name)
            continue
        c = cost_at_batch(c1, c2, profile.batch)
        bound[name] = bound.get(name, 0.0) + roofline(c)
        if c.phase == "forward":
            flops[name] = flops.get(name, 0) + c.flops
    if missing:
        raise PlacementError(f"{profile.path}: no measured time for {', '.join(sorted(missing)[:4])}: a profile of "
                             f"another network ({profile.spec})")
    bound[UPDATE] = sum(roofline(u) for u in ref.updates.values())
    for name, n in profile.flops.items():   # placement moves no FLOPs of a layer's forward pass
        if name in flops and flops[name] != n:
            raise PlacementError(f"{profile.path}: layer {name} did {n:,} forward FLOPs there and does {flops[name]:,} "
                                 f"here at batch {profile.batch}: a profile of another network ({profile.spec})")
    factor = {name: profile.times[name] / b for name, b in bound.items() if b > 0 and name in profile.times}
    unknown = labels - set(bound)
    if unknown:
        raise PlacementError(f"{profile.path}: rows {', '.join(sorted(unknown)[:4])} are not layers of this network: "
                             f"a profile of another network ({profile.spec})")

    def seconds(c: NodeCost | UpdateCost) -> float:
        s = roofline(c)
        if isinstance(c, UpdateCost):
            return s * factor.get(UPDATE, 1.0)
        if c.link:
            return s
        name = label(c.node)
        return s * factor.get(name, 1.0) if name is not None else s

    return seconds
