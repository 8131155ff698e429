"""Time our kernels on AlexNet's layer shapes against cuDNN/ATen and torch.compile of the same op.

For every conv, LRN and max-pool layer of the one-tower AlexNet at batch 128 (convnet-benchmarks'
setting), in fp32 (TF32 allowed) and bf16, forward alone and forward+backward:

  ours     the backend's entries (alexnetc.kernels.backend.get_backend(device), named as in
           docs/kernel-interface.md): Triton on CUDA
  aten     F.conv2d (cuDNN, channels-last), F.local_response_norm, F.max_pool2d, backward by autograd
  compile  torch.compile of the aten op (skipped, with the reason in the row, when it fails)

Prints a table (milliseconds, aten/ours and compile/ours speed ratios: > 1 means ours is faster) and
writes JSON (device, torch/triton versions, date, every row) to benchmarks/results/. On CUDA times are
triton.testing.do_bench medians; on the CPU (`--tiny`: small shapes so the script cannot rot
unnoticed) a perf_counter median. Run: `python benchmarks/bench_kernels.py [--tiny] [--out DIR]`.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # results_io, beside this file
from results_io import RESULTS, device_name, environment, machine_load, write_result  # noqa: E402

# (name, C_in, H, K_out, kernel, stride, pad): one-tower AlexNet, 224 input with conv1 padded to 55x55
CONVS = [("conv1", 3, 224, 96, 11, 4, 2), ("conv2", 96, 27, 256, 5, 1, 2), ("conv3", 256, 13, 384, 3, 1, 1),
         ("conv4", 384, 13, 384, 3, 1, 1), ("conv5", 384, 13, 256, 3, 1, 1)]
LRNS = [("norm1", 96, 55), ("norm2", 256, 27)]
POOLS = [("pool1", 96, 55), ("pool2", 256, 27), ("pool5", 256, 13)]
# --tiny: same structure, CPU-sized
TINY_CONVS = [("conv1", 3, 19, 8, 5, 2, 2), ("conv2", 8, 7, 12, 3, 1, 1)]
TINY_LRNS = [("norm1", 8, 9)]
TINY_POOLS = [("pool1", 8, 9)]
# The paper's LRN with alpha_over_n (as F.local_response_norm, which always divides alpha by size);
# our entries take the effective coefficient alpha' = alpha / size, as the compiler passes it.
LRN_SPEC = {"size": 5, "k": 2.0, "alpha": 1e-4, "beta": 0.75}
LRN_ARGS = {**LRN_SPEC, "alpha": LRN_SPEC["alpha"] / LRN_SPEC["size"]}


def _out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


class Timer:
    def __init__(self, device: torch.device, reps: int):
        self.device, self.reps = device, reps

    def __call__(self, fn: Callable[[], object]) -> float:
        """Median milliseconds of fn()."""
        if self.device.type == "cuda":
            import triton.testing
            # one call first: compilation (Triton, torch.compile) must not enter do_bench's estimate
            fn()
            torch.cuda.synchronize(self.device)
            return float(triton.testing.do_bench(fn, warmup=25, rep=max(self.reps, 20) * 5, return_mode="median"))
        fn()
        times = []
        for _ in range(self.reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def _compiled(fn: Callable, enabled: bool) -> Callable | str:
    """torch.compile(fn), or the reason it is not available (a string)."""
    if not enabled:
        return "disabled (--no-compile)"
    try:
        return torch.compile(fn, dynamic=False)
    except Exception as e:  # noqa: BLE001 - any failure to set up compile skips that column
        return f"{type(e).__name__}: {e}"


def _grad_step(fn: Callable, inputs: list[torch.Tensor], dy: torch.Tensor) -> Callable[[], object]:
    """fwd+bwd through autograd: fn(*inputs) then backward(dy), gradients dropped each time."""
    def run():
        for t in inputs:
            t.grad = None
        out = fn(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        out.backward(dy)
    return run


def _cases(backend, device, dtype, tiny):
    """Yield (op, layer, shape string, {impl: (fwd fn, fwd+bwd fn)}) for every layer."""
    n = 2 if tiny else 128
    cl = torch.channels_last
    for name, c, h, k, r, s, p in (TINY_CONVS if tiny else CONVS):
        P = _out(h, r, s, p)
        x = torch.randn(n, c, h, h, device=device, dtype=dtype).to(memory_format=cl)
        w = (torch.randn(k, c, r, r, device=device, dtype=dtype) * 0.01).to(memory_format=cl)
        b = torch.zeros(k, device=device, dtype=dtype)
        dy = torch.randn(n, k, P, P, device=device, dtype=dtype).to(memory_format=cl)
        geo = {"stride": (s, s), "pad": (p, p), "num_group": 1}

        def ours_fwd(x=x, w=w, b=b, geo=geo, P=P):
            return backend.conv(x, w, b, out_size=(P, P), act="none", **geo)

        def ours_step(x=x, w=w, dy=dy, geo=geo, fwd=ours_fwd):
            fwd()
            backend.conv_backward_data(dy, w, in_hw=tuple(x.shape[2:]), **geo)
            backend.conv_backward_weight(dy, x, kernel=tuple(w.shape[2:]), **geo)
            backend.bias_backward(dy)

        def aten(x, w, b, s=s, p=p):
            return F.conv2d(x, w, b, stride=s, padding=p)

        yield ("conv", name, f"x{tuple(x.shape)} w{tuple(w.shape)} s{s} p{p}",
               {"ours": (ours_fwd, ours_step)}, aten, [x, w, b], dy)

    for name, c, h in (TINY_LRNS if tiny else LRNS):
        x = torch.relu(torch.randn(n, c, h, h, device=device, dtype=dtype)).to(memory_format=cl)
        dy = torch.randn_like(x)

        def ours_fwd(x=x):
            return backend.lrn(x, **LRN_ARGS)

        def ours_step(x=x, dy=dy):
            y, scale = backend.lrn(x, **LRN_ARGS)
            backend.lrn_backward(dy, x, y, scale, **LRN_ARGS)

        def aten(x):
            return F.local_response_norm(x, LRN_SPEC["size"], LRN_SPEC["alpha"], LRN_SPEC["beta"], LRN_SPEC["k"])

        yield "lrn", name, f"x{tuple(x.shape)} n5", {"ours": (ours_fwd, ours_step)}, aten, [x], dy

    for name, c, h in (TINY_POOLS if tiny else POOLS):
        P = _out(h, 3, 2, 0)
        x = torch.relu(torch.randn(n, c, h, h, device=device, dtype=dtype)).to(memory_format=cl)
        dy = torch.randn(n, c, P, P, device=device, dtype=dtype).to(memory_format=cl)
        geo = {"kernel": (3, 3), "stride": (2, 2), "pad": (0, 0)}

        def ours_fwd(x=x, geo=geo, P=P):
            return backend.maxpool(x, out_size=(P, P), **geo)

        def ours_step(x=x, dy=dy, geo=geo, P=P):
            _, a = backend.maxpool(x, out_size=(P, P), **geo)
            backend.maxpool_backward(dy, a, in_hw=tuple(x.shape[2:]), **geo)

        def aten(x):
            return F.max_pool2d(x, 3, 2)

        yield "maxpool", name, f"x{tuple(x.shape)} 3/2", {"ours": (ours_fwd, ours_step)}, aten, [x], dy


def _measure(timer: Timer, fn: Callable[[], object]) -> tuple[float | None, str | None]:
    try:
        return timer(fn), None
    except Exception as e:  # noqa: BLE001 - one failing cell must not lose the rest of the table
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def run(tiny: bool, reps: int, use_compile: bool, dtypes: list[str], device: torch.device) -> list[dict]:
    from alexnetc.kernels.backend import get_backend

    backend = get_backend(device)
    timer = Timer(device, reps)
    rows = []
    for dname in dtypes:
        dtype = torch.bfloat16 if dname == "bf16" else torch.float32
        tf32 = dname == "tf32"
        prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            for op, layer, shape, impls, aten, inputs, dy in _cases(backend, device, dtype, tiny):
                def aten_fwd(f=aten, i=inputs):
                    return f(*i)  # inputs do not require grad: no graph kept

                grads = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
                comp = _compiled(aten, use_compile)
                for mode in ("fwd", "fwd+bwd"):
                    row = {"op": op, "layer": layer, "shape": shape, "dtype": dname, "mode": mode,
                           "ms": {}, "errors": {}}
                    cells = {"ours": impls["ours"][0 if mode == "fwd" else 1],
                             "aten": aten_fwd if mode == "fwd" else _grad_step(aten, grads, dy)}
                    if isinstance(comp, str):
                        row["errors"]["compile"] = comp
                    else:
                        cells["compile"] = ((lambda c=comp, i=inputs: c(*i)) if mode == "fwd"
                                            else _grad_step(comp, grads, dy))
                    for impl, fn in cells.items():
                        ms, err = _measure(timer, fn)
                        row["ms"][impl] = ms
                        if err:
                            row["errors"][impl] = err
                    ours = row["ms"].get("ours")
                    row["speedup"] = {other: (row["ms"][other] / ours) if ours and row["ms"].get(other) else None
                                      for other in ("aten", "compile")}
                    rows.append(row)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
    return rows


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(rows: list[dict]) -> str:
    head = f"{'op':8} {'layer':6} {'dtype':5} {'mode':8} {'ours ms':>9} {'aten ms':>9} {'compile ms':>10} " \
           f"{'aten/ours':>9} {'comp/ours':>9}  shape"
    lines = [head, "-" * len(head)]
    for r in rows:
        ms, sp = r["ms"], r["speedup"]
        lines.append(f"{r['op']:8} {r['layer']:6} {r['dtype']:5} {r['mode']:8} {_fmt(ms.get('ours')):>9} "
                     f"{_fmt(ms.get('aten')):>9} {_fmt(ms.get('compile')):>10} {_fmt(sp['aten'], 2):>9} "
                     f"{_fmt(sp['compile'], 2):>9}  {r['shape']}")
    errors = [(r["op"], r["layer"], r["dtype"], r["mode"], k, v) for r in rows for k, v in r["errors"].items()]
    if errors:
        lines.append("")
        lines.append("not measured:")
        shown = set()
        for op, layer, dt, mode, impl, msg in errors:
            if (impl, msg) in shown:
                continue
            shown.add((impl, msg))
            lines.append(f"  {impl} ({op} {layer} {dt} {mode}, and others alike): {msg}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU-sized shapes (batch 2): a smoke run anywhere")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--dtypes", default="tf32,bf16", help="comma list of tf32 (fp32, TF32 allowed), fp32, bf16")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (CPU) / scale of do_bench's budget")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    ap.add_argument("--out", default=str(RESULTS), help="directory for the JSON result")
    args = ap.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.tiny:
        ap.error("full AlexNet shapes need a CUDA device; use --tiny on the CPU")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in ("tf32", "fp32", "bf16")]
    if bad:
        ap.error(f"unknown dtype(s) {bad}")
    reps = args.reps or (3 if args.tiny else 20)

    from alexnetc.kernels.backend import get_backend
    load_before = machine_load()
    rows = run(args.tiny, reps, not args.no_compile, dtypes, device)
    result = {
        "device": device_name(device),
        **environment(),
        "backend": get_backend(device).describe(),
        "batch": 2 if args.tiny else 128,
        "tiny": args.tiny,
        "load_before": load_before,
        "load_after": machine_load(),
        "rows": rows,
    }
    print(f"{result['device']} | torch {result['torch']} | triton {result['triton']} | {result['backend']}")
    print(table(rows))
    slug = re.sub(r"[^A-Za-z0-9]+", "-", result["device"]).strip("-").lower()
    write_result(result, args.out, f"kernels-{slug}{'-tiny' if args.tiny else ''}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
