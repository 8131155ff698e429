"""What the CPU speed work bought, op by op and step by step: the reference backend's map layout
(channels-last, `kernels/reference/_common.py` `maps`, against NCHW: `maps` patched to `.contiguous()`,
as tests/runtime/execution/test_golden_step.py does), LRN's power (exp2(-beta log2 s) against ATen's pow),
the strided 1x1 data gradient, and freed maps kept in the heap (the default) or not (`ALEXNETC_HOST_HEAP=off`).

CPU time of one thread (`time.thread_time`, median of rounds), which a shared machine's load moves much
less than wall-clock time; whole training steps (forward, backward, SGD) run in fresh processes, one per
setting, with their minor page faults counted. Writes benchmarks/results/cpu-layout-<stamp>.json.

    python benchmarks/bench_cpu_layout.py [--batch 128] [--specs variants/mini variants/resnet-mini] [--out DIR]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # results_io, beside this file
from results_io import RESULTS, device_name, environment, machine_load, write_result  # noqa: E402

from alexnetc.kernels.reference import conv as _conv  # noqa: E402
from alexnetc.kernels.reference import lrn as _lrn  # noqa: E402

_ORIGINAL = {"pow": _lrn._pow_neg, "pointwise": _conv._strided_pointwise_data}


def _cpu_ms(fn, rounds: int = 5, reps: int = 5) -> float:
    fn()
    fn()
    times = []
    for _ in range(rounds):
        t = time.thread_time()
        for _ in range(reps):
            fn()
        times.append((time.thread_time() - t) / reps * 1e3)
    return statistics.median(times)


def _transposed(dy, w, H, W, sh, sw, num_group):
    """The strided 1x1 data gradient as before: oneDNN's strided transposed convolution."""
    import torch.nn.functional as F

    P, Q = dy.shape[2], dy.shape[3]
    return F.conv_transpose2d(dy, w, stride=(sh, sw), output_padding=(H - (P - 1) * sh - 1, W - (Q - 1) * sw - 1),
                              groups=num_group)


def _nchw(on: bool) -> None:
    """Patch (or restore) the reference as it was before the CPU speed work, for this process: maps in
    NCHW, LRN's power on ATen's pow, the strided 1x1 data gradient on oneDNN."""
    from alexnetc.kernels.reference import _common, conv, lrn, pool

    conv.maps = pool.maps = (lambda t: t.contiguous()) if on else _common.maps
    lrn._pow_neg = (lambda s, beta: s.pow(-beta)) if on else _ORIGINAL["pow"]
    conv._strided_pointwise_data = _transposed if on else _ORIGINAL["pointwise"]


def _ops(batch: int) -> list[dict]:
    import torch

    from alexnetc.kernels.reference import batchnorm, conv, lrn, pool

    g = torch.Generator().manual_seed(0)
    w16, w1 = torch.randn(16, 16, 3, 3, generator=g), torch.randn(16, 1, 5, 5, generator=g)
    w32, p32 = torch.randn(32, 16, 3, 3, generator=g), torch.randn(32, 16, 1, 1, generator=g)
    ones, zeros = torch.ones(16), torch.zeros(16)
    lrn_args = dict(size=5, k=2.0, alpha=2e-5, beta=0.75)
    cases = {   # name: (input shape, callable of x): the minis' shapes at this batch
        "conv 3x3 16->16 28x28 (resnet-mini layer1)": (
            (batch, 16, 28, 28), lambda x: conv.conv(x, w16, None, stride=1, pad=1, num_group=1, out_size=28,
                                                     act="none")),
        "conv 5x5 1->16 28x28 (mini conv1, one tower)": (
            (batch, 1, 28, 28), lambda x: conv.conv(x, w1, None, stride=1, pad=2, num_group=1, out_size=28,
                                                    act="relu")),
        "conv data gradient 3x3/2 16->32 28x28": (
            (batch, 32, 14, 14), lambda dy: conv.conv_backward_data(dy, w32, in_hw=28, stride=2, pad=1, num_group=1)),
        "conv weight gradient 3x3 32->32 14x14": (
            (batch, 32, 14, 14), lambda dy: conv.conv_backward_weight(dy, dy, kernel=3, stride=1, pad=1,
                                                                      num_group=1)),
        "conv data gradient 1x1/2 16->32 28x28 (projection)": (
            (batch, 32, 14, 14), lambda dy: conv.conv_backward_data(dy, p32, in_hw=28, stride=2, pad=0, num_group=1)),
        "maxpool 3/2 16x28x28 forward+backward": (
            (batch, 16, 28, 28), lambda x: pool.maxpool_backward(
                *pool.maxpool(x, kernel=3, stride=2, pad=0, out_size=13), in_hw=28, kernel=3, stride=2, pad=0)),
        "batchnorm 16x28x28 forward+backward": (
            (batch, 16, 28, 28), lambda x: batchnorm.batchnorm_backward(
                x, x, ones, *batchnorm.batchnorm(x, ones, zeros, zeros, ones, eps=1e-5, momentum=0.1,
                                                 act="relu")[1:3])),
        "lrn 5 16x28x28 forward+backward (mini norm1, one tower)": (
            (batch, 16, 28, 28), lambda x: lrn.lrn_backward(x, x, *lrn.lrn(x, **lrn_args), **lrn_args)),
    }
    rows = []
    for name, (shape, fn) in cases.items():
        x = torch.randn(*shape, generator=g)
        row = {"op": name}
        for layout in ("nchw", "channels_last"):
            _nchw(layout == "nchw")
            row[f"{layout}_ms"] = round(_cpu_ms(functools.partial(fn, x)), 3)
        _nchw(False)
        row["speedup"] = round(row["nchw_ms"] / row["channels_last_ms"], 2)
        rows.append(row)
    return rows


