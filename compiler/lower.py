"""Lowering: a validated spec becomes a device-tagged symbolic graph, one node per group run.

Each layer's output is a *value*: its logical per-sample shape and the *parts* that hold it, a part
being one node output on one device covering a channel (or feature) range. A layer split into groups
places groups on devices; consecutive groups on the same device become one node (a grouped conv
when ``connect: own``), so the one-GPU spec with two groups on ``gpu0`` yields Caffe's ``group: 2``
convolution, while the two-GPU spec yields one node per tower. A group reads either its own slice of
the input channels (``connect: own``) or all of them (``connect: all``); slices and concatenations are
built where the parts do not line up, and the placement pass later turns edges between devices into
explicit copies. Shape-preserving layers (LRN, pooling, dropout, activations) run per part on the
part's device. LRN normalises within each group of the layer that produced its input (each tower's
maps, as in the paper's two-GPU net), wherever the groups are placed, so moving groups between
devices never changes the network's function.

Which strategy lowers a layer is the op's choice (`OpDef.lower`): `Lowerer.per_part` (the default) and
`weighted` (conv, fc) live here, with the helpers every lowering uses (`node`, `gather`); an op that
lowers otherwise does it in its descriptor (add, concat, flatten, the loss), which also supplies the
attributes. Shapes are checked while lowering, and every problem is collected as a SpecError at the
layer's line (the key a `ShapeError` names, else the layer's op).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .errors import Mark, ShapeError, SpecError
from .graph import Entry, Graph, Node, Shape
from .ops import get_op
from .ops.loss import is_aux
from .ops.registry import OpDef
from .ops.weighted import DEVICE, GROUPS, WeightedLayer, divide
from .ops.window import ROUNDING
from .source import SpecMap
from .symbol import Symbol, apply, var
from .validate import DEFAULT_DEVICES, layer_inputs


@dataclass
class Part:
    entry: Entry
    device: str | None
    lo: int
    hi: int
    groups: int = 1          # how many of the producing layer's groups this part holds (LRN stays within one)
    group: int | None = None  # the first of them (None: the layer is not grouped)


@dataclass
class Value:
    shape: Shape                 # per sample: (C, H, W) or (F,)
    parts: list[Part]


@dataclass
class LayerInfo:
    """What the report needs about one spec layer."""

    name: str
    op: str
    mark: Mark | None
    outputs: list[tuple[str, str | None, Shape]] = field(default_factory=list)  # (node, device, shape/sample)
    groups: list[int] = field(default_factory=list)  # how many of the layer's groups each output holds
    shape: Shape = ()


@dataclass
class Lowered:
    graph: Graph
    layers: list[LayerInfo]
    errors: list[SpecError]


class Lowerer:
    """Lowers one spec; the strategies below are what `OpDef.lower` implementations call."""

    def __init__(self, spec: SpecMap, skip: frozenset[str] | None = None):
        self.spec = spec
        self.partial = skip is not None  # collecting shape errors next to semantic ones already reported
        self.skip = skip or frozenset()
        self.devices = list(spec.get("devices") or DEFAULT_DEVICES)
        # What a layer's attribute defaults may depend on: the spec's `defaults:` and its `rounding`.
        self.defaults: dict[str, Any] = {**(spec.get("defaults") or {}),
                                         ROUNDING.name: spec.get(ROUNDING.name, "floor")}
        self.errors: list[SpecError] = []
        self.shapes: dict[int, tuple[Shape, ...]] = {}
        self.values: dict[str, Value | None] = {}
        self.infos: list[LayerInfo] = []
        self.slice_count = 0

    # -- helpers ---------------------------------------------------------------------------------------
    def shape_of(self, e: Entry) -> Shape:
        return self.shapes[id(e.node)][e.index]

    def node(self, op: str, inputs: list[Entry], *, name: str, device: str | None, layer: SpecMap,
             group: int | None = None, param_attrs: dict | None = None, **attrs: Any) -> Node:
        """Create a node and infer its shapes now (batch 1), so errors surface at the layer's line."""
        sym = apply(op, [Symbol([e]) for e in inputs], name=name, device=device, layer=layer["name"],
                    mark=layer.mark, group=group, param_attrs=param_attrs, **attrs)
        node = sym.node
        in_shapes = [self.shapes[id(e.node)][e.index] if id(e.node) in self.shapes else None
                     for e in node.inputs]
        full_in, outs = get_op(op).infer(node.attrs, in_shapes)
        for e, s in zip(node.inputs, full_in):
            self.shapes.setdefault(id(e.node), (tuple(s),))
        self.shapes[id(node)] = tuple(tuple(s) for s in outs)
        return node

    def gather(self, value: Value, lo: int, hi: int, device: str | None, layer: SpecMap, name: str) -> Entry:
        """One entry holding [lo, hi) of `value`'s channels, for a consumer on `device`."""
        pieces = []
        for part in value.parts:
            a, b = max(lo, part.lo), min(hi, part.hi)
            if a >= b:
                continue
            if (a, b) == (part.lo, part.hi):
                pieces.append(part.entry)
            else:
                self.slice_count += 1
                node = self.node("slice", [part.entry], name=f"{name}_slice{self.slice_count}",
                                 device=part.device or device, layer=layer, group=part.group,
                                 begin=a - part.lo, end=b - part.lo)
                pieces.append(Entry(node, 0))
        if len(pieces) == 1:
            return pieces[0]
        return Entry(self.node("concat", pieces, name=f"{name}_concat", device=device, layer=layer), 0)

    def group_runs(self, layer: SpecMap) -> list[tuple[int, int, str]]:
        """(first group, last group, device) for each run of consecutive groups on one device."""
        groups = layer.get(GROUPS.name) or {}
        count = groups.get("count", 1)
        default = layer.get(DEVICE.name) or self.devices[0]
        devs = list(groups.get("devices") or [default] * count)
        runs: list[tuple[int, int, str]] = []
        for g, d in enumerate(devs):
            if runs and runs[-1][2] == d:
                runs[-1] = (runs[-1][0], g, d)
            else:
                runs.append((g, g, d))
        return runs

    # -- strategies ------------------------------------------------------------------------------------
    def per_part(self, op: OpDef, layer: SpecMap, value: Value, attrs: Mapping[str, Any]) -> Value:
        """One node per part of the input, on the part's device (shape-preserving layers)."""
        name = layer["name"]
        if op.maps_only and len(value.shape) != 3:
            raise ShapeError(f"{op.name} needs feature maps (C, H, W) but its input has shape {value.shape}")
        parts, shape = [], value.shape
        variables = op.variable_attrs(layer, self.defaults)
        for k, part in enumerate(value.parts):
            nm = name if len(value.parts) == 1 else f"{name}_g{k}"
            node = self.node(op.name, [part.entry], name=nm, device=part.device or self.devices[0], layer=layer,
                             group=part.group, param_attrs=variables, **attrs, **op.part_attrs(nm, part.groups))
            out = self.shape_of(Entry(node, 0))
            parts.append(Part(Entry(node, 0), node.device, part.lo, part.hi, part.groups, part.group))
            shape = (shape[0], *out[2:])
        return Value(shape, parts)

    def weighted(self, op: WeightedLayer, layer: SpecMap, value: Value) -> Value:
        """conv / fc: one node per run of consecutive groups on one device, with its parameters."""
        name = layer["name"]
        groups = layer.get(GROUPS.name) or {}
        count = groups.get("count", 1)
        connect = groups.get("connect", "own")
        value = op.prepare_input(self, layer, value)
        total, c = layer[op.out_attr], value.shape[0]
        per_out = divide(total, count, op.out_attr)
        if connect == "own" and c % count:
            raise ShapeError(f"the input's {c} channels are not divisible into {count} groups "
                             f"(connect: own gives each group its own slice)", key=GROUPS.name)
        per_in = c // count
        attrs = op.node_attrs(layer, self.defaults)
        pattrs = op.param_attrs(layer, self.defaults)
        runs = self.group_runs(layer)
        parts, shape = [], None
        for first, last, dev in runs:
            r = last - first + 1
            nm = name if len(runs) == 1 else f"{name}_g{first}"
            lo, hi = (first * per_in, (last + 1) * per_in) if connect == "own" else (0, c)
            x = self.gather(value, lo, hi, dev, layer, nm)
            group = first if count > 1 else None
            node = self.node(op.name, [x], name=nm, device=dev, layer=layer, group=group, param_attrs=pattrs,
                             **op.run_attrs(attrs, per_out * r, r, connect))
            out = self.shape_of(Entry(node, 0))
            shape = (total, *out[2:])
            parts.append(Part(Entry(node, 0), dev, first * per_out, (last + 1) * per_out, r, group))
        return Value(shape, parts)

    # -- driver ----------------------------------------------------------------------------------------
    def error_mark(self, layer: SpecMap, exc: ShapeError) -> Mark:
        """Where a layer's shape error points: the first key it names that the layer writes, else its op."""
        for key in exc.keys:
            if key in layer:
                return layer.value_mark(key)
        return layer.value_mark("op") if "op" in layer else layer.mark

    def run(self) -> Lowered:
        spec = self.spec
        inp = spec["input"]
        data = var("data", role="data")
        self.label = var("label", role="label").outputs[0]
        self.shapes[id(data.node)] = ((1, inp["channels"], inp["height"], inp["width"]),)
        self.shapes[id(self.label.node)] = ((1,),)
        self.values["data"] = Value((inp["channels"], inp["height"], inp["width"]),
                                    [Part(data.outputs[0], None, 0, inp["channels"])])
        layers = spec["layers"]
        heads: list[list[Entry]] = []   # each loss head's visible outputs, the main head first
        for i in _topological(spec):
            layer = layers[i]
            refs = [r for r, _ in layer_inputs(spec, i)]
            ins = [self.values.get(r) for r in refs]
            info = LayerInfo(layer["name"], layer["op"], layer.value_mark("name"))
            self.infos.append(info)
            if layer["name"] in self.skip or any(v is None for v in ins):
                self.values[layer["name"]] = None  # an input failed: reported there, don't cascade
                continue
            op = get_op(layer["op"])
            try:
                value = op.lower(self, layer, ins)
            except ShapeError as exc:
                self.errors.append(SpecError(self.error_mark(layer, exc), exc.reason, layer["name"]))
                self.values[layer["name"]] = None
                continue
            self.values[layer["name"]] = value
            info.shape = value.shape
            for part in value.parts:
                info.outputs.append((part.entry.node.name, part.device, self.shape_of(part.entry)[1:]))
                info.groups.append(part.groups)
            if op.role == "loss":
                node = value.parts[0].entry.node
                entries = [Entry(node, k) for k in range(op.visible)]
                heads.insert(len(heads) if is_aux(node) else 0, entries)
        loss_entries = [e for head in heads for e in head]
        if not loss_entries and not self.errors and not self.partial:
            self.errors.append(SpecError(spec.mark, "the network has no softmax_loss layer"))
        return Lowered(Graph(tuple(loss_entries)), self.infos, self.errors)


def _topological(spec: SpecMap) -> list[int]:
    """Layer indices, inputs first, ties in file order (validation has ruled out cycles)."""
    layers = spec["layers"]
    index = {l["name"]: i for i, l in enumerate(layers)}
    deps = {i: [index[r] for r, _ in layer_inputs(spec, i) if r in index] for i in range(len(layers))}
    done: list[int] = []
    seen: set[int] = set()

    def visit(i: int, stack: frozenset) -> None:
        if i in seen or i in stack:
            return
        for d in deps[i]:
            visit(d, stack | {i})
        seen.add(i)
        done.append(i)

    for i in range(len(layers)):
        visit(i, frozenset())
    return done


def lower(spec: SpecMap, skip: Iterable[str] | None = None) -> Lowered:
    """Lower a validated spec. `skip`: layers already reported as wrong (they and their dependents are
    left out), so a spec's shape errors can be reported together with its semantic ones."""
    return Lowerer(spec, None if skip is None else frozenset(skip)).run()
