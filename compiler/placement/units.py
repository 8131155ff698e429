"""What the planner places: a network's units, and the ways each may be split without changing the net.

A *unit* is a spec-level layer that takes a device, or a block instance (all its copies): what a
variant's ``modify_layers`` can address, so a proposal is always a variant of the spec it came from.
A conv or fc layer may run as channel *towers* on several devices (its ``groups``); a block instance
and an ``add`` run whole on one device. Every other layer (pooling, LRN, dropout, activations,
flatten, concat, the loss) has no placement of its own: it runs where its input's parts are, so it
moves with the unit it follows.

Splitting must never change the function (the parameters, what each output reads, what LRN
normalises), so a layer's tower counts are limited to:

* ``connect: own`` with ``count`` g: every group keeps its own slice of the input, so the count stays
  g and the towers are runs of whole groups: t towers for each t dividing g (fc layers with
  ``connect: own`` need each group on its own device: only t = g);
* ``connect: all``, or no groups: the groups only partition the output channels, so any t dividing the
  output channels works (written as ``count: t, connect: all``), unless an LRN reads the layer's maps
  (through pooling, dropout, activations...): LRN normalises within each group of the layer that
  produced its input, so then the count stays and t must divide it, as with ``own``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..ops import get_op
from ..ops.attrs import NUM_GROUP
from ..ops.registry import OpDef
from ..ops.weighted import DEVICE, GROUPS, WeightedLayer
from ..source import SpecMap
from ..validate import layer_inputs


class PlacementError(ValueError):
    """A request the planner cannot serve: one line naming what is wrong."""


@dataclass(frozen=True)
class Unit:
    name: str                     # the spec-level layer or block instance (a variant's modify_layers key)
    kind: str                     # "layer" (conv, fc), "instance" (a block instance), "single" (add)
    layers: tuple[str, ...]       # its expanded layers that take a device
    op: str | None = None         # a layer's op
    count: int = 1                # its groups' count (1: no groups)
    connect: str = "own"
    keeps_count: bool = True      # towers are runs of its `count` groups (else: `count` becomes the tower count)
    towers: tuple[int, ...] = (1,)   # tower counts it may run as, ascending (1: whole on one device)

    def tower_count(self, m: int) -> int:
        """How many towers it runs as on a stage of `m` devices: the most that divide `m` (0: none can)."""
        return max((t for t in self.towers if m % t == 0), default=0)


def takes_device(op: OpDef) -> bool:
    return any(a.name == DEVICE.name for a in op.attrs)


def _groups_sensitive(op: OpDef) -> bool:
    """An op that works within the groups of the layer producing its input (LRN), per the registry:
    one that runs per part (no placement, not weighted) and carries a channel-group count."""
    return not isinstance(op, WeightedLayer) and not takes_device(op) and any(a.name == NUM_GROUP.name for a in op.attrs)


def _read_within_groups(spec: SpecMap, name: str) -> bool:
    """Whether some group-sensitive layer (LRN) reads `name`'s maps, directly or through layers that
    run per part (pooling, dropout, activations, concat, flatten)."""
    layers = spec["layers"]
    readers: dict[str, list[int]] = {}
    for i in range(len(layers)):
        for ref, _ in layer_inputs(spec, i):
            readers.setdefault(ref, []).append(i)
    todo, seen = [name], {name}
    while todo:
        for i in readers.get(todo.pop(), ()):
            op = get_op(layers[i]["op"])
            if _groups_sensitive(op):
                return True
            if isinstance(op, WeightedLayer) or takes_device(op) or op.role == "loss":
                continue
            if layers[i]["name"] not in seen:
                seen.add(layers[i]["name"])
                todo.append(layers[i]["name"])
    return False


def _divisors(n: int, most: int) -> tuple[int, ...]:
    return tuple(t for t in range(1, min(n, most) + 1) if n % t == 0)


def _layer_unit(spec: SpecMap, layer: Mapping, most: int) -> Unit:
    op = get_op(layer["op"])
    groups = layer.get(GROUPS.name) or {}
    count, connect = int(groups.get("count", 1)), groups.get("connect", "own")
    outputs = int(layer[op.out_attr])
    if connect == "own" and count > 1:
        keeps, towers = True, _divisors(count, most)
        if op.name == "fc":   # an fc reading its own slice needs each group on its own device
            towers = (count,) if count <= most else ()
    elif _read_within_groups(spec, layer["name"]):
        keeps, towers = True, _divisors(count, most)
    else:
        keeps, towers = False, _divisors(outputs, most)
    return Unit(layer["name"], "layer", (layer["name"],), op.name, count, connect, keeps, towers)


def plan_units(spec: SpecMap, order: list[str], most: int = 8) -> list[Unit]:
    """The units of an expanded spec (`spec.origins` names each block layer's instance), in `order`
    (the lowering's topological order of the expanded layers); `most`: the most towers wanted."""
    origins = getattr(spec, "origins", {}) or {}
    by_name = {l["name"]: l for l in spec["layers"]}
    units: dict[str, Unit] = {}
    members: dict[str, list[str]] = {}
    for name in order:
        layer = by_name[name]
        op = get_op(layer["op"])
        origin = origins.get(name)
        if origin is not None:
            members.setdefault(origin.instance, [])
            if origin.instance not in units:
                units[origin.instance] = Unit(origin.instance, "instance", ())
            if takes_device(op):
                members[origin.instance].append(name)
            continue
        if isinstance(op, WeightedLayer):
            units[name] = _layer_unit(spec, layer, most)
        elif takes_device(op):
            units[name] = Unit(name, "single", (name,), op.name)
    if not units:
        raise PlacementError("nothing to place: no layer of this network takes a device (conv, fc, add, a block)")
    out = []
    for name, u in units.items():
        if u.kind == "instance":
            u = Unit(name, "instance", tuple(members.get(name, ())))
        if not u.towers:
            raise PlacementError(f"layer {name}: an fc layer with connect: own and {u.count} groups needs "
                                 f"{u.count} devices, one per group")
        out.append(u)
    return out


def check_instances_movable(resolved: SpecMap, expanded: SpecMap, units: list[Unit]) -> None:
    """A block instance is moved by its `device:` key, which reaches only the layers that name no
    placement themselves: refuse a block whose template places some of its layers."""
    instance_device = {l["name"]: l.get(DEVICE.name) for l in resolved.get("layers", []) if isinstance(l, Mapping)}
    by_name = {l["name"]: l for l in expanded["layers"]}
    for u in units:
        if u.kind != "instance":
            continue
        given = instance_device.get(u.name)
        for name in u.layers:
            layer = by_name[name]
            dev = layer.get(DEVICE.name)
            placed = (layer.get(GROUPS.name) or {}).get("devices")
            if placed or (dev is not None and dev != given):
                raise PlacementError(f"block instance {u.name}: its block places layer {name} itself; alexnetc "
                                     "place moves whole instances only (remove the device from the block)")
