"""Training throughput: our runtime (graph executor + our kernels) against the same network in plain
PyTorch eager (cuDNN) and under torch.compile.

    python benchmarks/bench_train.py specs/alexnet.yaml --batch 128 --steps 20      # on a GPU
    python benchmarks/bench_train.py variants/googlenet-mini --device cpu --batch 128
    python benchmarks/bench_train.py --tiny --out /tmp/results                     # CPU smoke run

Any spec (a file, or a shipped name: alexnet, vgg16, variants/resnet-mini, ...) whatever its layers
(blocks, residual adds, auxiliary loss heads, global pooling). Every contender does the same work
per step: forward, backward and the paper's SGD update on the same initial weights and the same
synthetic batch. The contenders are timed in turns, `--repeats` rounds of `--steps` steps each (after
`--warmup` steps), so on a shared machine they see the same load; a row's time is the median round,
every round is in the JSON. The load average before and after is recorded too. The JSON (device,
torch and triton versions, date, load, every row) goes to benchmarks/results/ unless --out says
otherwise.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # results_io, beside this file
from results_io import RESULTS, device_name, environment, machine_load, write_result  # noqa: E402


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step, device, steps: int) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def run(argv=None) -> dict:
    import torch

    from alexnetc.compiler import compile_spec
    from alexnetc.compiler.ops.weighted import param_multipliers
    from alexnetc.runtime.app.specs import resolve_spec_path
    from alexnetc.runtime.execution.eager import EagerNet
    from alexnetc.runtime.execution.executor import Executor, default_group2ctx, describe_binding
    from alexnetc.runtime.execution.host_memory import keep_freed_maps
    from alexnetc.runtime.execution.optim import SGD
    from alexnetc.runtime.execution.params import init_params

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default="alexnet")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of --steps per contender, in turns (median)")
    ap.add_argument("--device", choices=("auto", "cpu"), default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    ap.add_argument("--tiny", action="store_true", help="mini spec, batch 4, 2 steps: a CPU smoke run")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    if args.tiny:
        args.spec, args.batch, args.steps, args.warmup, args.repeats = "variants/mini", 4, 2, 1, 1

    if args.threads:
        torch.set_num_threads(args.threads)
    net = compile_spec(resolve_spec_path(args.spec), batch=args.batch)
    g2c = default_group2ctx(net, "cpu" if args.device == "cpu" else None)
    device = next(iter(g2c.values()))
    params = init_params(net, 0)
    c, h, w = net.input_shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, c, h, w, generator=gen).to(device)
    y = torch.randint(0, net.classes, (args.batch,), generator=gen).to(device)
    load_before = machine_load()

    ex = Executor(net, g2c, for_training=True, params=params)
    # Unless ALEXNETC_HOST_HEAP=off, binding on the CPU raised malloc's thresholds for the whole process
    # (runtime/execution/host_memory.py): every contender below then runs with freed maps kept in the
    # heap, not only ours.
    heap_kept = device.type == "cpu" and keep_freed_maps()
    mults = {n.name: param_multipliers(n) for n in ex.param_nodes}
    opt = SGD(ex.params, mults)
    state = {"step": 0}

    def ours():
        ex.step_count = state["step"]
        ex.forward(x, y, is_train=True)
        ex.backward()
        opt.step(ex.grads, 0.01)
        state["step"] += 1

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
    contenders = {"alexnetc": (ours, describe_binding(g2c)), "pytorch-eager": (eager_step(model, optim), str(device))}
    errors = {}
    if not args.no_compile:
        cmodel = torch.compile(EagerNet(net, params).to(device).train())
        coptim = torch.optim.SGD(cmodel.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)
        contenders["torch.compile"] = (eager_step(cmodel, coptim), str(device))
    for impl, (step, _) in list(contenders.items()):
        try:
            for _ in range(max(args.warmup, 2) if impl == "torch.compile" else args.warmup):
                step()
        except Exception as exc:  # a compiler toolchain missing on this machine is a row, not a crash
            if impl != "torch.compile":
                raise
            errors[impl] = f"{type(exc).__name__}: {exc}"[:300]
            del contenders[impl]
    rounds: dict[str, list[float]] = {impl: [] for impl in contenders}
    for _ in range(args.repeats):
        for impl, (step, _) in contenders.items():
            rounds[impl].append(_time_steps(step, device, args.steps))
    rows = []
    for impl, (_, binding) in contenders.items():
        t = statistics.median(rounds[impl])
        rows.append({"impl": impl, "binding": binding, "ms_per_step": t * 1e3, "images_per_second": args.batch / t,
                     "rounds_ms": [r * 1e3 for r in rounds[impl]]})
    rows += [{"impl": impl, "binding": str(device), "error": msg} for impl, msg in errors.items()]

    result = {
        "benchmark": "train_step", "spec": net.name, "spec_path": args.spec, "batch": args.batch,
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "device": device_name(device),
        **environment(), "torch_threads": torch.get_num_threads(),
        "load_before": load_before, "load_after": machine_load(), "rows": rows,
        "host_heap_kept_for_all_contenders": heap_kept,
    }
    base = next((r["images_per_second"] for r in rows if r["impl"] == "pytorch-eager"), None)
    print(f"{net.name}, batch {args.batch}, {result['device']}, torch {result['torch']}, triton {result['triton']}, "
          f"load {result['load_before']['load_average_1_5_15min'][0]} -> {result['load_after']['load_average_1_5_15min'][0]}")
    print(f"{'impl':<15} {'ms/step':>10} {'images/s':>10} {'vs eager':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['impl']:<15} {'failed: ' + r['error'][:60]}")
            continue
        ratio = r["images_per_second"] / base if base else float("nan")
        print(f"{r['impl']:<15} {r['ms_per_step']:>10.2f} {r['images_per_second']:>10.1f} {ratio:>8.2f}x")
    write_result(result, args.out, f"train-{net.name}-{device.type}")
    return result


if __name__ == "__main__":
    run()
