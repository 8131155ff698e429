"""Bounds on what a spec may make alexnetc read, build or allocate, and the checks that are not per-op.

Every limit is a named constant with an environment variable that raises (or lowers) it; the value is
read when it is checked, so a test or a user can change it without reloading anything. A limit that
is hit is reported like any other spec error: ``FILE:LINE:COL: message``, exit status 2.

=========================  ===========================  ==========  =========================================
constant                   environment variable          default     bounds
=========================  ===========================  ==========  =========================================
MAX_SPEC_BYTES             ALEXNETC_MAX_SPEC_BYTES       1 MiB       size of a spec file and of every ``base:``
MAX_YAML_DEPTH             ALEXNETC_MAX_YAML_DEPTH       64          nesting of mappings/sequences
MAX_YAML_NODES             ALEXNETC_MAX_YAML_NODES       200,000     values built, aliases expanded
MAX_BASE_CHAIN             ALEXNETC_MAX_BASE_CHAIN       32          ``base:`` files followed from one spec
MAX_LAYERS                 ALEXNETC_MAX_LAYERS           2,000       layers in a resolved spec
MAX_NUMBER_DIGITS          ALEXNETC_MAX_NUMBER_DIGITS    30          characters of one integer/float literal
=========================  ===========================  ==========  =========================================

Pure Python (no torch); the runtime's limits (memory at bind, IDX sizes) live beside the code that
allocates.
"""
from __future__ import annotations

import math
import os
from typing import Any

from .errors import Mark, SpecError

MAX_SPEC_BYTES = 1 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 200_000
MAX_BASE_CHAIN = 32
MAX_LAYERS = 2_000
MAX_NUMBER_DIGITS = 30

ENV = {
    "MAX_SPEC_BYTES": "ALEXNETC_MAX_SPEC_BYTES",
    "MAX_YAML_DEPTH": "ALEXNETC_MAX_YAML_DEPTH",
    "MAX_YAML_NODES": "ALEXNETC_MAX_YAML_NODES",
    "MAX_BASE_CHAIN": "ALEXNETC_MAX_BASE_CHAIN",
    "MAX_LAYERS": "ALEXNETC_MAX_LAYERS",
    "MAX_NUMBER_DIGITS": "ALEXNETC_MAX_NUMBER_DIGITS",
}

EXCERPT_CHARS = 40  # how much of a user's (or a foreign file's) text an error message may quote


class LimitSettingError(ValueError):
    """An environment variable that sets a limit does not hold a positive integer."""


def limit(name: str) -> int:
    """The current value of limit ``name`` (e.g. ``"MAX_LAYERS"``): its environment variable if set."""
    return env_limit(ENV[name], globals()[name])


def env_limit(var: str, default: int) -> int:
    """The positive integer environment variable ``var`` holds (``_`` separators allowed), else ``default``
    when it is unset or blank; LimitSettingError when it holds anything else. (The runtime's read limits
    use it too.)"""
    raw = os.environ.get(var)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise LimitSettingError(f"{var}={excerpt(raw)}: expected a positive integer (default {default})")
    return value


def raise_hint(name: str) -> str:
    """' (raise it with ENVVAR=N)' for messages."""
    return f" (the limit is {limit(name):,}; set {ENV[name]} to change it)"


def excerpt(text: Any, n: int = EXCERPT_CHARS) -> str:
    """At most ``n`` characters of ``text``, control characters escaped (``\\x1b``, ``\\n``): safe to print
    on one line, and idempotent (escaping an excerpt again changes nothing)."""
    s = str(text)
    cut = len(s) > n
    s = s[:n]
    out = []
    for ch in s:
        o = ord(ch)
        if o < 0x20 or o == 0x7F or 0x80 <= o < 0xA0:
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(ch, f"\\x{o:02x}"))
        else:
            out.append(ch)
    return "".join(out) + ("…" if cut else "")


def _walk(value: Any, mark: Mark | None, path: str, out: list, max_depth: int, depth: int = 0):
    """(path, value, mark) for every scalar of a loaded spec tree."""
    if depth > max_depth + 1:  # trees from the loader are bounded already; this guards plain data
        return
    if isinstance(value, dict):
        for k, v in value.items():
            vm = value.value_mark(k) if hasattr(value, "value_mark") else mark
            _walk(v, vm, f"{path}.{k}" if path else str(k), out, max_depth, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            vm = value.value_mark(i) if hasattr(value, "value_mark") else mark
            _walk(v, vm, f"{path}[{i}]", out, max_depth, depth + 1)
    else:
        out.append((path, value, mark))


def size_errors(doc: Any) -> list[SpecError]:
    """The layer count of a loaded spec against ``MAX_LAYERS`` (checked before the schema walks it)."""
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if isinstance(layers, list) and len(layers) > limit("MAX_LAYERS"):
        fallback = getattr(doc, "mark", None) or Mark("<spec>", 1, 1)
        mark = doc.value_mark("layers") if hasattr(doc, "value_mark") else fallback
        return [SpecError(mark or fallback, f"layers: {len(layers):,} layers is too many{raise_hint('MAX_LAYERS')}")]
    return []


def nonfinite_errors(doc: Any) -> list[SpecError]:
    """Every NaN or infinite number in a loaded spec, located: no spec number is meant to be non-finite
    (YAML's ``.nan`` and ``.inf`` load as floats and would pass every numeric range check)."""
    errors: list[SpecError] = []
    fallback = getattr(doc, "mark", None) or Mark("<spec>", 1, 1)
    scalars: list = []
    _walk(doc, fallback, "", scalars, limit("MAX_YAML_DEPTH"))
    for path, value, mark in scalars:
        if isinstance(value, float) and not math.isfinite(value):
            shown = ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
            errors.append(SpecError(mark or fallback, f"{path or 'spec'}: must be a finite number, got {shown}"))
    return errors