def _step_worker(spec: str, batch: int, layout: str) -> dict:
    import resource

    import torch

    from alexnetc.compiler import compile_spec
    from alexnetc.compiler.ops.weighted import param_multipliers
    from alexnetc.runtime.app.specs import resolve_spec_path
    from alexnetc.runtime.execution.executor import Executor, default_group2ctx
    from alexnetc.runtime.execution.host_memory import keep_freed_maps
    from alexnetc.runtime.execution.optim import SGD
    from alexnetc.runtime.execution.params import init_params

    torch.set_num_threads(1)
    _nchw(layout == "nchw")
    net = compile_spec(resolve_spec_path(spec), batch=batch)
    ex = Executor(net, default_group2ctx(net, "cpu"), params=init_params(net, 0))
    opt = SGD(ex.params, {n.name: param_multipliers(n) for n in ex.param_nodes})
    c, h, w = net.input_shape
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, c, h, w, generator=g), torch.randint(0, net.classes, (batch,), generator=g)

    def step():
        ex.forward(x, y, is_train=True)
        ex.backward()
        opt.step(ex.grads, 0.01)

    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ms = _cpu_ms(step, rounds=3, reps=3)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 17   # 2 warm-up + 15 timed
    return {"spec": spec, "layout": layout, "heap_kept": keep_freed_maps(), "cpu_ms_per_step": round(ms, 2),
            "minor_faults_per_step": round(faults)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--specs", nargs="*", default=["variants/mini", "variants/resnet-mini"])
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--worker", nargs=2, metavar=("SPEC", "LAYOUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_step_worker(args.worker[0], args.batch, args.worker[1])))
        return {}
    import torch

    torch.set_num_threads(1)
    load_before = machine_load()
    ops = _ops(args.batch)
    steps = []
    for spec in args.specs:
        for layout in ("nchw", "channels_last"):   # nchw: the reference as before (see _nchw)
            for heap in ("off", "keep"):
                env = {**os.environ, "ALEXNETC_HOST_HEAP": heap}
                out = subprocess.run([sys.executable, __file__, "--batch", str(args.batch), "--worker", spec, layout],
                                     env=env, capture_output=True, text=True, check=True)
                steps.append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = {"benchmark": "cpu_layout", "batch": args.batch, "device": device_name(), **environment(),
              "torch_threads": 1, "measure": "thread CPU time, median of rounds",
              "load_before": load_before, "load_after": machine_load(), "ops": ops, "steps": steps}
    print(f"{'op (one thread, CPU ms)':<58} {'before':>8} {'now':>8} {'x':>6}")
    for r in ops:
        print(f"{r['op']:<58} {r['nchw_ms']:>8.2f} {r['channels_last_ms']:>8.2f} {r['speedup']:>6.2f}")
    print(f"{'step':<26} {'layout':<14} {'heap':<6} {'CPU ms':>8} {'faults':>8}")
    for r in steps:
        print(f"{r['spec']:<26} {r['layout']:<14} {'kept' if r['heap_kept'] else 'os':<6} "
              f"{r['cpu_ms_per_step']:>8.2f} {r['minor_faults_per_step']:>8}")
    write_result(result, args.out, "cpu-layout")
    return result



if __name__ == "__main__":
    main()
