"""Every Triton kernel launch of a training step, found without a GPU: the step itself, run on meta tensors.

`record_step(net, dtype)` binds the executor to the "meta" device with the Triton backend and runs one
training forward and backward. Meta tensors carry shapes, dtypes, strides and storage offsets but no
data, so the launchers in kernels/*.py do all they do on a GPU (layouts, tile choices, split counts)
up to `kernel[grid](...)`: every launch goes through Triton's `KernelInterface.__getitem__`
(JITFunction and Autotuner alike), and while recording that returns a function that files the call
instead of running it. So the launch rule lives only in the launchers; nothing here repeats it.

A filed call becomes a `Launch`: the kernel (its module and name), each parameter's Triton type
(`*fp32`, `i32`, `constexpr`, ...), the parameters Triton specialises as divisible by 16, and the
constexprs the launcher passed. `configs(launch)` lists the tile configs a GPU would try: an
autotuned kernel's own `Autotuner.configs` (the GPU list its decorator was given, which is why this
module refuses to run under TRITON_INTERPRET, where the kernels carry the interpreter's single
config), or the launcher's constexprs alone at Triton's default warps and stages. A kernel's own `early_config_prune` (the
conv kernels give IEEE-precision fp32 smaller tiles) is applied, fed the launch's constexprs.

Precisions: a float32 step with TF32 allowed (PyTorch's default for convolutions) and one with it off
(the conv kernels then pass PREC="ieee"), a bfloat16 step (mixed precision), and float16: the
launchers accept it, the executor does not train in it, so its launches are the bfloat16 step's with
every `*bf16` argument read as `*fp16` (the launchers treat the two half types alike).
"""
from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

# The four precisions of the matrix: label -> (executor dtype, TF32 allowed)
PRECISIONS = {"fp32-tf32": ("float32", True), "fp32-ieee": ("float32", False),
              "bf16": ("bfloat16", True), "fp16": ("bfloat16", True)}


@dataclass(frozen=True)
class Launch:
    """One distinct kernel launch, before a tile config and an architecture are chosen."""

    module: str                                   # alexnetc.kernels.conv
    kernel: str                                   # _conv_fwd_kernel
    signature: tuple[tuple[str, str], ...]        # (parameter, Triton type or "constexpr"), in order
    constexprs: tuple[tuple[str, Any], ...]       # what the launcher passed (autotuned ones come per config)
    aligned: tuple[str, ...]                      # parameters specialised as divisible by 16
    autotuned: bool

    @property
    def name(self) -> str:
        return f"{self.module.rsplit('.', 1)[-1]}.{self.kernel}"

    @property
    def dtype(self) -> str:
        """The launch's data type: the first floating-point pointer argument's ('fp32', 'bf16', 'fp16')."""
        for _, ty in self.signature:
            if ty in ("*fp32", "*bf16", "*fp16", "*fp64"):
                return ty[1:]
        return "none"

    def as_dict(self) -> dict:
        return {"module": self.module, "kernel": self.kernel, "signature": [list(p) for p in self.signature],
                "constexprs": [list(c) for c in self.constexprs], "aligned": list(self.aligned),
                "autotuned": self.autotuned}

    @classmethod
    def from_dict(cls, d: dict) -> "Launch":
        return cls(d["module"], d["kernel"], tuple(tuple(p) for p in d["signature"]),
                   tuple(tuple(c) for c in d["constexprs"]), tuple(d["aligned"]), bool(d["autotuned"]))

    def as_fp16(self) -> "Launch":
        return Launch(self.module, self.kernel, tuple((n, "*fp16" if t == "*bf16" else t) for n, t in self.signature),
                      self.constexprs, self.aligned, self.autotuned)


@dataclass(frozen=True)
class Use:
    """Where a launch happens: a spec's training step in a precision, at one node of its graph."""

    spec: str
    precision: str
    node: str
    layer: str
    device: str
    phase: str       # forward | backward


