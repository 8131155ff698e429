"""The compiler driver: spec file -> resolved (variants) -> expanded (blocks) -> classifiers sized for
`classes` (classifier) -> validated spec -> lowered graph -> passes. Pure Python (no torch).

    net = compile_spec("specs/alexnet.yaml", batch=128)
    net.graph          # forward graph: shapes at batch 128, devices placed, copy nodes inserted
    net.training()     # Program: + gradient nodes, which output is which gradient, memory plan
    net.inference()    # Program: the forward graph with its own memory plan
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from typing import Any

from .blocks import expand, locate_errors
from .classifier import base_classes, follow_classes
from .errors import ShapeError, SpecError, SpecErrors
from .graph import Graph
from .lower import LayerInfo, lower
from .passes import absorbed_into, fuse_activations, fuse_residual_adds, gradient, infer_shapes, place_devices, plan_memory
from .program import MAIN_HEAD_OUTPUTS, TRAIN_DTYPES, Program
from .source import SpecMap
from .validate import DEFAULT_DEVICES, schema_errors, semantic_errors
from .variants import resolve


def load_spec(path: str | os.PathLike) -> SpecMap:
    """Read a spec file, follow `base:`, expand blocks, resize the classifiers a variant's `classes`
    changes, validate; raise SpecErrors with every problem found."""
    resolved = resolve(str(path))
    return validate_spec(follow_classes(expand(resolved), base_classes(resolved)))


def validate_spec(spec: SpecMap) -> SpecMap:
    """Schema and semantic checks of a resolved, expanded spec; raise SpecErrors with every problem found
    (an error in a layer that came from a block instance also names the instance)."""
    try:
        return _validate(spec)
    except SpecErrors as exc:
        raise SpecErrors(locate_errors(exc.errors, getattr(spec, "origins", {}))) from None


def _validate(spec: SpecMap) -> SpecMap:
    errors = schema_errors(spec)
    if errors:
        raise SpecErrors(errors + semantic_errors(spec))
    errors = semantic_errors(spec)
    if errors:  # add the shape errors of the layers that are otherwise fine: all reported together
        raise SpecErrors(errors + lower(spec, skip={e.layer for e in errors if e.layer}).errors)
    return spec


def plain(value: Any) -> Any:
    """The spec as plain JSON data (no source marks)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def spec_hash(spec: SpecMap) -> str:
    return hashlib.sha256(json.dumps(plain(spec), sort_keys=True).encode()).hexdigest()


@dataclass
class CompiledNet:
    spec: SpecMap
    source: str
    graph: Graph                     # forward, placed, shapes at `batch`
    layers: list[LayerInfo]
    batch: int
    _programs: dict[str, Program] = field(default_factory=dict, repr=False)
    dtype_override: str | None = None   # `alexnetc compile --dtype`: plan in another train.dtype

    @property
    def name(self) -> str:
        return self.spec.get("name") or os.path.splitext(os.path.basename(self.source))[0]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        i = self.spec["input"]
        return (i["channels"], i["height"], i["width"])

    @property
    def classes(self) -> int:
        return self.spec["classes"]

    @property
    def devices(self) -> list[str]:
        return list(self.spec.get("devices") or DEFAULT_DEVICES)

    @property
    def hash(self) -> str:
        return spec_hash(self.spec)

    @property
    def dtype(self) -> str:
        """The spec's train.dtype (float32 when it names none), or the override: what the memory plans
        and the report count bytes in."""
        return self.dtype_override or self.settings("train").get("dtype") or TRAIN_DTYPES[0]

    def with_dtype(self, dtype: str | None) -> "CompiledNet":
        """This net planned in `dtype` (one of TRAIN_DTYPES; None: as the spec says)."""
        if dtype is not None and dtype not in TRAIN_DTYPES:
            raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(TRAIN_DTYPES)}")
        if dtype is None or dtype == self.dtype:
            return self
        return CompiledNet(self.spec, self.source, self.graph, self.layers, self.batch, dtype_override=dtype)

    def settings(self, section: str) -> dict:
        return plain(self.spec.get(section) or {})

    def at_batch(self, batch: int) -> "CompiledNet":
        if batch == self.batch:
            return self
        g = infer_shapes(_strip_shapes(self.graph), data=(batch, *self.input_shape), label=(batch,))
        return CompiledNet(self.spec, self.source, g, self.layers, batch, dtype_override=self.dtype_override)

    def training_problems(self, batch: int) -> list[str]:
        """'layer NAME: why' for each layer that cannot learn in a training forward of `batch` images (one
        process's share under data parallelism): each op's `training_problem`, once per layer."""
        from .ops import get_op

        net = self.at_batch(batch)
        out: dict[str, str] = {}
        for node in net.graph.nodes():
            if node.is_variable or node.layer in out:
                continue
            why = get_op(node.op).training_problem(node.attrs, [e.node.shapes[e.index] for e in node.inputs])
            if why:
                out[node.layer] = f"layer {node.layer}: {why}"
        return list(out.values())

    def training(self) -> Program:
        """Forward + backward graph (gradient pass) with its memory plan, at this batch size."""
        if "training" not in self._programs:
            program = gradient(self.graph)
            self._programs["training"] = replace(program, memory=plan_memory(program.graph, self.dtype))
        return self._programs["training"]

    def inference(self) -> Program:
        """The forward graph of the main head alone (auxiliary loss heads and the layers only they read
        are dropped), with its own memory plan (activations freed after their last use)."""
        if "inference" not in self._programs:
            main = Graph(tuple(self.graph.outputs[:MAIN_HEAD_OUTPUTS]), dict(self.graph.attrs))
            self._programs["inference"] = Program(main, MAIN_HEAD_OUTPUTS, (), plan_memory(main, self.dtype))
        return self._programs["inference"]


