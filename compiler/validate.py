"""Frontend, step 3: check a spec's structure (JSON Schema) and meaning (names, references, devices).

Schema errors are translated into plain messages located at the offending key or value. Semantic
checks here are the ones that need no shapes (duplicates, references, cycles, devices, group counts);
the shape-dependent ones (output sizes, divisibility of channels, fc input size) happen while
lowering, in `lower.py`, which also collects rather than stops. Everything is reported together.
"""
from __future__ import annotations

import functools
from typing import Any, Iterable

import jsonschema
from jsonschema import Draft202012Validator

from .errors import Mark, SpecError, SpecErrors, did_you_mean
from .limits import excerpt, nonfinite_errors, size_errors
from .ops import OPS, spec_ops
from .ops.loss import AUX
from .ops.weighted import DEVICE, GROUPS
from .schema import spec_schema
from .source import SpecList, SpecMap

RESERVED = ("data", "label")
DEFAULT_DEVICES = ("gpu0",)  # a spec without `devices:` runs on one logical device


@functools.lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(spec_schema())


def _locate(root: Any, path: Iterable[Any], *, key: bool = False) -> Mark | None:
    """The mark of the value at `path` (or of its key when `key`), else of the nearest container."""
    node, mark = root, getattr(root, "mark", None)
    path = list(path)
    for i, step in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, SpecMap) and step in node:
            mark = node.key_mark(step) if (last and key) else node.value_mark(step)
            node = node[step]
        elif isinstance(node, SpecList) and isinstance(step, int) and 0 <= step < len(node):
            mark = node.value_mark(step)
            node = node[step]
        else:
            break
    return mark


def _layer_name(root: Any, path: list) -> str | None:
    if len(path) >= 2 and path[0] == "layers" and isinstance(path[1], int):
        layers = root.get("layers")
        if isinstance(layers, list) and path[1] < len(layers) and isinstance(layers[path[1]], dict):
            name = layers[path[1]].get("name")
            return name if isinstance(name, str) else f"#{path[1] + 1}"
    if len(path) >= 2 and path[0] == "modify_layers":
        return str(path[1])
    return None


def _allowed_keys(root: Any, path: list) -> list[str]:
    """Keys the schema allows for the object at `path` (used for 'did you mean')."""
    if len(path) == 2 and path[0] == "layers":
        layer = root["layers"][path[1]]
        op = layer.get("op") if isinstance(layer, dict) else None
        common = list(spec_schema()["$defs"]["plain_layer"]["properties"])
        return common + ([a.name for a in OPS[op].spec_attrs()] if op in spec_ops() else [])
    return []


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"'{excerpt(value)}'"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)


