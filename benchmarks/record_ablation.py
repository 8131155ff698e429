"""Record one `alexnetc ablate` run under benchmarks/results/: its ablation.json (every run's numbers, the
spreads, the effects and verdicts), the command that made it, the machine and the software versions,
so docs/ablations.md quotes only numbers kept here.

    python benchmarks/record_ablation.py runs/ablate --command "alexnetc ablate --seeds 3 ..."
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_io import RESULTS, cpu_name, environment, machine_load, write_result  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the ablate command's --out directory (holding ablation.json)")
    p.add_argument("--command", required=True, help="the command line that produced it, verbatim")
    p.add_argument("--stem", default="ablation-mini-cpu", help="file name stem (default ablation-mini-cpu)")
    p.add_argument("--results", default=RESULTS, help="where to write (default benchmarks/results)")
    args = p.parse_args(argv)
    with open(os.path.join(args.out, "ablation.json"), encoding="utf-8") as fh:
        report = json.load(fh)
    seconds = sum(r["train_seconds"] for s in report["specs"] for r in s["runs"])
    result = {"benchmark": "ablation", "command": args.command, "device": cpu_name(), **environment(),
              "load_when_recorded": machine_load(), "training_seconds_all_runs": seconds, "report": report}
    write_result(result, args.results, args.stem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
