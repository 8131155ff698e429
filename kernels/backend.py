"""The one dispatch point between the runtime and the kernels: `get_backend(device, name)`.

A backend is an object carrying every kernel entry point the op registry names (`OpDef.kernel.entry`,
see compiler/ops/) as an attribute, plus `name` ("triton" or "reference") and `describe()` for a
one-line "running on ..." message. Where an entry lives follows from its op's family F: the Triton
backend takes it from ``alexnetc.kernels.F``, the reference backend from ``alexnetc.kernels.reference.F``;
data-movement entries (`Kernel.all_backends`) have one implementation, ``alexnetc.kernels.F``, for both.

At import this module checks, without importing triton, that both backends define every entry point
the registry names and every function an entry dispatches to by op name (`Kernel.requires`: each
activation's forward and backward); it reads the modules' top-level definitions. So a missing kernel,
or an activation a backend does not implement, is an import error naming the op, never a crash in the
middle of a training step nor a silent identity.

Choice, first match wins: the `name` argument; the ALEXNETC_BACKEND environment variable; "triton"
for a CUDA device, "reference" otherwise. The Triton backend is assembled on first request, so the
reference path never imports triton.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..compiler.ops import OPS

NAMES = ("triton", "reference")
_REFERENCE = f"{__package__}.reference"


@dataclass(frozen=True)
class EntryPoint:
    """A kernel entry point the registry names: the ops calling it, their family, and whether one
    implementation serves all backends."""

    entry: str
    family: str
    all_backends: bool
    ops: tuple[str, ...]

    def module(self, backend: str) -> str:
        """The module that implements this entry point for `backend`."""
        if self.all_backends or backend == "triton":
            return f"{__package__}.{self.family}"
        return f"{_REFERENCE}.{self.family}"


def entry_points() -> dict[str, EntryPoint]:
    """Every kernel entry point of the registry, by name."""
    out: dict[str, EntryPoint] = {}
    for op in OPS.values():
        k = op.kernel
        if k is None:
            continue
        for entry in k.entries():
            prev = out.get(entry)
            if prev is not None and (prev.family, prev.all_backends) != (op.family, k.all_backends):
                raise TypeError(f"kernel entry '{entry}' is named by ops of two families "
                                f"({prev.family}: {prev.ops[0]}, {op.family}: {op.name})")
            out[entry] = EntryPoint(entry, op.family, k.all_backends, (*(prev.ops if prev else ()), op.name))
    return out


def _defined_names(module: str) -> set[str] | None:
    """Top-level names a module's source defines, read without importing it (None: no such module)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), spec.origin)
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def required_functions() -> dict[tuple[str, str], str]:
    """{(family, function): op} for every function an op's entry dispatches to (`Kernel.requires`:
    each activation's ``<name>`` and ``<name>_grad``), which each backend's family module defines."""
    return {(op.family, f): op.name for op in OPS.values() if op.kernel is not None for f in op.kernel.requires}


def missing_entry_points(backend: str) -> list[str]:
    """'module.name (op ...)' for each registry entry point, and each function an entry dispatches to,
    that `backend` does not define."""
    missing = []
    for ep in entry_points().values():
        names = _defined_names(ep.module(backend))
        if names is None or ep.entry not in names:
            missing.append(f"{ep.module(backend)}.{ep.entry} (op {', '.join(ep.ops)})")
    for (family, fn), op in required_functions().items():
        module = EntryPoint(fn, family, False, (op,)).module(backend)
        names = _defined_names(module)
        if names is None or fn not in names:
            missing.append(f"{module}.{fn} (op {op})")
    return missing


def check_backends() -> None:
    """Raise ImportError if either backend lacks an entry point the op registry names."""
    problems = [f"{b}: {m}" for b in NAMES for m in missing_entry_points(b)]
    if problems:
        raise ImportError("kernel entry points named by the op registry are not implemented:\n  "
                          + "\n  ".join(problems))


check_backends()


class Backend:
    """A named set of entry points; attribute access is the function."""

    def __init__(self, name: str, functions: dict[str, Callable], description: str):
        missing = [f for f in entry_points() if f not in functions]
        if missing:
            raise TypeError(f"backend {name!r} lacks entry point(s) {missing}")
        self.name = name
        self.functions = dict(functions)
        self._description = description
        for fn_name, fn in functions.items():
            setattr(self, fn_name, fn)

    def describe(self) -> str:
        return self._description

    def __repr__(self) -> str:
        return f"<Backend {self.name}: {self._description}>"


_cache: dict[str, Backend] = {}
_lock = threading.Lock()


def _device_type(device: Any) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device, torch.Tensor):
        return device.device.type
    return torch.device(device).type


def default_name(device: Any = None) -> str:
    """The backend a device gets when nobody names one (the environment override included)."""
    env = os.environ.get("ALEXNETC_BACKEND", "").strip().lower()
    if env:
        if env not in NAMES:
            raise ValueError(f"ALEXNETC_BACKEND={env!r}: expected one of {NAMES}")
        return env
    return "triton" if _device_type(device) == "cuda" else "reference"


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _assemble(name: str) -> dict[str, Callable]:
    return {ep.entry: getattr(importlib.import_module(ep.module(name)), ep.entry)
            for ep in entry_points().values()}


def _build_reference() -> Backend:
    reference = importlib.import_module(_REFERENCE)
    return Backend("reference", _assemble("reference"), reference.describe())


def _build_triton() -> Backend:
    import triton

    mode = "interpreter" if _interpreting() else "compiled"
    return Backend("triton", _assemble("triton"), f"triton backend (triton {triton.__version__}, {mode})")


def get_backend(device: Any = None, name: str | None = None) -> Backend:
    """The backend for `device` (a torch.device, a string, a tensor or None for the default device).

    `name` forces one of "triton" / "reference". Asking for Triton on a CPU device is an error unless
    TRITON_INTERPRET=1 (the Triton interpreter runs CPU tensors; only tests want that)."""
    chosen = (name.strip().lower() if name else None) or default_name(device)
    if chosen not in NAMES:
        raise ValueError(f"unknown kernel backend {chosen!r}: expected one of {NAMES}")
    # "meta" tensors carry shapes only: kernels/aot records the launches of a step run on them.
    if chosen == "triton" and _device_type(device) not in ("cuda", "meta") and not _interpreting():
        raise ValueError(f"the triton backend needs a CUDA device (got {_device_type(device)}); "
                         "use the reference backend or set TRITON_INTERPRET=1")
    with _lock:
        backend = _cache.get(chosen)
        if backend is None:
            backend = _build_triton() if chosen == "triton" else _build_reference()
            _cache[chosen] = backend
    return backend


def describe(device: Any = None, name: str | None = None) -> str:
    """One line for logs: which kernels will run on `device`."""
    dev = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    return f"running on {dev} with the {get_backend(device, name).describe()}"
