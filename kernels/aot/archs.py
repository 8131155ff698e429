"""Per-SM limits of the GPU architectures the kernels are compiled for, and the occupancy they allow.

Figures from NVIDIA's CUDA C++ Programming Guide, "Technical Specifications per Compute Capability"
(registers, warps, blocks, threads per SM, 255 registers per thread), and the architecture tuning
guides for shared memory:
  sm_80 (A100): "Tuning CUDA Applications for NVIDIA Ampere GPU Architecture", 1.4.1.1 - shared
         memory per SM up to 164 KB, per thread block up to 163 KB (opt-in), i.e. 166,912 bytes.
  sm_90a (H100, H200): "NVIDIA Hopper Tuning Guide", 1.4.1.5 - shared memory per SM up to 228 KB,
         per thread block up to 227 KB (opt-in), i.e. 232,448 bytes.
Both guides: the CUDA runtime reserves 1 KB of shared memory per thread block (counted against the
SM's capacity, not the block's limit). Registers are allocated per warp in units of 256.
Triton launches with the opt-in limit (it sets the kernel's dynamic shared memory attribute), so a
config above `max_shared_per_block` fails to launch (the autotuner drops it as out of resources).
"""
from __future__ import annotations

from dataclasses import dataclass

KIB = 1024


@dataclass(frozen=True)
class Arch:
    name: str                    # sm_80, sm_90a
    capability: int              # Triton's GPUTarget arch: 80, 90
    max_shared_per_block: int    # bytes, opt-in
    shared_per_sm: int           # bytes
    registers_per_sm: int = 65536
    max_registers_per_thread: int = 255
    max_warps_per_sm: int = 64
    max_blocks_per_sm: int = 32
    reserved_shared_per_block: int = KIB
    register_unit: int = 256     # registers are allocated per warp in multiples of this
    source: str = ""


ARCHS: dict[str, Arch] = {a.name: a for a in (
    Arch("sm_80", 80, 163 * KIB, 164 * KIB,
         source="CUDA C++ Programming Guide, compute capability 8.0; Ampere Tuning Guide 1.4.1.1"),
    Arch("sm_90a", 90, 227 * KIB, 228 * KIB,
         source="CUDA C++ Programming Guide, compute capability 9.0; Hopper Tuning Guide 1.4.1.5"),
)}


def arch(name: str) -> Arch:
    try:
        return ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown GPU architecture {name!r} (known: {', '.join(ARCHS)})") from None


def occupancy(a: Arch, registers: int, shared: int, warps: int) -> dict:
    """Resident blocks per SM and the share of the SM's warp slots they fill, from a kernel's registers
    per thread, shared memory per block (bytes) and warps per block; `limit` names what bounds it."""
    per_warp = -(-max(registers, 1) * 32 // a.register_unit) * a.register_unit
    bounds = {
        "warps": a.max_warps_per_sm // warps,
        "blocks": a.max_blocks_per_sm,
        "registers": (a.registers_per_sm // per_warp) // warps,
        "shared": a.shared_per_sm // (shared + a.reserved_shared_per_block) if shared <= a.max_shared_per_block else 0,
    }
    limit = min(bounds, key=lambda k: bounds[k])
    blocks = bounds[limit]
    return {"blocks_per_sm": blocks, "occupancy": round(blocks * warps / a.max_warps_per_sm, 4), "limit": limit}
