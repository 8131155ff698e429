"""Compile one launch at one tile config for one GPU architecture, on a machine without a GPU, and read
its resources: registers per thread, bytes spilled, shared memory per block, occupancy, compile time.

`triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))` runs Triton's whole pipeline to
PTX and, through the wheel's bundled ptxas, to a cubin: a kernel that would not compile for that GPU
fails here. Registers and spills are what ptxas reports with -v (Triton fills `n_regs`/`n_spills`
only when a driver loads the cubin): Triton runs ptxas with -v already and prints that log when
`knobs.nvidia.dump_ptxas_log` is set, so the numbers are those of the very cubin it produced, with
its flags. Shared memory is Triton's `metadata.shared` (dynamic shared memory, which is all a Triton
kernel uses). Each compile starts from an empty Triton cache (`always_compile`), so ptxas always runs.
"""
from __future__ import annotations

import contextlib
import io
import re
import time
from typing import Any, Iterator

from .archs import arch, occupancy
from .launches import Launch, _jit_function, kernel_object

_REGS = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_STACK = re.compile(r"(\d+) bytes stack frame")


def parse_ptxas(log: str) -> dict:
    """{'registers', 'spill_stores', 'spill_loads', 'stack'} (bytes) from `ptxas -v` output."""
    regs, spills, stack = _REGS.search(log), _SPILLS.search(log), _STACK.search(log)
    if regs is None or spills is None:
        raise ValueError(f"no register report in the ptxas log: {log.strip()[:300]!r}")
    return {"registers": int(regs.group(1)), "spill_stores": int(spills.group(1)),
            "spill_loads": int(spills.group(2)), "stack": int(stack.group(1)) if stack else 0}


def ast_source(fn: Any, signature: dict, constexprs: dict, aligned: tuple[str, ...]) -> Any:
    """triton.compiler.ASTSource in the installed Triton's format.

    Why an adapter: the format changed across versions. Triton 3.3 and later (3.6 and 3.9 among them)
    take the signature by parameter name with constexprs typed "constexpr" in it, constexprs by name,
    and attrs keyed by argument path ((index,)) holding [["tt.divisibility", 16]]. Triton 3.0-3.2 keyed
    the signature by index, left constexprs out of it, took them as `constants` keyed by index and the
    alignment as an `AttrsDescriptor`."""
    from triton.compiler import ASTSource

    names = [p.name for p in fn.params]
    params = inspect_params(ASTSource)
    if "constexprs" in params:
        attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
        return ASTSource(fn=fn, signature=dict(signature), constexprs=dict(constexprs), attrs=attrs)
    from triton.backends.compiler import AttrsDescriptor  # triton < 3.3

    sig = {names.index(n): t for n, t in signature.items() if t != "constexpr"}
    consts = {names.index(n): v for n, v in constexprs.items()}
    attrs = AttrsDescriptor.from_dict({"arg_properties": {"tt.divisibility": [names.index(n) for n in aligned]},
                                       "cls": "AttrsDescriptor"})
    return ASTSource(fn=fn, signature=sig, constants=consts, attrs=attrs)


def inspect_params(cls: Any) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)


@contextlib.contextmanager
def _fresh_compile(cache_dir: str | None) -> Iterator[io.StringIO]:
    """Triton set to compile from scratch and print ptxas's -v log, which is captured."""
    from triton import knobs

    saved = (knobs.compilation.always_compile, knobs.nvidia.dump_ptxas_log, knobs.cache.dir)
    knobs.compilation.always_compile, knobs.nvidia.dump_ptxas_log = True, True
    if cache_dir is not None:
        knobs.cache.dir = cache_dir
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            yield out
    finally:
        knobs.compilation.always_compile, knobs.nvidia.dump_ptxas_log, knobs.cache.dir = saved


def compile_launch(launch: Launch, config: dict, arch_name: str, cache_dir: str | None = None) -> dict:
    """Compile `launch` at `config` (see launches.configs) for `arch_name` (sm_80, sm_90a) and return its
    resources: registers, spill_stores/spill_loads (bytes), spilled_words, stack, shared (bytes),
    num_warps, num_stages, blocks_per_sm, occupancy, occupancy_limit, over_shared_limit, seconds."""
    import triton
    from triton.backends.compiler import GPUTarget

    a = arch(arch_name)
    fn = _jit_function(kernel_object(launch))
    constexprs = {**dict(launch.constexprs), **config["constexprs"]}
    options = {k: config[k] for k in ("num_warps", "num_stages") if config.get(k) is not None}
    src = ast_source(fn, dict(launch.signature), constexprs, launch.aligned)
    start = time.perf_counter()
    with _fresh_compile(cache_dir) as log:
        compiled = triton.compile(src, target=GPUTarget("cuda", a.capability, 32), options=options)
    seconds = time.perf_counter() - start
    if "cubin" not in compiled.asm or "ptx" not in compiled.asm:
        raise RuntimeError(f"{launch.name}: Triton returned no PTX/cubin for {arch_name}")
    res = parse_ptxas(log.getvalue())
    md = compiled.metadata
    shared = int(md.shared)
    warps = int(md.num_warps)
    occ = occupancy(a, res["registers"], shared, warps)
    return {**res, "spilled_words": (res["spill_stores"] + 3) // 4, "shared": shared, "num_warps": warps,
            "num_stages": int(md.num_stages), "blocks_per_sm": occ["blocks_per_sm"], "occupancy": occ["occupancy"],
            "occupancy_limit": occ["limit"], "over_shared_limit": shared > a.max_shared_per_block,
            "seconds": round(seconds, 3)}