@dataclass
class Matrix:
    """Distinct launches with every place they are used, in first-seen order.

    Launches that differ only in which integer arguments Triton specialises as multiples of 16 (sizes
    and strides that follow the batch size: M = N*P*Q, an image's stride) are one entry, compiled with
    the first one's specialisation: the tiles, types, constexprs and pointer alignment that decide a
    kernel's registers and shared memory are the same, and the matrix stays about a third smaller."""

    uses: dict[Launch, list[Use]] = field(default_factory=dict)
    _first: dict[tuple, Launch] = field(default_factory=dict)

    def add(self, launch: Launch, use: Use) -> None:
        types = dict(launch.signature)
        key = (launch.module, launch.kernel, launch.signature, launch.constexprs,
               tuple(a for a in launch.aligned if types[a].startswith("*")))
        first = self._first.setdefault(key, launch)
        self.uses.setdefault(first, []).append(use)


def _jit_function(kernel: Any) -> Any:
    """The JITFunction under an Autotuner (or the kernel itself)."""
    from triton.runtime.jit import JITFunction

    while not isinstance(kernel, JITFunction):
        kernel = kernel.fn
    return kernel


def kernel_object(launch: Launch) -> Any:
    """The module attribute the launcher calls: a JITFunction or an Autotuner."""
    import importlib

    return getattr(importlib.import_module(launch.module), launch.kernel)


def _specialize(value: Any, specialize: bool, align: bool) -> tuple[str, Any]:
    """Triton's (type, specialisation) of one argument, as its JIT computes it at launch: ('i32', 'D')
    for an int divisible by 16, ('constexpr', 1) for an int equal to 1, ('*bf16', '') for a tensor whose
    address is not 16-byte aligned (a meta tensor's data_ptr is its storage offset in bytes, and CUDA
    allocations are 256-byte aligned, so the alignment is the one a GPU would see)."""
    # triton >= 3.3 (3.6 and 3.9 alike) computes this natively; the Python signature is stable there.
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    return tuple(native_specialize_impl(BaseBackend, value, False, specialize, align))[:2]


def launch_of(kernel: Any, args: tuple, kwargs: dict) -> Launch:
    """The `Launch` of `kernel[grid](*args, **kwargs)`."""
    fn = _jit_function(kernel)
    options = sorted(set(kwargs) - {p.name for p in fn.params})
    if options:   # num_warps=..., num_stages=...: none of the launchers passes one today
        raise TypeError(f"{fn.__name__}: launch options {options} are not recorded; add them to Launch")
    bound = fn.signature.bind_partial(*args, **kwargs)   # autotuned tile sizes come per config
    signature, constexprs, aligned = [], [], []
    for p in fn.params:
        if p.name not in bound.arguments:
            if p.is_constexpr:          # an autotuned tile size: each config gives it
                signature.append((p.name, "constexpr"))
                continue
            if p.default is inspect.Parameter.empty:
                raise TypeError(f"{fn.__name__}: the launcher did not pass {p.name}")
        value = bound.arguments.get(p.name, p.default)
        if p.is_constexpr:
            signature.append((p.name, "constexpr"))
            constexprs.append((p.name, value))
            continue
        ty, spec = _specialize(value, not p.do_not_specialize, not p.do_not_specialize_on_alignment)
        signature.append((p.name, ty))
        if ty == "constexpr":
            constexprs.append((p.name, spec))
        elif spec == "D":
            aligned.append(p.name)
    return Launch(fn.module, fn.__name__, tuple(signature), tuple(constexprs), tuple(aligned),
                  kernel is not fn)


def configs(launch: Launch) -> list[dict]:
    """The configs a GPU would try for `launch`: {'constexprs': {...}, 'num_warps', 'num_stages'}; for a
    kernel that is not autotuned, one with no constexprs of its own and Triton's defaults (None)."""
    kernel = kernel_object(launch)
    if not launch.autotuned:
        return [{"constexprs": {}, "num_warps": None, "num_stages": None}]
    tried = kernel.configs
    prune = getattr(kernel, "early_config_prune", None)
    if prune is not None:   # the kernel's own pruning (conv: IEEE-precision tiles), fed the launch's constexprs
        given = dict(launch.constexprs)
        tried = prune(tried, given, **given)
    return [{"constexprs": dict(c.kwargs), "num_warps": c.num_warps, "num_stages": c.num_stages} for c in tried]


