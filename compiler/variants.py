"""Frontend, step 2: resolve `base:` chains and apply a variant's edits, keeping every value's source mark.

A variant is a small file that names a base spec and changes it:

* top-level mappings (``train``, ``data``, ``defaults``, ``input``...) are merged key by key, the
  variant winning; ``null`` deletes a key; lists and scalars are replaced;
* ``layers:`` replaces the base's layer list wholesale;
* ``modify_layers: {NAME: {key: value}}`` merges into the named layer (``null`` deletes a key);
* ``remove_layers: [NAME, ...]`` drops layers;
* ``insert_layers: [{after: NAME | before: NAME, layers: [...]}]`` adds layers.

Edits are applied in that order (modify, remove, insert). The merged spec remembers its bases'
``classes`` (`classifier.base_classes`): a classifier inherited for other classes follows the
variant's ``classes`` (see `classifier`). Each file is schema-checked on its own before
merging (see `validate.validate_file`), so errors point into the file that holds the mistake.

``base:`` is a path relative to the variant's file or, as on the command line, the name of a spec shipped
with alexnetc (``alexnet``, ``variants/mini``). It must name a ``.yaml``/``.yml`` regular file (so a
variant cannot make alexnetc read, and quote, an arbitrary file), within ``limits.MAX_SPEC_BYTES``, and a
chain of bases is at most ``limits.MAX_BASE_CHAIN`` files long.
"""
from __future__ import annotations

import copy
import os
from typing import Any

from .classifier import BASE_CLASSES_ATTR, base_classes
from .errors import Mark, SpecError, SpecErrors, did_you_mean
from .limits import excerpt, limit, raise_hint
from .source import SpecList, SpecMap, parse_yaml, read_spec_text
from .validate import validate_file

EDIT_KEYS = ("modify_layers", "remove_layers", "insert_layers")


def _merge(base: Any, over: Any) -> Any:
    """Deep-merge `over` into a copy of `base` (mappings merge; None deletes; everything else replaces)."""
    if not (isinstance(base, SpecMap) and isinstance(over, SpecMap)):
        return copy.deepcopy(over)
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
            out.key_marks.pop(key, None)
            out.value_marks.pop(key, None)
            continue
        out[key] = _merge(out.get(key), value)
        out.key_marks[key] = over.key_mark(key)
        out.value_marks[key] = over.value_mark(key)
    return out


def _layer_index(layers: SpecList) -> dict[str, int]:
    return {l.get("name"): i for i, l in enumerate(layers) if isinstance(l, dict) and isinstance(l.get("name"), str)}


def apply_edits(base_layers: SpecList, variant: SpecMap, errors: list[SpecError]) -> SpecList:
    layers = copy.deepcopy(base_layers)
    names = list(_layer_index(layers))

    modify = variant.get("modify_layers") or {}
    for name, change in modify.items():
        index = _layer_index(layers)
        if name not in index:
            errors.append(SpecError(modify.key_mark(name), f"modify_layers: no layer named '{name}' in the "
                                    f"base spec{did_you_mean(name, names)}", layer=name))
            continue
        merged = _merge(layers[index[name]], change)
        layers[index[name]] = merged
        layers.item_marks[index[name]] = modify.value_mark(name)

    remove = variant.get("remove_layers") or []
    for i, name in enumerate(remove):
        index = _layer_index(layers)
        if name not in index:
            errors.append(SpecError(remove.value_mark(i), f"remove_layers: no layer named '{name}' in the "
                                    f"base spec{did_you_mean(name, names)}", layer=name))
            continue
        j = index[name]
        del layers[j]
        del layers.item_marks[j]

    for ins in variant.get("insert_layers") or []:
        anchor_key = "after" if "after" in ins else "before"
        anchor = ins[anchor_key]
        index = _layer_index(layers)
        if anchor not in index:
            errors.append(SpecError(ins.value_mark(anchor_key), f"insert_layers: no layer named '{anchor}' to "
                                    f"insert {anchor_key}{did_you_mean(anchor, list(index))}", layer=anchor))
            continue
        at = index[anchor] + (1 if anchor_key == "after" else 0)
        new = ins["layers"]
        for k, layer in enumerate(new):
            layers.insert(at + k, copy.deepcopy(layer))
            layers.item_marks.insert(at + k, new.value_mark(k))
    return layers