def _strip_shapes(graph: Graph) -> Graph:
    return graph.rewrite(lambda node, inputs: node.with_(inputs=inputs, shapes=None))


def _name_clashes(graph: Graph, spec: SpecMap) -> list[SpecError]:
    """Node names must be unique (parameters are found by name): a layer named like a node the compiler
    generates for another layer (``conv1_g0``, ``fc6_weight`` ...) is an error at that layer's name."""
    by_name: dict[str, list] = {}
    for n in graph.nodes():
        by_name.setdefault(n.name, []).append(n)
    marks = {l["name"]: l.value_mark("name") for l in spec["layers"]}
    clashes: dict[tuple[str, str], list[str]] = {}
    for name, nodes in by_name.items():
        layers = sorted({n.layer for n in nodes if n.layer}, key=lambda l: (marks[l].line, marks[l].col))
        if len(nodes) < 2 or len(layers) < 2:
            continue
        # The layer whose own name is a prefix of the clash generated it; the other one is renamed.
        source = next((l for l in layers if name.startswith(l + "_")), layers[0])
        victim = next(l for l in reversed(layers) if l != source)
        clashes.setdefault((victim, source), []).append(name)
    return [SpecError(marks[victim], f"names generated for layer {source} ({', '.join(sorted(names))}) clash "
                                     f"with this layer's; rename layer {victim}", victim)
            for (victim, source), names in clashes.items()]


def compile_loaded(spec: SpecMap, source: str, batch: int = 1) -> CompiledNet:
    try:
        return _compile_loaded(spec, source, batch)
    except SpecErrors as exc:
        raise SpecErrors(locate_errors(exc.errors, getattr(spec, "origins", {}))) from None


def _compile_loaded(spec: SpecMap, source: str, batch: int = 1) -> CompiledNet:
    lowered = lower(spec)
    if lowered.errors:
        raise SpecErrors(lowered.errors)
    fused = fuse_residual_adds(fuse_activations(_strip_shapes(lowered.graph)))
    g = place_devices(fused)
    clashes = _name_clashes(g, spec)
    if clashes:
        raise SpecErrors(clashes)
    c, h, w = (spec["input"][k] for k in ("channels", "height", "width"))
    try:
        g = infer_shapes(g, data=(batch, c, h, w), label=(batch,))
    except ShapeError as exc:  # lowering checked every layer at batch 1; this is a compiler bug guard
        raise SpecErrors([SpecError(exc.mark or spec.mark, exc.reason, exc.layer)]) from None
    return CompiledNet(spec, source, g, _after_fusion(lowered.layers, lowered.graph, fused), batch)


def _after_fusion(layers: list[LayerInfo], before: Graph, after: Graph) -> list[LayerInfo]:
    """A standalone activation fused into its conv/fc, or an add fused into its batch norm, has no
    node left: its layer's outputs are the node that took it (which keeps the producer's name)."""
    took = absorbed_into(before, after)
    return [replace(info, outputs=[(took.get(name, name), dev, shape) for name, dev, shape in info.outputs])
            for info in layers]


@functools.lru_cache(maxsize=32)
def _compile_cached(path: str, mtime: float, batch: int) -> CompiledNet:
    return compile_loaded(load_spec(path), path, batch)


def compile_spec(path: str | os.PathLike, batch: int = 1) -> CompiledNet:
    """Compile a spec file. Raises SpecErrors (every problem, located) when it is not valid."""
    path = str(path)
    try:
        mtime = os.path.getmtime(path)
    except OSError:
        mtime = -1.0
    return _compile_cached(path, mtime, batch)


def compile_dict(spec: dict, source: str = "<spec>", batch: int = 1) -> CompiledNet:
    """Compile a resolved spec given as plain data (e.g. the copy a checkpoint carries)."""
    import yaml

    from .source import parse_yaml

    doc = parse_yaml(yaml.safe_dump(spec, sort_keys=False), source)
    return compile_loaded(validate_spec(doc), source, batch)
