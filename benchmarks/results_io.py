"""How every benchmark here records a run: the device's name, the software versions, the machine's load
while it ran, and one JSON file per run under benchmarks/results/ (or --out), named after the
benchmark and a UTC time stamp. Shared by bench_train.py, bench_kernels.py and bench_distributed.py.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), "")
    except OSError:
        model = platform.processor()
    return f"cpu: {model or 'unknown'}, {os.cpu_count()} cores"


def device_name(device=None) -> str:
    """The CUDA device's name, or the CPU's model and core count."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return cpu_name()


def machine_load() -> dict:
    """The load now: other processes on a shared machine skew every time measured beside them."""
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uptime = None
    return {"load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()], "uptime": uptime}


def environment() -> dict:
    """torch, triton and Python versions, the platform, and the date (UTC)."""
    import torch

    try:
        import triton
        triton_version = triton.__version__
    except Exception:  # no triton, or one that fails to import: a field, not a crash
        triton_version = None
    return {"torch": torch.__version__, "triton": triton_version, "python": platform.python_version(),
            "machine": platform.platform(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def write_result(result: dict, out_dir: str, stem: str) -> str:
    """Write `result` as out_dir/<stem>-<UTC stamp>.json, print where, and return the path (also put
    in result['path'], after writing)."""
    os.makedirs(out_dir, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = os.path.join(out_dir, f"{stem}-{stamp}.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    print(f"written {path}")
    result["path"] = path
    return path
