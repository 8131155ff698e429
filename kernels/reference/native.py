"""The reference backend's native CPU kernels: C sources in `csrc/`, compiled once per machine into
one shared library and called through ctypes.

Where ATen has no fused kernel (batch norm with its activation in the normalising pass, the add with
its relu) the CPU backend runs these instead; every entry that uses them keeps its ATen path for
what they do not take, and `library()` returns None (the ATen path everywhere) when there is no C
compiler, the build fails (one warning says why), or ``ALEXNETC_NATIVE=off``.

The build: ``$CC`` (default ``cc``) with ``-O3 -march=native -fopenmp``, into
``$ALEXNETC_CACHE/native`` (default ``~/.cache/alexnetc/native``), the file named by a hash of the
sources, the flags, the compiler's version and this CPU's model and flags, written under a temporary
name and renamed (processes building at once each get a whole library). OpenMP: the library needs
``libgomp.so.1``, which resolves to the copy torch has already loaded, so its threads are torch's.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

SOURCES = ("batchnorm.c", "elementwise.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11")
ENV = "ALEXNETC_NATIVE"
ACT_CODES = {"none": 0, "relu": 1}   # the activations the C kernels apply themselves (csrc/*.c)

_P, _I64, _INT, _DBL = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
_SIGNATURES = {
    "alx_bn_forward": ((_P, _P, _I64, _I64, _P, _P, _DBL, _INT, _INT, _P, _P, _P, _P, _P, _P, _DBL, _P, _P), _INT),
    "alx_bn_backward": ((_P, _P, _P, _I64, _I64, _P, _P, _P, _INT, _P, _P, _P, _P), _INT),
    "alx_add": ((_P, _INT, _I64, _INT, _INT, _P), None),
}

_lib: ctypes.CDLL | None = None
_tried = False
_why: str = ""


def _cache_dir() -> Path:
    root = os.environ.get("ALEXNETC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "alexnetc")
    return Path(root) / "native"


def _cpu_identity() -> str:
    """This CPU's model and instruction-set flags (-march=native builds for them)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.uname().machine if hasattr(os, "uname") else sys.platform
    keep = [line for line in text.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(keep)))


def _build(cc: str, out: Path) -> None:
    src = Path(__file__).with_name("csrc")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        cmd = [cc, *FLAGS, *(str(src / s) for s in SOURCES), "-o", tmp, "-lm"]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {run.stderr.strip()[-800:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


def library_path(cc: str | None = None) -> Path | None:
    """Where this machine's build of the sources is (or goes) with compiler `cc` (default: $CC or cc);
    None without a C compiler."""
    cc = cc or _compiler()
    if cc is None:
        return None
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    h = hashlib.sha256()
    src = Path(__file__).with_name("csrc")
    for s in SOURCES:
        h.update(s.encode() + b"\0" + (src / s).read_bytes())
    h.update("\0".join((*FLAGS, version, _cpu_identity())).encode())
    return _cache_dir() / f"alexnetc-cpu-{h.hexdigest()[:24]}.so"


def library() -> ctypes.CDLL | None:
    """The loaded library, built on first use; None where it cannot be (see the module docstring)."""
    global _lib, _tried, _why
    if _tried:
        return _lib
    _tried = True
    if os.environ.get(ENV, "").lower() in ("off", "0", "no", "false"):
        _why = f"{ENV}=off"
        return None
    if not sys.platform.startswith("linux"):
        _why = "native kernels are built on Linux only"
        return None
    cc = _compiler()
    path = library_path(cc)
    if path is None:
        _why = "no C compiler (cc or $CC) found"
        return None
    try:
        if not path.exists():
            _build(cc, path)
        lib = ctypes.CDLL(str(path))
        for name, (args, res) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
    except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as exc:
        _why = f"build or load failed: {exc}"
        warnings.warn(f"alexnetc: the CPU backend runs without its native kernels ({_why})", RuntimeWarning,
                      stacklevel=2)
        return None
    _lib = lib
    return _lib


def status() -> str:
    """One line for describe(): whether the native kernels are in use, and why not."""
    lib = library()
    return "native CPU kernels (C, OpenMP)" if lib is not None else f"no native CPU kernels ({_why})"


def takes(*ts: torch.Tensor) -> bool:
    """Tensors the C kernels read as (M, C) row-major matrices, C the channels, element for element
    alike: fp32 on the CPU, channels-last 4-D maps or contiguous 2-D features, all with the same strides;
    and the library is there."""
    for t in ts:
        if t.dtype != torch.float32 or t.device.type != "cpu" or t.stride() != ts[0].stride():
            return False
        if not (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
                or t.dim() == 2 and t.is_contiguous()):
            return False
    return library() is not None


def threads() -> int:
    return torch.get_num_threads()


def pointer(t: torch.Tensor | None) -> int | None:
    """A tensor's data pointer for an optional `const float *` argument (None: NULL)."""
    return None if t is None else t.data_ptr()


def pointers(ts) -> ctypes.Array:
    """A C array of the tensors' data pointers (a `const float *const *` argument)."""
    return (ctypes.c_void_p * len(ts))(*(t.data_ptr() for t in ts))
