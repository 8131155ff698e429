"""Placement-independent parameter names: the logical <-> placed mapping, as pure functions of a graph.

A placed parameter is a graph variable of one node run (``conv1_g0_weight``: tower 0 of conv1 on
gpu0). Its *logical* parameter is the whole layer's (``conv1.weight``, 96x3x11x11 in alexnet.yaml
whatever its groups and devices): the layer's node runs' parameters joined along axis 0 in group
order, the order of the layer's output channels. That is how both placements of one network agree:
tower i's kernels are rows i*K/g .. (i+1)*K/g of the one-device grouped conv's weight (whose shape
is the same (K, C/g, kh, kw)), and an fc tower's units are the matching rows of the whole layer's.

`param_layout(graph)` derives the mapping from the forward graph's nodes (`layer`, `group`, the op's
argument names, shapes); `to_logical` joins (saving), `to_placed` splits (binding), and also accepts
the placed names of the same graph or, given the graph they were saved from, of another placement
(checkpoints written before names were logical). A spec that does not fit is refused naming the first
layer that differs and both shapes. Variables that belong to no layer (symbols composed by hand)
keep their names. State variables (batch norm's running statistics, role "state") follow the same
rules under ``role="state"`` (``bn1.running_mean``), kept apart from the parameters so that SGD and
the parameter counts never see them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from ...compiler.graph import Graph, Shape
from ...compiler.ops import get_op
from ...compiler.ops.weighted import DEVICE, GROUPS
from ...compiler.pipeline import plain, spec_hash
from .optim import STATE_PREFIXES

# Checkpoint tensor groups keyed by variable name, and the role of the variables they belong to: the
# weights (training.checkpoint.PARAM_PREFIX), the optimisers' per-parameter state (SGD's velocity,
# AdamW's moments: optim.STATE_PREFIXES) and the state ops update themselves
# (training.checkpoint.STATE_PREFIX: batch norm's running statistics).
NAMED_GROUPS = {"param/": "param", **{p: "param" for p in STATE_PREFIXES}, "state/": "state"}


class LayoutError(ValueError):
    """Parameters that do not fit a graph: one line naming the first layer that differs."""


@dataclass(frozen=True)
class LogicalParam:
    """One logical parameter: its name, layer and joined shape, and the placed pieces it splits into
    (placed name and shape, in group order, each a block of rows along axis 0)."""

    name: str
    layer: str | None
    argument: str                 # the op's argument it is (weight, bias), its variable name without a layer
    shape: Shape
    pieces: tuple[tuple[str, Shape], ...]


def logical_name(layer: str, argument: str) -> str:
    return f"{layer}.{argument}"


def param_layout(graph: Graph, role: str = "param") -> list[LogicalParam]:
    """The logical parameters (or, with role="state", state variables) of a forward graph, in the
    order its nodes first read them."""
    found: dict[str, tuple[str | None, str, list[tuple[int, str, Shape]]]] = {}
    seen: set[str] = set()
    for node in graph.nodes():
        if node.is_variable or not node.inputs:
            continue
        op = get_op(node.op)
        args = op.arguments_for(node.attrs) if op.arguments is not None else ()
        for e, arg in zip(node.inputs, args):
            v = e.node
            if not v.is_variable or v.role != role or v.name in seen:
                continue
            seen.add(v.name)
            name = logical_name(node.layer, arg) if node.layer else v.name
            found.setdefault(name, (node.layer, arg if node.layer else v.name, []))[2].append(
                (node.group or 0, v.name, tuple(v.shapes[0])))
    out = []
    for name, (layer, argument, pieces) in found.items():
        pieces.sort(key=lambda p: p[0])
        shapes = [s for _, _, s in pieces]
        if len(pieces) > 1 and any(len(s) == 0 or s[1:] != shapes[0][1:] for s in shapes):
            raise LayoutError(f"layer {layer}: parameter pieces {[n for _, n, _ in pieces]} have shapes {shapes} "
                              "that do not join along axis 0")
        joined = (sum(s[0] for s in shapes), *shapes[0][1:]) if len(pieces) > 1 else shapes[0]
        out.append(LogicalParam(name, layer, argument, tuple(joined), tuple((n, s) for _, n, s in pieces)))
    return out


def placed_names(layout: Sequence[LogicalParam]) -> list[str]:
    return [n for lp in layout for n, _ in lp.pieces]


def to_logical(params: Mapping[str, Any], graph: Graph, role: str = "param") -> dict[str, Any]:
    """Placed parameters (or state) of `graph` (name -> tensor) joined into logical ones; other entries
    are dropped."""
    out = {}
    for lp in param_layout(graph, role):
        parts = [params[n] for n, _ in lp.pieces]
        out[lp.name] = parts[0] if len(parts) == 1 else torch.cat([p.to(parts[0].device) for p in parts], 0)
    return out


def _split(logical: Mapping[str, Any], layout: Sequence[LogicalParam]) -> dict[str, Any]:
    out = {}
    for lp in layout:
        t, row = logical[lp.name], 0
        for name, shape in lp.pieces:
            out[name] = t if len(lp.pieces) == 1 else t.narrow(0, row, shape[0])
            row += shape[0]
    return out


def _check(logical: Mapping[str, Any], layout: Sequence[LogicalParam], source: str, target: str,
           role: str = "param") -> None:
    """Refuse, naming the first layer that differs (and both shapes), parameters that do not fit."""
    wanted = {lp.name for lp in layout}
    what = "parameter" if role == "param" else "state tensor"
    for lp in layout:
        if lp.name not in logical:
            raise LayoutError(f"{source} has no {what} {lp.name} for layer {lp.layer} of {target} "
                              f"(shape {tuple(lp.shape)})")
        shape = tuple(logical[lp.name].shape)
        if shape != tuple(lp.shape):
            raise LayoutError(f"{source} does not fit {target}: layer {lp.layer}: {lp.name} is {shape} there, "
                              f"{tuple(lp.shape)} in {target}")
    extra = [n for n in logical if n not in wanted]
    if extra:
        raise LayoutError(f"{source} has {what}s that {target} lacks: {', '.join(extra[:3])}"
                          f"{' ...' if len(extra) > 3 else ''}")


def to_placed(params: Mapping[str, Any], graph: Graph, *, saved_graph: Graph | None = None,
              source: str = "the parameters", target: str = "this network", role: str = "param") -> dict[str, Any]:
    """`graph`'s placed parameters from logical ones, from `graph`'s own placed names, or from the
    placed names of `saved_graph` (another placement of the same network). Raises LayoutError."""
    layout = param_layout(graph, role)
    logical = as_logical(params, graph, saved_graph=saved_graph, role=role)
    _check(logical, layout, source, target, role)
    return _split(logical, layout)


def as_logical(params: Mapping[str, Any], graph: Graph, *, saved_graph: Graph | None = None,
               role: str = "param") -> dict[str, Any]:
    """Parameters (or state) under logical names: given in `graph`'s placed names, in those of
    `saved_graph` (an old-layout checkpoint of another placement of the network), or already logical."""
    names = set(params)
    if names == set(placed_names(param_layout(graph, role))):
        return to_logical(params, graph, role)
    if saved_graph is not None and names and names == set(placed_names(param_layout(saved_graph, role))):
        return to_logical(params, saved_graph, role)
    return dict(params)


def bind_params(params: Mapping[str, Any], graph: Graph, role: str = "param") -> dict[str, Any]:
    """What an executor binds: `graph`'s placed names pass through (any subset, the rest initialised
    by the caller); anything else is taken as logical names and split (all of them, checked)."""
    if set(params) <= set(placed_names(param_layout(graph, role))):
        return dict(params)
    return to_placed(params, graph, role=role)


def map_named_groups(tensors: Mapping[str, Any],
                     fn: Callable[[dict[str, Any], str], dict[str, Any]]) -> dict[str, Any]:
    """Apply `fn(group, role)` to each named group of checkpoint tensors (``param/...``,
    ``momentum/...``, ``state/...``, names without the prefix); other tensors (RNG states) pass through."""
    out = {k: v for k, v in tensors.items() if not k.startswith(tuple(NAMED_GROUPS))}
    for prefix, role in NAMED_GROUPS.items():
        group = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if group:
            out.update({prefix + k: v for k, v in fn(group, role).items()})
    return out


def logical_tensors(tensors: Mapping[str, Any], graph: Graph) -> dict[str, Any]:
    """Checkpoint tensors with parameters and their momentum under logical names (saving joins)."""
    return map_named_groups(tensors, lambda g, role: to_logical(g, graph, role))


def placed_tensors(tensors: Mapping[str, Any], graph: Graph, *, saved_graph: Graph | None = None,
                   source: str = "the checkpoint", target: str = "this network") -> dict[str, Any]:
    """Checkpoint tensors with parameters and momentum under `graph`'s placed names (loading splits);
    old-layout checkpoints are converted through `saved_graph`, the graph they were saved from."""
    return map_named_groups(tensors, lambda g, role: to_placed(g, graph, saved_graph=saved_graph, source=source,
                                                               target=target, role=role))


def network_hash(spec: Mapping[str, Any]) -> str:
    """A spec's hash without what only places it (devices, groups' devices, a layer's device) or names
    it: two specs with the same network_hash compute the same function with the same parameters."""
    s = plain(spec)
    for key in ("devices", "name", "description"):
        s.pop(key, None)
    for layer in s.get("layers") or []:
        layer.pop(DEVICE.name, None)
        if isinstance(layer.get(GROUPS.name), dict):
            layer[GROUPS.name].pop("devices", None)
    return spec_hash(s)