def shipped_root() -> str | None:
    """The folder of the specs shipped with alexnetc (None when the package has none)."""
    from importlib import resources

    try:
        return str(resources.files("alexnetc.specs"))
    except (ModuleNotFoundError, TypeError):
        return None


def shipped_spec(name: str) -> str | None:
    """The path of the spec shipped with alexnetc under ``name`` (``alexnet``, ``variants/tanh.yaml``)."""
    if not name or os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        return None
    root = shipped_root()
    if root is None:
        return None
    cand = os.path.join(root, name if name.endswith((".yaml", ".yml")) else name + ".yaml")
    return cand if os.path.isfile(cand) else None


def _base_path(path: str, display: str, ref: Any, mark: Mark) -> tuple[str, str]:
    """(path to open, path to show) for a ``base:`` value, or a located SpecErrors."""
    if not isinstance(ref, str) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in ref):
        raise SpecErrors([SpecError(mark, f"base: {excerpt(ref)} is not a valid path (control characters)")])
    local = os.path.join(os.path.dirname(path), ref)
    shown = os.path.normpath(os.path.join(os.path.dirname(display), ref))
    if not os.path.lexists(local):
        shipped = shipped_spec(ref)
        if shipped is not None:
            local, shown = shipped, f"{ref} (shipped: {shipped})"
    if not local.endswith((".yaml", ".yml")):
        raise SpecErrors([SpecError(mark, f"base: {excerpt(ref)} does not name a spec (a .yaml or .yml file, "
                                          "or a shipped spec name such as 'alexnet')")])
    return local, shown


def resolve(path: str, _stack: tuple[str, ...] = (), _display: str | None = None,
            _ref_mark: Mark | None = None) -> SpecMap:
    """Load `path`, follow its `base:` chain and return the merged spec (edit keys consumed)."""
    real = os.path.realpath(path)
    display = _display or path
    if real in _stack:
        chain = " -> ".join(os.path.basename(p) for p in (*_stack, real))
        raise SpecErrors([SpecError(_ref_mark or Mark(display, 1, 1), f"circular base spec: {excerpt(chain, 200)}")])
    if len(_stack) >= limit("MAX_BASE_CHAIN"):
        raise SpecErrors([SpecError(_ref_mark or Mark(display, 1, 1), f"chain of base specs longer than "
                                    f"{limit('MAX_BASE_CHAIN')} files{raise_hint('MAX_BASE_CHAIN')}")])
    raw = parse_yaml(read_spec_text(path, display, _ref_mark), display)
    if not isinstance(raw, SpecMap):
        raise SpecErrors([SpecError(getattr(raw, "mark", None) or Mark(display, 1, 1),
                                    "a spec must be a mapping (keys such as input, devices, layers)")])
    if "base" not in raw and not _stack:
        return raw  # a plain spec: load_spec reports its schema and semantic errors together
    validate_file(raw)  # structural errors of this one file, located in it, before merging
    if "base" not in raw:
        return raw

    base_path, base_display = _base_path(path, display, raw["base"], raw.value_mark("base"))
    base = resolve(base_path, (*_stack, real), base_display, raw.value_mark("base"))

    errors: list[SpecError] = []
    layers = base.get("layers", SpecList())
    if "layers" in raw:
        layers = raw["layers"]
        if not isinstance(layers, SpecList):  # null (a deletion elsewhere) or a scalar: no layer list
            raise SpecErrors([SpecError(raw.value_mark("layers"), "layers: a variant's 'layers' replaces the "
                                        "base's list and must be a list of layers (leave it out to keep the "
                                        "base's layers)")])
    layers = apply_edits(layers, raw, errors)
    if errors:
        raise SpecErrors(errors)

    over = SpecMap(mark=raw.mark)
    for key, value in raw.items():
        if key in ("base", "layers", *EDIT_KEYS):
            continue
        over[key] = value
        over.key_marks[key] = raw.key_mark(key)
        over.value_marks[key] = raw.value_mark(key)
    merged = _merge(base, over)
    merged["layers"] = layers
    merged.key_marks["layers"] = raw.key_mark("layers") if "layers" in raw else base.key_mark("layers")
    merged.value_marks["layers"] = layers.mark
    merged.mark = raw.mark
    merged.key_marks.pop("base", None)
    merged.pop("base", None)
    # The classes each base had: a classifier still sized for one of them follows this spec's
    # `classes` once blocks are expanded (`classifier.follow_classes`).
    setattr(merged, BASE_CLASSES_ATTR, (*base_classes(base), base.get("classes")))
    return merged
