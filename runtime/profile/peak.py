"""The peak FLOP/s a profile's "% of peak" divides by.

On CUDA: the named device's data-sheet figure (`compiler/cost/devices.py`) for the precision each op
runs in, found from the device's name; an unknown GPU has no peak (the column stays empty). On the
CPU there is no data sheet to trust (clocks, vector widths and thread counts vary), so the peak is
measured: the best of a few large GEMMs in the run's dtype on the threads torch uses now, both ATen's
matrix product and oneDNN's direct 3x3 convolution (an implicit GEMM) on a channels-last map: where
ATen's BLAS is not the fastest code on the machine (MKL on an AMD EPYC ran 2048^3 products at 95
GFLOP/s on one core, oneDNN's convolutions at 240), a peak from torch.mm alone had a profile's
convolutions above 100 % of it. Cached per
machine, thread count, torch version and dtype under the user's cache directory (``$ALEXNETC_CACHE``)
so it is measured once. Memory bandwidth is taken from the data sheet on CUDA and not measured on the CPU.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass

import torch

from ...compiler.cost import DeviceSpec, device_for_cuda_name
from ..atomic import replacing

GEMM_SIZE = 2048          # a (2048 x 2048) @ (2048 x 2048) product: 17 GFLOP, well past cache effects
CPU_PEAK_VERSION = 2     # 2: the best of ATen's matrix product and oneDNN's 3x3 convolution


@dataclass(frozen=True)
class Peaks:
    """FLOP/s per precision column, and where the numbers come from."""

    flops: dict[str, float]
    bandwidth: float | None
    source: str

    def peak(self, precision: str) -> float | None:
        if precision in self.flops:
            return self.flops[precision]
        if precision == "tf32":
            return self.flops.get("fp32")
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_cpu_gemm(dtype: torch.dtype, size: int = GEMM_SIZE, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` runs of two products on torch's current threads: a (size x size)
    GEMM (torch.mm) and a 3x3 convolution of 128 channels over a channels-last (32, 128, 16, 16) map
    (oneDNN's direct convolution: 2 x 32 x 14 x 14 x 128 x 128 x 9 FLOPs, no Winograd)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    x = torch.randn(32, 128, 16, 16).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(128, 128, 3, 3).to(dtype)
    products = ((lambda: torch.mm(a, b), 2 * size ** 3),
                (lambda: torch.nn.functional.conv2d(x, w), 2 * 32 * 14 * 14 * 128 * 128 * 9))
    best = 0.0
    for product, flops in products:
        product()  # warm up the threads, the allocator and oneDNN's primitive cache
        for _ in range(repeats):
            t0 = time.perf_counter()
            product()
            best = max(best, flops / (time.perf_counter() - t0))
    return best


def _cache_dir() -> str:
    from ..data.augment import default_cache_dir

    return str(default_cache_dir())


_COLUMNS = {"float32": ("fp32", torch.float32), "bfloat16": ("bf16", torch.bfloat16),
            "float64": ("fp64", torch.float64)}


def cpu_gemm_peak(dtype: str) -> tuple[float, bool]:
    """(FLOP/s, from the cache) of a `dtype` GEMM on this CPU at torch's current thread count, measured
    once per machine, thread count and torch version."""
    key = {"cpu": _cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__, "dtype": dtype,
           "size": GEMM_SIZE, "version": CPU_PEAK_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(_cache_dir(), f"cpu-peak-{digest}.json")
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
        if {k: d.get(k) for k in key} == key and float(d["flops"]) > 0:
            return float(d["flops"]), True
    except (OSError, ValueError, KeyError, TypeError):
        pass   # no entry, or a damaged one: measure again
    flops = measure_cpu_gemm(_COLUMNS[dtype][1])
    try:
        with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump(dict(key, flops=flops), fh)
    except OSError:
        pass   # an unwritable cache costs a measurement next time, nothing else
    return flops, False


def cpu_peaks(dtype: str) -> Peaks:
    """The CPU's measured peaks for a run in `dtype`: its GEMM rate in that dtype (the conv and fc
    columns) and in fp32 (the elementwise ops, which compute in fp32)."""
    flops, cached = {}, True
    for d in dict.fromkeys(("float32", dtype)):
        flops[_COLUMNS[d][0]], hit = cpu_gemm_peak(d)
        cached = cached and hit
    threads = torch.get_num_threads()
    return Peaks(flops, None, f"best of {GEMM_SIZE}x{GEMM_SIZE} GEMMs and 3x3 convolutions on {threads} "
                              f"thread{'s' if threads != 1 else ''}, "
                              f"{'cached' if cached else 'measured now'} ({_cpu_model()})")


def cuda_peaks(dev: torch.device) -> tuple[Peaks | None, DeviceSpec | None]:
    name = torch.cuda.get_device_name(dev)
    spec = device_for_cuda_name(name)
    if spec is None:
        return None, None
    return Peaks(dict(spec.peaks), spec.bandwidth, f"{spec.title}: {spec.source}"), spec


def peaks_for(dev: torch.device, dtype: str) -> Peaks | None:
    if dev.type == "cuda":
        return cuda_peaks(dev)[0]
    return cpu_peaks(dtype)
