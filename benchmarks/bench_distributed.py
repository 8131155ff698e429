"""Data-parallel step time: 1 and 2 processes (gloo on 127.0.0.1), gradient all-reduce overlapping the
backward pass or after it (and, with --sync-bn, overlapping with batch norm synchronised across the
processes).

    python benchmarks/bench_distributed.py                                   # mini spec, batch 64
    python benchmarks/bench_distributed.py alexnet --batch 4 --steps 3       # 244 MB of gradients
    python benchmarks/bench_distributed.py --tiny --out /tmp/results         # smoke run
    python benchmarks/bench_distributed.py variants/resnet-mini --sync-bn    # + synchronised batch norm

Each row is one configuration: `processes` replicas on the CPU, each computing its shard of the
same global batch (so a row's images/s is the job's), one `DataParallel.train_step` per step
(forward, count all-reduce, backward with the bucketed gradient all-reduce, SGD update). The
`plain` row is one process without any torch.distributed. Timed over `--steps` steps after
`--warmup`, the modes alternating in the same processes `--repeats` times (each block's time
is the slowest process's mean; the median block is reported, all blocks are in the JSON). The load average at the
end is recorded: on a shared machine other processes' load skews every number. `exposed_comm_ms` is
step time minus the one-process-per-shard compute time measured in the same run (the plain step
of a shard-sized batch), i.e. the communication the step could not hide. The JSON (machine, torch
version, date, rows) goes to benchmarks/results/ unless --out says otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # results_io, beside this file
from results_io import RESULTS, cpu_name, environment, machine_load, write_result  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(spec: str, batch: int, local: int):
    import torch

    from alexnetc.compiler import compile_spec
    from alexnetc.compiler.ops.weighted import param_multipliers
    from alexnetc.runtime.app.specs import resolve_spec_path
    from alexnetc.runtime.execution.executor import Executor
    from alexnetc.runtime.execution.optim import SGD
    from alexnetc.runtime.execution.params import init_params

    net = compile_spec(resolve_spec_path(spec), batch=max(local, 1))
    g2c = {d: torch.device("cpu") for d in net.devices}
    ex = Executor(net, g2c, for_training=True, params=init_params(net, 0))
    mults = {n.name: param_multipliers(n) for n in ex.param_nodes}
    opt = SGD(ex.params, mults)
    c, h, w = net.input_shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c, h, w, generator=gen)
    y = torch.randint(0, net.classes, (batch,), generator=gen)
    return net, ex, opt, x, y


def _timed(step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def _worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    import torch
    import torch.distributed as dist

    from alexnetc.runtime.execution.distributed import DataParallel, DistContext, StatsSync, shard

    torch.set_num_threads(cfg["threads"])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    ctx = DistContext(rank, world, rank, world, "gloo", 600.0)
    part = shard(cfg["batch"], rank, world)
    net, ex, opt, x, y = _setup(cfg["spec"], cfg["batch"], len(part))
    xs, ys = x[part.start:part.stop], y[part.start:part.stop]
    dp = DataParallel(ctx, ex, cfg["bucket_mb"], True)
    sync = StatsSync(ctx) if ex.state else None
    state = {"step": 0}

    def step():
        ex.seed, ex.step_count = 0, state["step"]
        dp.train_step(xs, ys, cfg["batch"], lambda g: opt.step(g, 0.001))
        state["step"] += 1

    # The two modes alternate in blocks of `steps` steps in the same processes, `repeats` times, so a
    # change in the machine's load hits both alike; the median block per mode is reported.
    modes = cfg["modes"]
    blocks: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(cfg["repeats"]):
        for mode in (modes if i % 2 == 0 else modes[::-1]):
            dp.reducer.overlap = mode != "after-backward"
            ex.sync = sync if mode == "overlap+sync-bn" else None   # batch norm over the global batch
            dist.barrier()
            t = _timed(step, cfg["warmup"], cfg["steps"])
            slowest = torch.tensor([t], dtype=torch.float64)
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            blocks[mode].append(float(slowest))
    if rank == 0:
        with open(out, "w") as fh:
            json.dump({"blocks": blocks, "buckets": len(dp.reducer.buckets),
                       "describe": dp.reducer.describe()}, fh)
    dist.destroy_process_group()


def _plain(cfg: dict, local: int) -> float:
    """One process, no torch.distributed, a batch of `local` images: the compute of one shard."""
    import torch

    torch.set_num_threads(cfg["threads"])
    net, ex, opt, x, y = _setup(cfg["spec"], local, local)
    x, y = x[:local], y[:local]
    state = {"step": 0}

    def step():
        ex.step_count = state["step"]
        ex.forward(x, y, is_train=True)
        ex.backward()
        opt.step(ex.grads, 0.001)
        state["step"] += 1

    return statistics.median(_timed(step, cfg["warmup"], cfg["steps"]) for _ in range(cfg["repeats"]))


def run(argv=None) -> dict:
    import tempfile

    import torch
    import torch.multiprocessing as mp

    from alexnetc.runtime.execution.distributed import shard

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default="variants/mini")
    ap.add_argument("--batch", type=int, default=64, help="global batch (default 64)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="blocks of --steps per mode, interleaved (median)")
    ap.add_argument("--bucket-mb", type=float, default=25.0)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per process (default: cores / processes, at least 1)")
    ap.add_argument("--sync-bn", action="store_true",
                    help="also time overlap with synchronised batch norm (a spec with batch norm)")
    ap.add_argument("--tiny", action="store_true", help="batch 4, 1 step, 0.1 MB buckets: a smoke run")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    if args.tiny:
        args.batch, args.steps, args.warmup, args.bucket_mb, args.repeats = 4, 1, 1, 0.1, 1

    cores = os.cpu_count() or 1
    rows = []
    for world in args.processes:
        cfg = {"spec": args.spec, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
               "bucket_mb": args.bucket_mb, "threads": args.threads or max(1, cores // world),
               "repeats": args.repeats,
               "modes": ["overlap", "after-backward"] + (["overlap+sync-bn"] if args.sync_bn else [])}
        local = len(shard(args.batch, 0, world))
        compute = _plain(cfg, local)
        if world == 1:
            rows.append({"processes": 1, "mode": "plain", "threads_per_process": cfg["threads"],
                         "ms_per_step": compute * 1e3, "images_per_second": args.batch / compute})
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "r.json")
            mp.spawn(_worker, args=(world, _free_port(), cfg, out), nprocs=world, join=True)
            with open(out) as fh:
                r = json.load(fh)
        for mode in cfg["modes"]:
            t = statistics.median(r["blocks"][mode])
            rows.append({"processes": world, "mode": mode, "threads_per_process": cfg["threads"],
                         "buckets": r["buckets"], "ms_per_step": t * 1e3, "images_per_second": args.batch / t,
                         "blocks_ms": [b * 1e3 for b in r["blocks"][mode]],
                         "shard_compute_ms": compute * 1e3, "exposed_comm_ms": (t - compute) * 1e3})
    result = {
        "benchmark": "distributed_train_step", "spec": args.spec, "global_batch": args.batch,
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "bucket_mb": args.bucket_mb,
        "backend": "gloo (127.0.0.1)",
        "device": cpu_name(), **environment(),
        "load_at_end": machine_load(),  # the machine is shared: other load skews times
        "rows": rows,
    }
    print(f"{args.spec}, global batch {args.batch}, buckets {args.bucket_mb:g} MB, {result['device']}, "
          f"torch {torch.__version__}")
    print(f"{'procs':>5} {'mode':<15} {'ms/step':>10} {'images/s':>9} {'exposed comm ms':>16}")
    for r in rows:
        exp = f"{r['exposed_comm_ms']:.1f}" if "exposed_comm_ms" in r else ""
        print(f"{r['processes']:>5} {r['mode']:<15} {r['ms_per_step']:>10.1f} {r['images_per_second']:>9.1f} "
              f"{exp:>16}")
    name = args.spec.replace("/", "-").replace(".yaml", "")
    write_result(result, args.out, f"distributed-{name}-cpu")
    return result


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run()
