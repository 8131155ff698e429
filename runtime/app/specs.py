"""Finding specs: a path on disk, or the name of a spec shipped inside the package (`alexnet`,
`variants/tanh`, ...). Pure Python; no torch."""
from __future__ import annotations

import os
from importlib import resources

DEFAULT_SPEC = "variants/mini.yaml"


def shipped_dir() -> str:
    return str(resources.files("alexnetc.specs"))


def shipped_specs() -> list[str]:
    root = shipped_dir()
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".yaml"):
                out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(out)


def resolve_spec_path(arg: str | None) -> str:
    """`arg` if it is a file, else the shipped spec of that name (with or without .yaml)."""
    if arg is None:
        return os.path.join(shipped_dir(), DEFAULT_SPEC)
    if os.path.exists(arg):
        return arg
    name = arg if arg.endswith((".yaml", ".yml")) else arg + ".yaml"
    candidate = os.path.join(shipped_dir(), name)
    if os.path.exists(candidate):
        return candidate
    return arg  # let the compiler report "spec file not found" at this path
