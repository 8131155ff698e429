"""Training throughput: our runtime (graph executor + our kernels) against the same network in plain
PyTorch eager (cuDNN) and under torch.compile.

    python benchmarks/bench_train.py specs/alexnet.yaml --batch 128 --steps 20      # on a GPU
    python benchmarks/bench_train.py --tiny --out /tmp/results                     # CPU smoke run

Every contender does the same work per step: forward, backward and the paper's SGD update on the
same initial weights and the same synthetic batch. Images per second are measured over `--steps`
steps after `--warmup` steps, with the device synchronised. The JSON (device, torch and triton
versions, date, every row) goes to benchmarks/results/ unless --out says otherwise.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), "")
    except OSError:
        model = platform.processor()
    return f"cpu: {model or 'unknown'}, {os.cpu_count()} cores"


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step, device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def run(argv=None) -> dict:
    import torch

    from alexnetc.compiler import compile_spec
    from alexnetc.runtime.app.specs import resolve_spec_path
    from alexnetc.runtime.execution.eager import EagerNet
    from alexnetc.runtime.execution.executor import Executor, default_group2ctx, describe_binding
    from alexnetc.runtime.execution.optim import SGD
    from alexnetc.runtime.execution.params import init_params

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default="alexnet")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", choices=("auto", "cpu"), default="auto")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    ap.add_argument("--tiny", action="store_true", help="mini spec, batch 4, 2 steps: a CPU smoke run")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args(argv)
    if args.tiny:
        args.spec, args.batch, args.steps, args.warmup = "variants/mini", 4, 2, 1

    net = compile_spec(resolve_spec_path(args.spec), batch=args.batch)
    g2c = default_group2ctx(net, "cpu" if args.device == "cpu" else None)
    device = next(iter(g2c.values()))
    params = init_params(net, 0)
    c, h, w = net.input_shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, c, h, w, generator=gen).to(device)
    y = torch.randint(0, net.classes, (args.batch,), generator=gen).to(device)
    rows = []

    ex = Executor(net, g2c, for_training=True, params=params)
    mults = {n.name: (n.attrs.get("lr_mult", 1.0), n.attrs.get("decay_mult", 1.0)) for n in ex.param_nodes}
    opt = SGD(ex.params, mults)
    state = {"step": 0}

    def ours():
        ex.step_count = state["step"]
        ex.forward(x, y, is_train=True)
        ex.backward()
        opt.step(ex.grads, 0.01)
        state["step"] += 1

    t = _time_steps(ours, device, args.warmup, args.steps)
    rows.append({"impl": "alexnetc", "binding": describe_binding(g2c), "ms_per_step": t * 1e3,
                 "images_per_second": args.batch / t})

    def eager_step(model, optim):
        def step():
            optim.zero_grad(set_to_none=True)
            loss, _ = model(x, y)
            loss.backward()
            optim.step()
        return step

    model = EagerNet(net, params).to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optim = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)
    t = _time_steps(eager_step(model, optim), device, args.warmup, args.steps)
    rows.append({"impl": "pytorch-eager", "binding": str(device), "ms_per_step": t * 1e3,
                 "images_per_second": args.batch / t})
    if not args.no_compile:
        try:
            cmodel = torch.compile(EagerNet(net, params).to(device).train())
            coptim = torch.optim.SGD(cmodel.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)
            t = _time_steps(eager_step(cmodel, coptim), device, max(args.warmup, 2), args.steps)
            rows.append({"impl": "torch.compile", "binding": str(device), "ms_per_step": t * 1e3,
                         "images_per_second": args.batch / t})
        except Exception as exc:  # a compiler toolchain missing on this machine is a row, not a crash
            rows.append({"impl": "torch.compile", "binding": str(device), "error": f"{type(exc).__name__}: {exc}"[:300]})

    try:
        import triton
        triton_version = triton.__version__
    except Exception:
        triton_version = None
    result = {
        "benchmark": "train_step", "spec": net.name, "batch": args.batch, "steps": args.steps,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "torch": torch.__version__, "triton": triton_version, "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "rows": rows,
    }
    base = next((r["images_per_second"] for r in rows if r["impl"] == "pytorch-eager"), None)
    print(f"{net.name}, batch {args.batch}, {result['device']}, torch {torch.__version__}, triton {triton_version}")
    print(f"{'impl':<15} {'ms/step':>10} {'images/s':>10} {'vs eager':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['impl']:<15} {'failed: ' + r['error'][:60]}")
            continue
        ratio = r["images_per_second"] / base if base else float("nan")
        print(f"{r['impl']:<15} {r['ms_per_step']:>10.2f} {r['images_per_second']:>10.1f} {ratio:>8.2f}x")
    os.makedirs(args.out, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out, f"train-{net.name}-{device.type}-{stamp}.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    print(f"written {path}")
    result["path"] = path
    return result


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run()