def _deepest(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For anyOf/oneOf failures, the most specific sub-error (jsonschema's relevance order)."""
    while error.context:
        best = jsonschema.exceptions.best_match(error.context)
        if best is None or list(best.absolute_path) == list(error.absolute_path) and best.validator in ("type",):
            # All branches failed on type at the same place: the outer message is clearer.
            return error
        error = best
    return error


def schema_errors(doc: SpecMap) -> list[SpecError]:
    too_big = size_errors(doc)
    if too_big:
        return too_big  # a huge spec is refused before the schema walks it
    out: list[SpecError] = nonfinite_errors(doc)
    for err in _validator().iter_errors(doc):
        err = _deepest(err)
        path = list(err.absolute_path)
        layer = _layer_name(doc, path)
        where = ".".join(str(p) for p in path if not isinstance(p, int)) or "spec"
        v = err.validator
        if v in ("additionalProperties", "unevaluatedProperties"):
            container = err.instance if isinstance(err.instance, dict) else {}
            if len(path) == 2 and path[0] == "layers" and container.get("op") not in spec_ops():
                continue  # the unknown (or missing) op is the error; its keys cannot be judged
            allowed = _allowed_keys(doc, path) or list((err.schema.get("properties") or {}))
            known = set(allowed)
            # unevaluatedProperties also fires for known keys when another key's value is invalid
            # (annotations of a failing subschema are dropped): only keys the op does not know are unknown.
            bad = [k for k in container if k not in known]
            for key in bad:
                what = f"{container.get('op')} layer" if len(path) == 2 and path[0] == "layers" else where
                out.append(SpecError(_locate(doc, [*path, key], key=True),
                                     f"unknown key '{key}' in {what}{did_you_mean(key, allowed)}", layer))
            continue
        mark = _locate(doc, path)
        if v == "required":
            missing = err.message.split("'")[1] if "'" in err.message else err.message
            msg = f"missing required key '{missing}'" + (f" in {where}" if where != "spec" and not layer else "")
        elif v == "enum" and path and path[-1] == "op":
            known = spec_ops()
            msg = f"unknown op {_describe(err.instance)}{did_you_mean(err.instance, known)}; known ops: {', '.join(known)}"
        elif v == "enum":
            msg = f"{where}: {_describe(err.instance)} is not one of {', '.join(map(str, err.validator_value))}" \
                  f"{did_you_mean(err.instance, err.validator_value)}"
        elif v == "type":
            want = err.validator_value if isinstance(err.validator_value, str) else " or ".join(err.validator_value)
            msg = f"{where}: expected {'an' if want[0] in 'aeiou' else 'a'} {want}, got {_describe(err.instance)}"
        elif v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            rel = {"minimum": "at least", "exclusiveMinimum": "greater than", "maximum": "at most",
                   "exclusiveMaximum": "less than"}[v]
            msg = f"{where}: must be {rel} {err.validator_value}, got {_describe(err.instance)}"
        elif v == "pattern":
            msg = f"{where}: {_describe(err.instance)} is not a valid name (letters, digits, '_', '.', '-'; " \
                  f"starting with a letter or '_')"
        elif v in ("minItems", "maxItems"):
            msg = f"{where}: {err.message}"
        elif v == "uniqueItems":
            msg = f"{where}: items must be unique"
        elif v == "oneOf" and path and path[-1] is not None and isinstance(err.instance, dict):
            msg = f"{where}: give exactly one of 'after' or 'before'" if "layers" in err.instance \
                else f"{where}: {err.message}"
        else:
            msg = f"{where}: {err.message}"
        out.append(SpecError(mark or Mark("?", 1, 1), msg, layer))
    return out


def _without_deletions(value: Any) -> Any:
    """A variant's mappings with `key: null` (a deletion) removed, marks kept."""
    if isinstance(value, SpecMap):
        out = SpecMap(mark=value.mark)
        for k, v in value.items():
            if v is None:
                continue
            out[k] = _without_deletions(v)
            out.key_marks[k] = value.key_mark(k)
            out.value_marks[k] = value.value_mark(k)
        return out
    return value


def validate_file(doc: SpecMap) -> None:
    """Structural check of one file as written (before base merging; in a variant, null deletes)."""
    errors = schema_errors(_without_deletions(doc) if "base" in doc else doc)
    if errors:
        raise SpecErrors(errors)


def _layers(spec: SpecMap) -> list[SpecMap]:
    layers = spec.get("layers")
    return [l for l in layers if isinstance(l, SpecMap)] if isinstance(layers, list) else []


def layer_inputs(spec: SpecMap, i: int) -> list[tuple[str, Mark | None]]:
    """Names a layer reads, with the mark of each reference (implicit: the previous layer, or data)."""
    layer = spec["layers"][i]
    if "inputs" in layer:
        refs = layer["inputs"]
        return [(name, refs.value_mark(k)) for k, name in enumerate(refs)]
    if "input" in layer:
        return [(layer["input"], layer.value_mark("input"))]
    if i == 0:
        return [("data", layer.mark)]
    prev = spec["layers"][i - 1].get("name")
    return [(prev, layer.mark)]


def _str_refs(spec: SpecMap, i: int) -> list[tuple[str, Mark | None]]:
    """`layer_inputs` restricted to well-formed names (malformed ones are schema errors already)."""
    layer, layers = spec["layers"][i], spec["layers"]
    if i > 0 and "input" not in layer and "inputs" not in layer and not isinstance(layers[i - 1], SpecMap):
        return []
    if "inputs" in layer and not isinstance(layer["inputs"], SpecList):
        return []
    return [(r, m) for r, m in layer_inputs(spec, i) if isinstance(r, str)]


def _count(n: int) -> str:
    return {2: "two", 3: "three"}.get(n, str(n))


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def semantic_errors(spec: SpecMap) -> list[SpecError]:
    """Checks that need no shapes: names, references, cycles, devices, group settings.

    Safe on a spec that also has schema errors: malformed parts are skipped (the schema reports them),
    so both kinds of error are reported together.
    """
    if size_errors(spec):
        return []  # too many layers: schema_errors reports that alone, nothing walks them
    errors: list[SpecError] = []
    raw = spec.get("layers") if isinstance(spec.get("layers"), list) else []
    indexed = [(i, l) for i, l in enumerate(raw) if isinstance(l, SpecMap) and isinstance(l.get("name"), str)]
    layers = [l for _, l in indexed]
    declared = spec.get("devices")
    devices = [d for d in declared if isinstance(d, str)] if isinstance(declared, list) and declared else list(DEFAULT_DEVICES)
    seen: dict[str, Mark] = {}
    for layer in layers:
        name = layer["name"]
        if name in RESERVED:
            errors.append(SpecError(layer.value_mark("name"), f"'{name}' is reserved for the network's "
                                    f"{'input' if name == 'data' else 'labels'}", name))
        elif name in seen:
            errors.append(SpecError(layer.value_mark("name"), f"duplicate layer name '{name}' (first defined at "
                                    f"line {seen[name].line})", name))
        else:
            seen[name] = layer.value_mark("name")

    names = set(seen) | {"data"}
    graph: dict[str, list[str]] = {}
    for i, layer in indexed:
        name, op = layer["name"], layer.get("op")
        refs = _str_refs(spec, i)
        explicit = "input" in layer or "inputs" in layer  # an implicit self-read is a duplicate name
        for ref, mark in refs:
            if ref == name and explicit:
                errors.append(SpecError(mark, f"layer reads its own output (a cycle: {name} -> {name})", name))
            elif ref not in names:
                errors.append(SpecError(mark, f"input '{ref}' is not a layer"
                                        f"{did_you_mean(ref, sorted(names - {name}))}", name))
        graph.setdefault(name, [r for r, _ in refs if r in names and r != name])
        desc = OPS[op] if isinstance(op, str) and op in spec_ops() else None
        n_refs = len(layer["inputs"]) if isinstance(layer.get("inputs"), list) else 1
        if desc is not None and n_refs < desc.inputs[0]:
            errors.append(SpecError(layer.value_mark("inputs") if "inputs" in layer else layer.mark,
                                    f"{op} needs at least {_count(desc.inputs[0])} inputs", name))
        if (desc is not None and desc.inputs[1] is not None and isinstance(layer.get("inputs"), list)
                and n_refs > desc.inputs[1]):
            errors.append(SpecError(layer.value_mark("inputs"), f"a {op} layer reads exactly one input; "
                                    f"use 'input: NAME'" if desc.inputs[1] == 1 else
                                    f"a {op} layer reads at most {desc.inputs[1]} inputs", name))
        if "input" in layer and "inputs" in layer:
            errors.append(SpecError(layer.key_mark("inputs"), "give either 'input' or 'inputs', not both", name))

        dev = layer.get(DEVICE.name)
        if isinstance(dev, str) and dev not in devices:
            errors.append(SpecError(layer.value_mark(DEVICE.name), f"device '{dev}' is not declared in devices "
                                    f"{devices}{did_you_mean(dev, devices)}", name))
        groups = layer.get(GROUPS.name)
        if isinstance(groups, SpecMap):
            count = _int(groups.get("count"))
            gdevs = groups.get("devices")
            if isinstance(gdevs, SpecList):
                if count is not None and len(gdevs) != count:
                    errors.append(SpecError(groups.value_mark("devices"), f"groups.devices lists {len(gdevs)} "
                                            f"device(s) for {count} group(s); give one per group", name))
                for k, d in enumerate(gdevs):
                    if isinstance(d, str) and d not in devices:
                        errors.append(SpecError(gdevs.value_mark(k), f"device '{d}' is not declared in devices "
                                                f"{devices}{did_you_mean(d, devices)}", name))
                if dev is not None:
                    errors.append(SpecError(layer.key_mark(DEVICE.name), "give either 'device' or 'groups.devices', "
                                            "not both", name))
        if desc is not None:  # the op's own checks that need no shapes (LRN: an odd window)
            for key, message in desc.check(layer):
                errors.append(SpecError(layer.value_mark(key) if key in layer else layer.mark, message, name))

    # Cycles through named inputs: depth-first search, report each cycle once at its first layer.
    state: dict[str, int] = {}
    marks = {l["name"]: l.value_mark("name") for l in layers}
    reported: set[frozenset] = set()

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in graph.get(n, []):
            if state.get(m) == 1:
                cyc = path[path.index(m):] + [m] if m in path else [n, m]
                key = frozenset(cyc)
                if key not in reported and len(cyc) > 2:
                    reported.add(key)
                    errors.append(SpecError(marks[m], "cycle through named inputs: " + " <- ".join(cyc), m))
            elif state.get(m) is None and m in graph:
                visit(m, path + [m])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [n])

    known = spec_ops()
    losses = [l for l in layers if l.get("op") in known and OPS[l["op"]].role == "loss"]
    if layers and not losses and all(l.get("op") in known for l in layers):
        errors.append(SpecError(spec.value_mark("layers"), "the network has no softmax_loss layer (the output)"))
    main = [l for l in losses if l.get(AUX.name) is not True]
    for extra in main[1:]:
        errors.append(SpecError(extra.value_mark("op"), f"a second main softmax_loss (the first is {main[0]['name']}); "
                                f"mark auxiliary heads 'aux: true'", extra["name"]))
    if losses and not main:
        errors.append(SpecError(losses[-1].value_mark(AUX.name), "every softmax_loss is 'aux: true': one must be "
                                "the main head (the network's output)", losses[-1]["name"]))

    def section(key: str) -> SpecMap:
        value = spec.get(key)
        return value if isinstance(value, SpecMap) else SpecMap()

    tr, data, inp = section("train"), section("data"), section("input")
    crop, resize = _int(data.get("crop")), _int(data.get("resize"))
    if crop is not None and inp and (crop != inp.get("height") or crop != inp.get("width")):
        errors.append(SpecError(data.value_mark("crop"), f"data.crop {crop} must equal the input size "
                                f"{inp.get('height')}x{inp.get('width')}"))
    if resize is not None and crop is not None and resize < crop:
        errors.append(SpecError(data.value_mark("resize"), f"data.resize {resize} is smaller than data.crop {crop}"))
    sched = tr.get("schedule")
    if isinstance(sched, SpecMap) and sched.get("type") == "step" and "every" not in sched:
        errors.append(SpecError(sched.mark, "train.schedule: type step needs 'every'"))
    return errors