def config_label(config: dict) -> str:
    """'BLOCK_M=128 BLOCK_N=64 BLOCK_K=32 w4 s4' (the defaults: 'default')."""
    parts = [f"{k}={v}" for k, v in config["constexprs"].items()]
    if config["num_warps"] is not None:
        parts.append(f"w{config['num_warps']}")
    if config["num_stages"] is not None:
        parts.append(f"s{config['num_stages']}")
    return " ".join(parts) or "default"


@contextlib.contextmanager
def _recording(calls: list) -> Iterator[None]:
    from triton.runtime.jit import KernelInterface

    original = KernelInterface.__getitem__

    def file_call(self: Any, grid: Any) -> Any:
        return lambda *args, **kwargs: calls.append((self, args, kwargs))

    KernelInterface.__getitem__ = file_call
    try:
        yield
    finally:
        KernelInterface.__getitem__ = original


@contextlib.contextmanager
def _tf32(allowed: bool) -> Iterator[None]:
    """torch.backends.cudnn.allow_tf32 set for the convolution launchers (kernels/conv.py reads it)."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def check_compiled_mode() -> None:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("the ahead-of-time compile needs the kernels as a GPU sees them: unset TRITON_INTERPRET "
                           "(under the interpreter each autotuned kernel carries a single CPU config)")


def record_step(net: Any, spec: str, precision: str, matrix: Matrix) -> None:
    """Run one training step of compiled `net` on meta tensors in `precision` (a PRECISIONS label) and
    file each Triton launch in `matrix`, with the node that made it."""
    check_compiled_mode()
    from ...runtime.execution.executor import Executor

    dtype, tf32 = PRECISIONS[precision]
    meta = torch.device("meta")
    calls: list = []
    where: list = []

    class Recording(Executor):
        phase = "forward"

        def _exec_step(self, s: Any, *a: Any, **kw: Any) -> None:
            before = len(calls)
            super()._exec_step(s, *a, **kw)
            where.extend([(s.node, self.phase)] * (len(calls) - before))

    with _recording(calls), _tf32(tf32):
        ex = Recording(net, {d: meta for d in net.devices}, backend="triton", dtype=dtype)
        data, label = _inputs(net, meta)
        ex.forward(data, label, is_train=True)
        ex.phase = "backward"
        ex.backward()
    for (kernel, args, kwargs), (node, phase) in zip(calls, where):
        launch = launch_of(kernel, args, kwargs)
        if precision == "fp16":
            launch = launch.as_fp16()
        matrix.add(launch, Use(spec, precision, node.name, node.layer or node.name, node.device or "host", phase))


def _inputs(net: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The data and label tensors of the net's bound batch, on `device`."""
    data_node = next(n for n in net.graph.nodes() if n.is_variable and n.role == "data")
    label_node = next(n for n in net.graph.nodes() if n.is_variable and n.role == "label")
    return (torch.empty(data_node.shapes[0], device=device),
            torch.zeros(label_node.shapes[0], dtype=torch.int64, device=device))


def shipped_specs(root: str | None = None) -> list[str]:
    """specs/*.yaml and specs/variants/*.yaml of the installed package, as paths."""
    import glob

    from ... import specs

    base = root or os.path.dirname(specs.__file__)
    return sorted(glob.glob(os.path.join(base, "*.yaml"))) + sorted(glob.glob(os.path.join(base, "variants", "*.yaml")))


def spec_label(path: str) -> str:
    """'alexnet' or 'variants/mini' for a shipped spec's path."""
    parent = os.path.basename(os.path.dirname(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"variants/{stem}" if parent == "variants" else stem


def training_matrix(paths: list[str], precisions: tuple[str, ...] = tuple(PRECISIONS),
                    batch: int | None = None) -> Matrix:
    """Every distinct launch of one training step of each spec in `paths`, in each precision, at the
    spec's own train.batch_size (or `batch`)."""
    from ...compiler import compile_spec

    matrix = Matrix()
    for path in paths:
        net = compile_spec(path)
        net = net.at_batch(batch or int(net.settings("train").get("batch_size") or 128))
        for precision in precisions:
            record_step(net, spec_label(path), precision, matrix)
    return matrix
