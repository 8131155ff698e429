"""Frontend, step 2b: `classes:` means the classifier. A variant that changes `classes` resizes the
layer computing each loss head's scores, so fine-tuning onto other classes is a one-line variant.

The *classifier* of a loss head (`softmax_loss`) is the weighted layer (conv or fc: an op with an
`out_attr`, its `filters` or `units`) found by walking back from the head's input through layers of
one input that have no such size of their own (dropout, flatten, activations, pooling, batch norm).
In a spec whose `base:` chain had other `classes` values, every classifier still sized for one of
them (the value it was inherited with) is resized to the spec's `classes`, its size marked at the
variant's `classes:` so a problem it causes (towers that do not divide it) points there. A classifier
the variant sized itself, to anything but an earlier `classes`, is left as written (then the loss
head's check names the mismatch). A head reading a `concat` or `add` has no single classifier and is
left alone too.

Runs on the expanded spec (after `blocks.expand`), so a classifier written inside a block (GoogLeNet's
auxiliary heads) follows too. Pure Python, like the rest of the frontend.
"""
from __future__ import annotations

from typing import Any, Iterable

from .source import SpecMap

# What a resolved spec carries from its `base:` chain: the `classes` of each base, nearest last.
BASE_CLASSES_ATTR = "base_classes"


def base_classes(spec: Any) -> tuple:
    """The `classes` values of `spec`'s bases (empty for a spec without `base:`)."""
    return tuple(getattr(spec, BASE_CLASSES_ATTR, ()))


def classifiers(layers: Iterable[Any]) -> list[SpecMap]:
    """The classifier layer of each loss head, in head order (heads without a single one are skipped)."""
    from .ops import OPS

    layers = [l for l in layers if isinstance(l, dict) and isinstance(l.get("name"), str)]
    by_name = {l["name"]: l for l in layers}
    previous = {l["name"]: (layers[i - 1]["name"] if i else None) for i, l in enumerate(layers)}
    found: list[SpecMap] = []
    for head in layers:
        op = OPS.get(head.get("op"))
        if op is None or op.role != "loss":
            continue
        layer, seen = head, set()
        while layer is not None and layer["name"] not in seen:
            seen.add(layer["name"])
            if "inputs" in layer:
                break                       # concat, add: no single classifier
            source = layer.get("input", previous[layer["name"]])
            layer = by_name.get(source) if isinstance(source, str) else None
            op = OPS.get(layer.get("op")) if layer is not None else None
            if op is None:
                break
            if getattr(op, "out_attr", ""):
                found.append(layer)
                break
    return found


def follow_classes(spec: SpecMap, earlier: tuple) -> SpecMap:
    """Resize, in place, every classifier of `spec` still sized for one of the `earlier` classes values
    (its base chain's) to `spec`'s own `classes`; returns `spec`."""
    classes = spec.get("classes")
    if not earlier or not isinstance(classes, int) or isinstance(classes, bool):
        return spec
    stale = {c for c in earlier if isinstance(c, int) and c != classes}
    if not stale:
        return spec
    from .ops import OPS

    for layer in classifiers(spec.get("layers") or ()):
        key = OPS[layer["op"]].out_attr
        size = layer.get(key)
        # only an integer can be stale; anything else (a list, a mapping) is left for validation to name
        if isinstance(size, int) and not isinstance(size, bool) and size in stale:
            layer[key] = classes
            if isinstance(layer, SpecMap):
                layer.value_marks[key] = spec.value_mark("classes")
    return spec
