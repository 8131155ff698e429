"""Finding specs: a path on disk, or the name of a spec shipped inside the package (`alexnet`,
`variants/tanh`, ...), and what each shipped spec is (its `description:`). Pure Python; no torch."""
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


def shipped_names() -> list[str]:
    """The shipped specs as the command line names them: ``alexnet``, ``variants/mini``."""
    return [s[:-len(".yaml")] for s in shipped_specs()]


def description(name: str) -> str:
    """A shipped spec's own ``description:`` (one line; empty when it has none)."""
    import yaml

    with open(os.path.join(shipped_dir(), name), encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    text = doc.get("description") if isinstance(doc, dict) else None
    return " ".join(str(text).split()) if text else ""


def resolve_spec_path(arg: str | None) -> str:
    """`arg` if it is a file, else the shipped spec of that name (with or without .yaml). A name close
    to a shipped one is an error saying which (``variants/mni``: did you mean 'variants/mini'?);
    anything else is returned as is, for the compiler to report "spec file not found" at it."""
    if arg is None:
        return os.path.join(shipped_dir(), DEFAULT_SPEC)
    if os.path.exists(arg):
        return arg
    name = arg if arg.endswith((".yaml", ".yml")) else arg + ".yaml"
    candidate = os.path.join(shipped_dir(), name)
    if os.path.exists(candidate):
        return candidate
    from ...compiler.errors import Mark, SpecError, SpecErrors, did_you_mean

    stem = name.rsplit(".", 1)[0]
    hint = did_you_mean(stem.removeprefix("specs/"), shipped_names())
    if hint:
        raise SpecErrors([SpecError(Mark(arg, 1, 1), f"spec file not found{hint}; `alexnetc specs` lists the "
                                                     "shipped specs")])
    return arg  # let the compiler report "spec file not found" at this path
