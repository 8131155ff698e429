"""A placement as spec edits: the placed spec the compiler lowers, and the variant file a user trains.

A `Placement` says, per unit (`units.Unit`), on which device each of its towers runs (one device:
the unit runs whole there). `placed_spec` applies it to the expanded spec in memory (what the
planner compiles to evaluate it); `variant_edits` writes the same placement as a variant's
``devices:`` and ``modify_layers:`` on the spec's own layer and block instance names, so the file
`variant_text` produces compiles to the same graph (a test checks that it does).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..ops.weighted import DEVICE, GROUPS
from ..source import SpecList, SpecMap
from .units import Unit


@dataclass(frozen=True)
class Placement:
    """Per unit (in plan order) the devices of its towers; `devices` are the spec's logical devices,
    `replicas` the processes under torchrun (data parallelism), each running this placement."""

    devices: tuple[str, ...]
    towers: tuple[tuple[str, ...], ...]
    replicas: int = 1

    @property
    def used(self) -> int:
        return len({d for t in self.towers for d in t})


def tower_groups(unit: Unit, devices: tuple[str, ...]) -> dict[str, Any] | None:
    """The layer's `groups` value for towers on `devices` (None: no groups key at all)."""
    t = len(devices)
    if t == 1:
        return {"count": unit.count, "connect": unit.connect} if unit.count > 1 else None
    if unit.keeps_count:   # runs of whole groups, the groups' count and connect unchanged
        return {"count": unit.count, "devices": [devices[i * t // unit.count] for i in range(unit.count)],
                "connect": unit.connect}
    return {"count": t, "devices": list(devices), "connect": "all"}


def _with(layer: SpecMap, **changes: Any) -> SpecMap:
    out = SpecMap(layer, mark=layer.mark)
    out.key_marks, out.value_marks = dict(layer.key_marks), dict(layer.value_marks)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def placed_spec(spec: SpecMap, units: list[Unit], placement: Placement) -> SpecMap:
    """The expanded `spec` with every unit placed as `placement` says (a new spec; `spec` is unchanged)."""
    change: dict[str, dict[str, Any]] = {}
    for unit, devices in zip(units, placement.towers):
        if unit.kind == "layer":
            many = len(devices) > 1
            change[unit.name] = {DEVICE.name: None if many else devices[0], GROUPS.name: tower_groups(unit, devices)}
        else:
            for name in unit.layers:
                change[name] = {DEVICE.name: devices[0]}
    layers = SpecList(mark=spec["layers"].mark)
    for k, layer in enumerate(spec["layers"]):
        layers.append(_with(layer, **change[layer["name"]]) if layer["name"] in change else layer)
        layers.item_marks.append(spec["layers"].value_mark(k))
    out = SpecMap(spec, mark=spec.mark)
    out.key_marks, out.value_marks = dict(spec.key_marks), dict(spec.value_marks)
    out["layers"] = layers
    out["devices"] = list(placement.devices)
    out.origins = getattr(spec, "origins", {})
    return out


def variant_edits(units: list[Unit], placement: Placement) -> dict[str, Any]:
    """`modify_layers` for `placement`, on the spec's own names (a block instance through its
    `device:`); mappings merge into the base's layers and None deletes a key, as variants do."""
    edits: dict[str, Any] = {}
    for unit, devices in zip(units, placement.towers):
        if unit.kind != "layer":
            edits[unit.name] = {DEVICE.name: devices[0]}
        elif len(devices) == 1:
            edits[unit.name] = {DEVICE.name: devices[0], **({GROUPS.name: {"devices": None}} if unit.count > 1 else {})}
        else:
            groups = tower_groups(unit, devices)
            if unit.keeps_count:
                groups = {"devices": groups["devices"]}
            edits[unit.name] = {DEVICE.name: None, GROUPS.name: groups}
    return edits


def _flow(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 16)
    return text.removesuffix("\n...\n").strip()   # a scalar is dumped as a document of its own


def variant_text(base: str, name: str, units: list[Unit], placement: Placement, header: list[str],
                 train: dict[str, Any] | None = None) -> str:
    """The variant file: `header` lines as comments, then `base:`, `name:`, `devices:`, the edits and
    the `train:` settings that differ from the base's (the batch size, the dtype)."""
    lines = [f"# {h}" if h else "#" for h in header]
    lines += [f"base: {_flow(base)}", f"name: {_flow(name)}", f"devices: {_flow(list(placement.devices))}",
              "modify_layers:"]
    lines += [f"  {_flow(unit)}: {_flow(edit)}" for unit, edit in variant_edits(units, placement).items()]
    if train:
        lines.append(f"train: {_flow(train)}")
    return "\n".join(lines) + "\n"


def same_network(a: SpecMap, b: SpecMap) -> bool:
    """Whether two expanded specs are the same network placed two ways: equal once the placement keys
    (devices, each layer's device and groups.devices) and the names are left out."""
    def strip(spec: SpecMap) -> dict:
        out = {k: v for k, v in spec.items() if k not in ("devices", "name", "description", "train", "data", "layers")}
        layers = []
        for layer in spec["layers"]:
            plain = {k: v for k, v in layer.items() if k != DEVICE.name}
            if plain.get(GROUPS.name):
                plain[GROUPS.name] = {k: v for k, v in plain[GROUPS.name].items() if k != "devices"}
            layers.append(plain)
        return {**out, "layers": layers}

    return strip(a) == strip(b)
