"""The one dispatch point between the runtime and the kernels: `get_backend(device, name)`.

A backend is an object carrying every function of docs/kernel-interface.md as an attribute, plus
`name` ("triton" or "reference") and `describe()` for a one-line "running on ..." message.

Choice, first match wins: the `name` argument; the ALEXNETC_BACKEND environment variable; "triton"
for a CUDA device, "reference" otherwise. The Triton backend is assembled lazily on first request,
so the reference path never imports triton nor `alexnetc.kernels.conv` (which another module owns).
If that conv module is absent, the Triton backend runs convolutions on ATen (cuDNN) and says so in
`describe()`.
"""
from __future__ import annotations

import importlib
import os
import threading
from typing import Any, Callable

import torch

NAMES = ("triton", "reference")

CONTRACT = (
    "conv2d", "conv2d_backward_data", "conv2d_backward_weight", "bias_backward",
    "act_forward", "act_backward",
    "linear", "linear_backward_data", "linear_backward_weight",
    "lrn", "lrn_backward",
    "max_pool", "max_pool_backward", "avg_pool", "avg_pool_backward",
    "dropout", "dropout_backward",
    "softmax_cross_entropy", "softmax_cross_entropy_backward",
)

CONV_FUNCTIONS = ("conv2d", "conv2d_backward_data", "conv2d_backward_weight")

# Where each non-conv contract function of the Triton backend lives (module under alexnetc.kernels).
_TRITON_HOMES = {
    "act_forward": "activation", "act_backward": "activation",
    "bias_backward": "linear",
    "linear": "linear", "linear_backward_data": "linear", "linear_backward_weight": "linear",
    "lrn": "lrn", "lrn_backward": "lrn",
    "max_pool": "pool", "max_pool_backward": "pool", "avg_pool": "pool", "avg_pool_backward": "pool",
    "dropout": "dropout", "dropout_backward": "dropout",
    "softmax_cross_entropy": "softmax_xent", "softmax_cross_entropy_backward": "softmax_xent",
}


class Backend:
    """A named set of contract functions; attribute access is the function call."""

    def __init__(self, name: str, functions: dict[str, Callable], description: str):
        missing = [f for f in CONTRACT if f not in functions]
        if missing:
            raise TypeError(f"backend {name!r} lacks contract function(s) {missing}")
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


def _build_reference() -> Backend:
    from . import reference
    return Backend("reference", {f: getattr(reference, f) for f in CONTRACT}, reference.describe())


def _build_triton() -> Backend:
    import triton

    from . import reference
    functions: dict[str, Callable] = {}
    for fn_name, module in _TRITON_HOMES.items():
        functions[fn_name] = getattr(importlib.import_module(f"{__package__}.{module}"), fn_name)
    conv_note = "conv: alexnetc.kernels.conv"
    try:
        conv = importlib.import_module(f"{__package__}.conv")
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.conv":
            raise  # the conv module exists but one of its imports is missing: a real error
        conv = None
        conv_note = "conv: ATen/cuDNN (alexnetc.kernels.conv not present)"
    for fn_name in CONV_FUNCTIONS:
        functions[fn_name] = getattr(conv, fn_name) if conv is not None else getattr(reference, fn_name)
    if conv is not None and hasattr(conv, "bias_backward"):
        functions["bias_backward"] = conv.bias_backward
    mode = "interpreter" if _interpreting() else "compiled"
    return Backend("triton", functions, f"triton backend (triton {triton.__version__}, {mode}; {conv_note})")


def get_backend(device: Any = None, name: str | None = None) -> Backend:
    """The backend for `device` (a torch.device, a string, a tensor or None for the default device).

    `name` forces one of "triton" / "reference". Asking for Triton on a CPU device is an error unless
    TRITON_INTERPRET=1 (the Triton interpreter runs CPU tensors; only tests want that)."""
    chosen = (name.strip().lower() if name else None) or default_name(device)
    if chosen not in NAMES:
        raise ValueError(f"unknown kernel backend {chosen!r}: expected one of {NAMES}")
    if chosen == "triton" and _device_type(device) != "cuda" and not _interpreting():
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
