"""Typed operator attributes: one declaration per attribute gives the spec's JSON Schema fragment, the
default, the conversion into a graph node's attribute and the keyword of the op's symbol constructor.

An `Attr` is *spec* (a spec layer may write it), *node* (a graph node of the op carries it), or both.
Most attributes are both. Node-only ones are set by the compiler (a conv node's ``num_group``);
spec-only ones are consumed while lowering (a weighted layer's ``groups``, ``weight_init`` ...).
Attributes shared by several ops (the sliding-window geometry, the fused activation) are declared
once, in the module of what they describe (`window.py`, `weighted.py`), and listed by each op.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

REQUIRED = object()  # no default: the spec (and the symbol constructor) must give the value

# The same number everywhere a spec may write a bounded size.
MAX_EXTENT = 4096


@dataclass(frozen=True)
class Attr:
    """One attribute of an op.

    `schema`: JSON Schema of the value as a spec writes it. `default`: used when the spec or the symbol
    constructor leaves it out; a callable ``default(layer, spec_defaults) -> value`` computes it from
    the layer (a pool's stride defaults to its kernel) or the spec (rounding). `spec_required`: the
    spec must give it even though Python has a default (LRN's constants: a spec must say which
    convention it follows). `convert` turns a spec value into the node's value (a pair into (h, w)).
    """

    name: str
    schema: Mapping[str, Any] = field(default_factory=dict)
    doc: str = ""
    default: Any = REQUIRED
    spec: bool = True
    node: bool = True
    spec_required: bool = False
    convert: Callable[[Any], Any] | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def fragment(self) -> dict:
        """The JSON Schema of this attribute's value, with its description."""
        out = dict(self.schema)
        if self.doc:
            out["description"] = self.doc
        return out

    def value(self, given: Any) -> Any:
        """The node's value of a spec or constructor value."""
        return self.convert(given) if self.convert is not None and given is not None else given

    def default_for(self, layer: Mapping[str, Any], spec_defaults: Mapping[str, Any]) -> Any:
        d = self.default
        return d(layer, spec_defaults) if callable(d) else d


# -- value types ---------------------------------------------------------------------------------------
def integer(lo: int = 1, hi: int = MAX_EXTENT) -> dict:
    return {"type": "integer", "minimum": lo, "maximum": hi}


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> dict:
    """A number in [lo, hi] (open ends where asked)."""
    d: dict = {"type": "number"}
    if lo is not None:
        d["exclusiveMinimum" if lo_open else "minimum"] = lo
    if hi is not None:
        d["exclusiveMaximum" if hi_open else "maximum"] = hi
    return d


BOOLEAN: Mapping[str, Any] = {"type": "boolean"}
IDENT: Mapping[str, Any] = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_.-]*$", "maxLength": 64}


def pair_schema(lo: int, hi: int = MAX_EXTENT) -> dict:
    """n, or [h, w]."""
    return {"oneOf": [integer(lo, hi), {"type": "array", "items": integer(lo, hi), "minItems": 2, "maxItems": 2}]}


def enum(*values: str) -> dict:
    return {"enum": list(values)}


# Channel groups of one op (Caffe's `group`): g independent slices of the channels. Set by the compiler
# (a spec's `groups:` are towers, which the lowering may merge onto one device as num_group > 1).
NUM_GROUP = Attr("num_group", integer(1, 65536), spec=False, default=1)


def pair(v: Any) -> tuple[int, int]:
    """n or (h, w) as (h, w)."""
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
