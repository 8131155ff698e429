"""Lowering: a validated spec becomes a device-tagged symbolic graph, one node per group run.

Each layer's output is a *value*: its logical per-sample shape and the *parts* that hold it, a part
being one node output on one device covering a channel (or feature) range. A layer split into groups
places groups on devices; consecutive groups on the same device become one node (a grouped conv
when ``connect: own``), so the one-GPU spec with two groups on ``gpu0`` yields Caffe's ``group: 2``
convolution, while the two-GPU spec yields one node per tower. A group reads either its own slice of
the input channels (``connect: own``) or all of them (``connect: all``); slices and concatenations are
built where the parts do not line up, and the placement pass later turns edges between devices into
explicit copies. Shape-preserving layers (LRN, pooling, dropout, activations, flatten) run per part on
the part's device. LRN normalises within each group of the layer that produced its input (each
tower's maps, as in the paper's two-GPU net), wherever the groups are placed, so moving groups
between devices never changes the network's function.

Shapes are checked while lowering, and every problem is collected as a SpecError at the layer's line.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Iterable

from .errors import Mark, ShapeError, SpecError
from .graph import Entry, Graph, Node, Shape
from .ops import get_op
from .ops.registry import pair
from .source import SpecMap
from .symbol import Symbol, apply, var
from .validate import DEFAULT_DEVICES, layer_inputs

DEFAULT_WEIGHT_INIT = {"type": "gaussian", "std": 0.01}  # the paper: N(0, 0.01)
DEFAULT_BIAS_INIT = {"type": "constant", "value": 0}
PER_PART_OPS = ("lrn", "maxpool", "avgpool", "dropout", "relu", "tanh", "sigmoid", "flatten")


@dataclass
class Part:
    entry: Entry
    device: str | None
    lo: int
    hi: int
    groups: int = 1   # how many of the producing layer's groups this part holds (LRN stays within one)


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


def _init(value) -> dict:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"type": "constant", "value": float(value)}
    return {k: v for k, v in dict(value).items()}


def _mult(value) -> tuple[float, float]:
    if value is None:
        return 1.0, 1.0
    if isinstance(value, (int, float)):
        return float(value), float(value)
    return float(value.get("weight", 1.0)), float(value.get("bias", 1.0))


class _Lowerer:
    def __init__(self, spec: SpecMap, skip: frozenset[str] | None = None):
        self.spec = spec
        self.partial = skip is not None  # collecting shape errors next to semantic ones already reported
        self.skip = skip or frozenset()
        self.devices = list(spec.get("devices") or DEFAULT_DEVICES)
        self.defaults = spec.get("defaults") or {}
        self.rounding = spec.get("rounding", "floor")
        self.errors: list[SpecError] = []
        self.shapes: dict[int, tuple[Shape, ...]] = {}
        self.values: dict[str, Value | None] = {}
        self.infos: list[LayerInfo] = []
        self.slice_count = 0

    # -- helpers ---------------------------------------------------------------------------------------
    def shape_of(self, e: Entry) -> Shape:
        return self.shapes[id(e.node)][e.index]

    def node(self, op: str, inputs: list[Entry], *, name: str, device: str | None, layer: SpecMap,
             params: dict | None = None, param_attrs: dict | None = None, **attrs) -> Node:
        """Create a node and infer its shapes now (batch 1), so errors surface at the layer's line."""
        sym = apply(op, [Symbol([e]) for e in inputs], name=name, device=device, layer=layer["name"],
                    mark=layer.mark, params=params, param_attrs=param_attrs, **attrs)
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
                                 device=part.device or device, layer=layer, begin=a - part.lo, end=b - part.lo)
                pieces.append(Entry(node, 0))
        if len(pieces) == 1:
            return pieces[0]
        return Entry(self.node("concat", pieces, name=f"{name}_concat", device=device, layer=layer), 0)

    def group_runs(self, layer: SpecMap) -> list[tuple[int, int, str]]:
        """(first group, last group, device) for each run of consecutive groups on one device."""
        groups = layer.get("groups") or {}
        count = groups.get("count", 1)
        default = layer.get("device") or self.devices[0]
        devs = list(groups.get("devices") or [default] * count)
        runs: list[tuple[int, int, str]] = []
        for g, d in enumerate(devs):
            if runs and runs[-1][2] == d:
                runs[-1] = (runs[-1][0], g, d)
            else:
                runs.append((g, g, d))
        return runs

    def param_attrs(self, layer: SpecMap) -> dict:
        d = self.defaults
        wl, bl = _mult(layer.get("lr_mult", d.get("lr_mult")))
        wd, bd = _mult(layer.get("decay_mult", d.get("decay_mult")))
        return {
            "weight": {"init": _init(layer.get("weight_init", d.get("weight_init", DEFAULT_WEIGHT_INIT))),
                       "lr_mult": wl, "decay_mult": wd},
            "bias": {"init": _init(layer.get("bias_init", d.get("bias_init", DEFAULT_BIAS_INIT))),
                     "lr_mult": bl, "decay_mult": bd},
        }

    def flatten_value(self, value: Value, layer: SpecMap, name: str) -> Value:
        if len(value.shape) == 1:
            return value
        c = value.shape[0]
        per = math.prod(value.shape[1:])
        parts = []
        for k, part in enumerate(value.parts):
            nm = name if len(value.parts) == 1 else f"{name}_g{k}"
            node = self.node("flatten", [part.entry], name=nm, device=part.device or self.devices[0], layer=layer)
            parts.append(Part(Entry(node, 0), node.device, part.lo * per, part.hi * per, part.groups))
        return Value((c * per,), parts)

    # -- layers ----------------------------------------------------------------------------------------
    def lower_layer(self, layer: SpecMap, inputs: list[Value]) -> Value:
        op, name = layer["op"], layer["name"]
        act = layer.get("act", self.defaults.get("act", "none"))
        if op == "concat":
            first = inputs[0]
            parts, offset = [], 0
            for v in inputs:
                if v.shape[1:] != first.shape[1:] or len(v.shape) != len(first.shape):
                    raise ShapeError(f"concat inputs differ outside the channel axis: {first.shape} vs {v.shape}")
                parts += [Part(p.entry, p.device, p.lo + offset, p.hi + offset, p.groups) for p in v.parts]
                offset += v.shape[0]
            return Value((offset, *first.shape[1:]), parts)
        value = inputs[0]
        if op == "flatten":
            return self.flatten_value(value, layer, name)
        if op in PER_PART_OPS:
            if len(value.shape) != 3 and op in ("lrn", "maxpool", "avgpool"):
                raise ShapeError(f"{op} needs feature maps (C, H, W) but its input has shape {value.shape}")
            attrs: dict = {}
            if op == "lrn":
                attrs = {k: layer[k] for k in ("size", "k", "alpha", "beta", "alpha_over_n")}
            elif op in ("maxpool", "avgpool"):
                attrs = {"kernel": pair(layer["kernel"]), "stride": pair(layer.get("stride", layer["kernel"])),
                         "pad": pair(layer.get("pad", 0)), "rounding": layer.get("rounding", self.rounding)}
            elif op == "dropout":
                attrs = {"p": float(layer["p"])}
            parts, shape = [], value.shape
            for k, part in enumerate(value.parts):
                nm = name if len(value.parts) == 1 else f"{name}_g{k}"
                a = dict(attrs)
                if op == "lrn":
                    a["groups"] = part.groups
                if op == "dropout":
                    a["seed_offset"] = zlib.crc32(nm.encode())  # a stable, per-node RNG stream
                node = self.node(op, [part.entry], name=nm, device=part.device or self.devices[0], layer=layer, **a)
                out = self.shape_of(Entry(node, 0))
                parts.append(Part(Entry(node, 0), node.device, part.lo, part.hi, part.groups))
                shape = (shape[0], *out[2:])
            return Value(shape, parts)
        if op == "softmax_loss":
            if len(value.shape) != 1:
                value = self.flatten_value(value, layer, f"{name}_flatten")
            classes = self.spec["classes"]
            if value.shape[0] != classes:
                raise ShapeError(f"the scores reaching the loss have {value.shape[0]} features but the spec "
                                 f"has classes: {classes}")
            dev = value.parts[0].device or self.devices[0]
            scores = self.gather(value, 0, value.shape[0], dev, layer, name)
            node = self.node("softmax_loss", [scores, self.label], name=name, device=dev, layer=layer)
            return Value((classes,), [Part(Entry(node, 1), dev, 0, classes)])
        if op in ("conv", "fc"):
            return self.lower_param_layer(layer, value, act)
        raise ShapeError(f"op '{op}' cannot be lowered")  # unreachable after schema validation

    def lower_param_layer(self, layer: SpecMap, value: Value, act: str) -> Value:
        op, name = layer["op"], layer["name"]
        groups = layer.get("groups") or {}
        count = groups.get("count", 1)
        connect = groups.get("connect", "own")
        if op == "fc":
            value = self.flatten_value(value, layer, f"{name}_flatten")
            if "in_features" in layer and layer["in_features"] != value.shape[0]:
                raise ShapeError(f"in_features is {layer['in_features']} but the input has {value.shape[0]} "
                                 f"features")
            total = layer["units"]
        else:
            if len(value.shape) != 3:
                raise ShapeError(f"conv needs feature maps (C, H, W) but its input has shape {value.shape}")
            total = layer["filters"]
        c = value.shape[0]
        what = "units" if op == "fc" else "filters"
        if total % count:
            raise ShapeError(f"{total} {what} are not divisible into {count} groups")
        if connect == "own" and c % count:
            raise ShapeError(f"the input's {c} channels are not divisible into {count} groups "
                             f"(connect: own gives each group its own slice)")
        per_out, per_in = total // count, c // count
        pattrs = self.param_attrs(layer)
        runs = self.group_runs(layer)
        parts, shape = [], None
        for first, last, dev in runs:
            r = last - first + 1
            nm = name if len(runs) == 1 else f"{name}_g{first}"
            lo, hi = (first * per_in, (last + 1) * per_in) if connect == "own" else (0, c)
            x = self.gather(value, lo, hi, dev, layer, nm)
            common = dict(name=nm, device=dev, layer=layer, param_attrs=pattrs, act=act,
                          no_bias=not layer.get("bias", True))
            if op == "conv":
                node = self.node("conv", [x], filters=per_out * r, kernel=pair(layer["kernel"]),
                                 stride=pair(layer.get("stride", 1)), pad=pair(layer.get("pad", 0)),
                                 num_group=r if connect == "own" else 1,
                                 rounding=layer.get("rounding", self.rounding), **common)
            else:
                if connect == "own" and r > 1:
                    raise ShapeError("fc with connect: own needs one group per device run; give each group "
                                     "its own device or use connect: all")
                node = self.node("fc", [x], units=per_out * r, **common)
            out = self.shape_of(Entry(node, 0))
            shape = (total, *out[2:])
            parts.append(Part(Entry(node, 0), dev, first * per_out, (last + 1) * per_out, r))
        return Value(shape, parts)

    # -- driver ----------------------------------------------------------------------------------------
    def error_mark(self, layer: SpecMap, reason: str) -> Mark:
        for key, words in (("in_features", ("in_features",)), ("groups", ("groups", "group")),
                           ("kernel", ("window", "output size", "fractional", "padding")),
                           ("filters", ("filters",)), ("units", ("units",)), ("inputs", ("concat",))):
            if key in layer and any(w in reason for w in words):
                return layer.value_mark(key)
        return layer.value_mark("op") if "op" in layer else layer.mark

    def run(self) -> Lowered:
        spec = self.spec
        inp = spec["input"]
        data = var("data", kind="input")
        self.label = var("label", kind="label").outputs[0]
        self.shapes[id(data.node)] = ((1, inp["channels"], inp["height"], inp["width"]),)
        self.shapes[id(self.label.node)] = ((1,),)
        self.values["data"] = Value((inp["channels"], inp["height"], inp["width"]),
                                    [Part(data.outputs[0], None, 0, inp["channels"])])
        layers = spec["layers"]
        order = _topological(spec)
        loss_entries: list[Entry] = []
        for i in order:
            layer = layers[i]
            refs = [r for r, _ in layer_inputs(spec, i)]
            ins = [self.values.get(r) for r in refs]
            info = LayerInfo(layer["name"], layer["op"], layer.value_mark("name"))
            self.infos.append(info)
            if layer["name"] in self.skip or any(v is None for v in ins):
                self.values[layer["name"]] = None  # an input failed: reported there, don't cascade
                continue
            try:
                value = self.lower_layer(layer, ins)
            except ShapeError as exc:
                self.errors.append(SpecError(self.error_mark(layer, exc.reason), exc.reason, layer["name"]))
                self.values[layer["name"]] = None
                continue
            self.values[layer["name"]] = value
            info.shape = value.shape
            for part in value.parts:
                info.outputs.append((part.entry.node.name, part.device, self.shape_of(part.entry)[1:]))
                info.groups.append(part.groups)
            if layer["op"] == "softmax_loss":
                node = value.parts[0].entry.node
                loss_entries = [Entry(node, 0), Entry(node, 1)]
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
    return _Lowerer(spec, None if skip is None else frozenset(skip)).run()
