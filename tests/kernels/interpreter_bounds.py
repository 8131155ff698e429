"""Every load and store a Triton kernel performs in the interpreter, checked against the tensors it was given.

Under TRITON_INTERPRET=1 a kernel's loads and stores go to raw host addresses (masked, element by element):
a mask that lets one element past a tensor's end reads or writes whatever lies there, on the CPU malloc's
own bookkeeping when the tensor sits in the heap (a silent corruption that surfaces, if ever, as a glibc
abort much later), on a GPU another allocation or an illegal-address fault. `install()` wraps the
interpreter's launch and its memory operations (`GridExecutor.__call__`, `InterpreterBuilder`'s masked
load and store and its atomics) so that, for every access of a launch, each address the mask enables
must be an element of ONE of the launch's tensor arguments: inside its extent, on an element boundary,
and (for a strided view) at a position its sizes and strides reach, so a write into a neighbouring
view of the same storage counts too. A violation raises `OutOfBounds` before the access is performed
(the interpreter reports it as an InterpreterError whose message includes ours) and is also recorded:
`take_violations()` hands them to the test fixture that fails the test (tests/conftest.py), even where
the launcher's caller swallowed the exception.

Only CPU tensors are checked (the interpreter copies device tensors to the host first; on a GPU this
module is not used). This relies on the interpreter's internal names in triton 3.x; `install()` raises
if they are gone rather than silently checking nothing.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch


class OutOfBounds(AssertionError):
    """A Triton kernel accessed memory outside every tensor argument of its launch."""


@dataclass(frozen=True)
class Extent:
    """The elements of one tensor argument: base address, byte strides and sizes (dims of size 1 dropped)."""

    name: str
    base: int
    itemsize: int
    sizes: tuple[int, ...]
    strides: tuple[int, ...]          # bytes, same order as sizes, largest first
    lo: int
    hi: int                           # one past the last byte of the last element

    @classmethod
    def of(cls, name: str, t: torch.Tensor) -> "Extent":
        item = t.element_size()
        dims = sorted(((int(s), int(st) * item) for s, st in zip(t.shape, t.stride()) if s != 1),
                      key=lambda d: -abs(d[1]))
        base = t.data_ptr()
        if t.numel() == 0:
            return cls(name, base, item, (), (), base, base)
        lo = base + sum((s - 1) * st for s, st in dims if st < 0)
        hi = base + sum((s - 1) * st for s, st in dims if st > 0) + item
        return cls(name, base, item, tuple(s for s, _ in dims), tuple(st for _, st in dims), lo, hi)

    def _dense_walk(self) -> bool:
        """Whether a greedy decomposition (largest stride first) finds every element: strides positive,
        each at least the span of the smaller ones (no overlap; true of every non-expanded view)."""
        span = self.itemsize
        for s, st in reversed(list(zip(self.sizes, self.strides))):
            if st < span:
                return False
            span = st * (s - 1) + span
        return True

    def holds(self, addr: np.ndarray, width: int) -> np.ndarray:
        """Per address: is an access of `width` bytes there one element of this tensor?"""
        ok = (addr >= self.lo) & (addr + width <= self.hi) & (width <= self.itemsize)
        if not ok.any() or not self._dense_walk():
            return ok          # expanded/overlapping views: the extent alone
        off = addr.astype(np.int64) - self.base
        for s, st in zip(self.sizes, self.strides):
            i = off // st
            ok &= (i >= 0) & (i < s)
            off = off - i * st
        return ok & (off == 0)


@dataclass(frozen=True)
class Violation:
    kernel: str
    access: str
    count: int
    example: str

    def __str__(self) -> str:
        return f"{self.kernel}: {self.access} of {self.count} element(s) outside its tensor arguments ({self.example})"


_state = threading.local()
_violations: list[Violation] = []
_lock = threading.Lock()
_installed = False


def _launch_extents() -> tuple[str, list[Extent]] | None:
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else None


def _describe(addr: int, extents: list[Extent]) -> str:
    if not extents:
        return f"address {addr:#x}, the launch has no CPU tensor argument"
    near = min(extents, key=lambda e: min(abs(addr - e.lo), abs(addr - e.hi)))
    where = (f"{addr - near.hi} bytes past the end" if addr >= near.hi else
             f"{near.lo - addr} bytes before the start" if addr < near.lo else "inside its extent but not an element")
    return f"first at {addr:#x}: {where} of argument '{near.name}' (sizes {near.sizes}, byte strides {near.strides})"


def _check(access: str, ptrs, mask) -> None:
    launch = _launch_extents()
    if launch is None:
        return
    kernel, extents = launch
    addr = np.asarray(ptrs.data, dtype=np.uint64)
    if mask is not None:
        addr = addr[np.broadcast_to(np.asarray(mask.data, dtype=bool), addr.shape)]
    addr = addr.reshape(-1)
    if addr.size == 0:
        return
    width = max(1, ptrs.get_element_ty().primitive_bitwidth // 8)
    a = addr.astype(np.int64)
    best = None
    for e in extents:
        ok = e.holds(a, width)
        if ok.all():
            return
        if best is None or ok.sum() > best.sum():
            best = ok
    bad = a if best is None else a[~best]
    v = Violation(kernel, access, int(bad.size), _describe(int(bad[0]), extents))
    with _lock:
        _violations.append(v)
    raise OutOfBounds(str(v))


def take_violations() -> list[Violation]:
    """The violations recorded since the last call (and forget them)."""
    with _lock:
        out = list(_violations)
        _violations.clear()
    return out


def _tensor_args(fn, args, kwargs) -> list[tuple[str, torch.Tensor]]:
    import inspect

    from triton.runtime.interpreter import _unwrap_tensor

    names = inspect.getfullargspec(fn).args
    pairs = list(zip(names, args)) + list(kwargs.items())
    out = []
    for name, a in pairs:
        a = _unwrap_tensor(a)
        if isinstance(a, torch.Tensor):
            out.append((name, a))
    return out


def install() -> None:
    """Wrap the interpreter's launch and memory operations (once per process)."""
    global _installed
    if _installed:
        return
    from triton.runtime import interpreter as itp

    builder, executor = itp.InterpreterBuilder, itp.GridExecutor
    needed = [(builder, "create_masked_load"), (builder, "create_masked_store"), (builder, "create_atomic_rmw"),
              (builder, "create_atomic_cas"), (executor, "__call__")]
    missing = [f"{cls.__name__}.{name}" for cls, name in needed if not hasattr(cls, name)]
    if missing:
        raise RuntimeError(f"triton's interpreter no longer has {', '.join(missing)}: update "
                           "tests/kernels/interpreter_bounds.py")
    load, store = builder.create_masked_load, builder.create_masked_store
    rmw, cas, call = builder.create_atomic_rmw, builder.create_atomic_cas, executor.__call__

    # (ptrs, mask, ...) / (ptrs, value, mask, ...): the leading parameters every triton 3.x has; the rest
    # (cache policy, volatility, ...) passed through as given.
    def masked_load(self, ptrs, mask, *rest, **kw):
        _check("load", ptrs, mask)
        return load(self, ptrs, mask, *rest, **kw)

    def masked_store(self, ptrs, value, mask, *rest, **kw):
        _check("store", ptrs, mask)
        return store(self, ptrs, value, mask, *rest, **kw)

    def atomic_rmw(self, rmw_op, ptr, val, mask, *rest, **kw):
        _check("atomic", ptr, mask)
        return rmw(self, rmw_op, ptr, val, mask, *rest, **kw)

    def atomic_cas(self, ptr, *rest, **kw):
        _check("atomic", ptr, None)
        return cas(self, ptr, *rest, **kw)

    def launch(self, *args, **kwargs):
        tensors = _tensor_args(self.fn, args, kwargs)
        if any(t.device.type != "cpu" for _, t in tensors):
            return call(self, *args, **kwargs)
        stack = getattr(_state, "stack", None)
        if stack is None:
            stack = _state.stack = []
        stack.append((getattr(self.fn, "__name__", str(self.fn)), [Extent.of(n, t) for n, t in tensors]))
        try:
            return call(self, *args, **kwargs)
        finally:
            stack.pop()

    builder.create_masked_load, builder.create_masked_store = masked_load, masked_store
    builder.create_atomic_rmw, builder.create_atomic_cas = atomic_rmw, atomic_cas
    executor.__call__ = launch
    _installed = True
