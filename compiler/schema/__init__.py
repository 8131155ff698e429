"""The spec language's JSON Schema (Draft 2020-12), shipped as package data and loaded once, and the
defaults it declares (the training section's: `with_defaults`)."""
from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any, Mapping


@functools.lru_cache(maxsize=1)
def spec_schema() -> dict:
    return json.loads(resources.files(__name__).joinpath("alexnetc.schema.json").read_text("utf-8"))


def with_defaults(values: Mapping[str, Any] | None, *path: str) -> dict:
    """`values` of the object at `path` (top-level keys: ``"train"``, ``"train", "schedule"``) with
    the defaults the schema declares filled in where a key is absent, recursively into objects given
    or defaulted (the schedule's factor, patience ...). Keys with no declared default stay absent."""
    node = spec_schema()
    for key in path:
        node = node["properties"][key]
    return _fill(node, dict(values or {}))


def _fill(node: Mapping[str, Any], values: dict) -> dict:
    for key, sub in node.get("properties", {}).items():
        if key not in values and "default" in sub:
            values[key] = copy.deepcopy(sub["default"])
        if isinstance(values.get(key), dict) and "properties" in sub:
            values[key] = _fill(sub, dict(values[key]))
    return values
