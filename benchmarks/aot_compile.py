"""Compile every Triton kernel launch of the shipped specs' training steps for real GPUs, without one.

    python benchmarks/aot_compile.py                      # the whole matrix: sm_80 and sm_90a, 2 processes
    python benchmarks/aot_compile.py --specs specs/alexnet.yaml --archs sm_90a --precisions bf16
    python benchmarks/aot_compile.py --subset --out /tmp/aot    # what the default test suite compiles

Each distinct (kernel launch, autotune config, architecture) is compiled once (kernels/aot), and the
JSON written to benchmarks/results/aot-compile-<stamp>.json (results_io) holds, per compile: the
kernel, dtype, config, registers, spilled bytes, shared memory, occupancy and compile seconds, with
the specs and layers that launch it; and a summary: compile errors, configs over the shared-memory
limit, and spilling configs, those in kernels/aot/accepted.py marked with their reason.
Runs with TRITON_INTERPRET unset (the GPU autotune configs); the full matrix takes most of an hour
on a 2-core machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results_io  # noqa: E402


def _uses_summary(uses) -> dict:
    return {"specs": sorted({u.spec for u in uses}), "precisions": sorted({u.precision for u in uses}),
            "layers": sorted({f"{u.spec}:{u.layer}:{u.phase}" for u in uses})[:12], "uses": len(uses)}


def main(argv=None) -> int:
    os.environ.pop("TRITON_INTERPRET", None)
    from alexnetc.kernels.aot.accepted import accepted_reason
    from alexnetc.kernels.aot.archs import ARCHS
    from alexnetc.kernels.aot.launches import PRECISIONS, shipped_specs, training_matrix
    from alexnetc.kernels.aot.matrix import jobs, representative, run

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--specs", nargs="*", help="spec files (default: specs/*.yaml and specs/variants/*.yaml)")
    p.add_argument("--archs", nargs="*", default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--precisions", nargs="*", default=list(PRECISIONS), choices=list(PRECISIONS))
    p.add_argument("--workers", type=int, default=2, help="compile processes (default 2)")
    p.add_argument("--subset", action="store_true",
                   help="only a representative subset: each kernel in each dtype at its largest tile (about 70)")
    p.add_argument("--out", default=results_io.RESULTS, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)

    load_before = results_io.machine_load()
    matrix = training_matrix(args.specs or shipped_specs(), tuple(args.precisions))
    work = jobs(matrix, tuple(args.archs))
    if args.subset:
        work = representative(work, tuple(args.archs))
    print(f"{len(matrix.uses)} distinct launches, {len(work)} compiles on {args.workers} processes", flush=True)
    start = time.time()

    def progress(done: int, total: int) -> None:
        if done % 50 == 0 or done == total:
            el = time.time() - start
            print(f"  {done}/{total} compiled, {el / 60:.1f} min, about {el / done * (total - done) / 60:.0f} min left",
                  flush=True)

    rows = run(work, args.workers, progress)
    wall = time.time() - start
    for job, row in zip(work, rows):
        row.update(_uses_summary(matrix.uses[job.launch]))
        if row.get("spill_stores"):
            row["accepted_spill"] = accepted_reason(row)
    errors = [r for r in rows if "error" in r]
    over = [r for r in rows if r.get("over_shared_limit")]
    spills = [r for r in rows if r.get("spill_stores")]
    result = {
        "benchmark": "aot_compile", "device": f"{results_io.cpu_name()} (compiling for {', '.join(args.archs)}; no GPU)",
        **results_io.environment(), "load_before": load_before, "load_after": results_io.machine_load(),
        "workers": args.workers, "wall_seconds": round(wall, 1),
        "archs": {a: vars(ARCHS[a]) for a in args.archs}, "precisions": args.precisions,
        "specs": sorted({u.spec for us in matrix.uses.values() for u in us}), "subset": args.subset,
        "kernels_in_matrix": sorted({launch.name for launch in matrix.uses}),
        "summary": {"launches": len(matrix.uses), "compiles": len(rows), "errors": len(errors),
                    "over_shared_limit": len(over), "spilling": len(spills),
                    "spilling_accepted": sum(1 for r in spills if r.get("accepted_spill")),
                    "compile_seconds_total": round(sum(r.get("seconds", 0) for r in rows), 1)},
        "rows": rows,
    }
    results_io.write_result(result, args.out, "aot-compile")
    s = result["summary"]
    print(f"{s['compiles']} compiles in {wall / 60:.1f} min: {s['errors']} errors, {s['over_shared_limit']} over the "
          f"shared-memory limit, {s['spilling']} spilling ({s['spilling_accepted']} accepted)")
    return 1 if errors or over or len(spills) > s["spilling_accepted"] else 0


if __name__ == "__main__":
    sys.exit(main())
