"""The hand placements shipped with alexnetc of the network being planned (``alexnet.yaml``'s towers and
``alexnet-1gpu.yaml`` for the paper's network), for the planner's table to compare against.

A shipped spec is another placement of the same network when it is the spec's base or a variant of
that base whose edits touch only placement keys (`devices`, a layer's `device`, `groups.devices`):
found by reading each shipped file's ``base:`` line and, for the few candidates, the file itself,
then confirmed on the expanded specs (`spec_edits.same_network`).
"""
from __future__ import annotations

import os
import re
from typing import Any

from ..ops.weighted import DEVICE, GROUPS
from ..source import SpecMap

_BASE = re.compile(r"^base:\s*['\"]?([^'\"#\s]+)")
_PLACEMENT_ONLY_KEYS = {"base", "name", "description", "devices", "modify_layers"}


def _base_of(path: str) -> str | None:
    from ..variants import shipped_spec

    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                m = _BASE.match(line)
                if m:
                    ref = m.group(1)
                    local = os.path.normpath(os.path.join(os.path.dirname(path), ref))
                    found = local if os.path.isfile(local) else shipped_spec(ref)
                    return os.path.realpath(found) if found else None
    except OSError:
        return None
    return None


def _placement_only(path: str) -> bool:
    """Whether a variant file changes nothing but the placement of its base."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            doc: Any = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(doc, dict) or "base" not in doc or not set(doc) <= _PLACEMENT_ONLY_KEYS:
        return False
    for edit in (doc.get("modify_layers") or {}).values():
        if not isinstance(edit, dict) or not set(edit) <= {DEVICE.name, GROUPS.name}:
            return False
        groups = edit.get(GROUPS.name)
        if groups is not None and (not isinstance(groups, dict) or set(groups) - {"devices"}):
            return False
    return True


def shipped_placements(path: str, spec: SpecMap) -> list[tuple[str, SpecMap]]:
    """(file, expanded spec) of each shipped spec other than `path` that places the same network."""
    from ..pipeline import load_spec
    from ..variants import shipped_root
    from .spec_edits import same_network

    root_dir = shipped_root()
    if root_dir is None:
        return []
    me = os.path.realpath(path)
    base = _base_of(me)
    root = base if base is not None and _placement_only(me) else me
    family = [root] if root != me else []
    for dirpath, _, files in os.walk(root_dir):
        for f in sorted(files):
            cand = os.path.realpath(os.path.join(dirpath, f))
            if f.endswith(".yaml") and cand != me and cand not in family and _base_of(cand) == root \
                    and _placement_only(cand):
                family.append(cand)
    out = []
    for cand in family:
        if not os.path.realpath(cand).startswith(os.path.realpath(root_dir) + os.sep):
            continue
        other = load_spec(cand)
        if same_network(other, spec):
            out.append((cand, other))
    return out
