"""`alexnetc compare`: train several specs alike, with one seed or several, and compare them (the paper's
Figure 1, and the repeated runs behind any claim that one variant beats another).

Every spec is trained with every seed (seeds s, s+1, ... s+N-1 from --seed or the first spec's), the same
data and epoch budget, each run checkpointed in ``OUT/<name>/`` (one seed) or ``OUT/<name>/seed-<s>/``;
re-running the same command resumes an interrupted comparison and skips finished runs. The report, per
spec: final validation top-1/top-5 error, updates (steps) and epochs to the target training error, as
mean ± the half-width of the 95 % t-interval (min–max) over the seeds (`spread`), printed and written
as ``OUT/compare.md`` and ``OUT/compare.json``; the training-error curves as the mean over seeds with a
min–max band on ``OUT/compare.png``. `alexnetc ablate` (`ablate_command`) runs through the same steps.

Steps to the target come from the runs' ``metrics.csv`` step rows (`training.run_log`): the first step
row whose training error over the updates since the previous row (every `run_log.STEP_EVERY`) is at or
below the target. A run that never gets there counts with the steps it ran, as a lower bound (marked ≥).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import UserError, say, write_text
from .spread import Spread, summarize

EPILOG_COMPARE = """examples:
  alexnetc compare specs/alexnet.yaml variants/tanh --data /data/cifar --target-error 0.25 --out runs/relu-vs-tanh
  alexnetc compare variants/mini variants/mini-tanh --epochs 3 --limit-train-batches 50   # Fashion-MNIST, on a CPU
  alexnetc compare variants/mini variants/mini-tanh --seeds 3 --epochs 2 --limit-train-batches 40

Trains each spec with the same seed(s), data and epoch budget (each in OUT/<name>/, or OUT/<name>/seed-<s>/
with --seeds N; checkpointed), plots their training error (mean over seeds, min-max band) on one PNG
(OUT/compare.png unless --png) and reports per spec the final validation top-1/top-5 error and the
steps and epochs to the target training error: mean +- the 95% t-interval's half-width (min-max) over
the seeds, printed and in OUT/compare.md and OUT/compare.json (the paper's Figure 1: ReLU reaches 25%
error six times faster than tanh). Re-running the same command resumes an interrupted comparison;
finished runs are not retrained. Every spec is compiled and checked against the data (channels, class
count) before the first is trained."""

STATISTIC = ("mean ± half-width of the 95 % Student-t interval of the mean (min–max) over the seeds")


# --------------------------------------------------------------------------- one run's numbers

def run_names(specs: list[str]) -> list[str]:
    """A sub-directory name per spec: the file's stem, with its index where stems repeat."""
    stems = [os.path.splitext(os.path.basename(s))[0] or "spec" for s in specs]
    return [s if stems.count(s) == 1 else f"{s}-{i + 1}" for i, s in enumerate(stems)]


def epochs_to_target(records: list[dict], target: float, key: str = "train_top1_err") -> int | None:
    """The first epoch whose ``key`` is at or below ``target`` (None: never)."""
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and v <= target:
            return int(r["epoch"])
    return None


def epoch_records(metrics_path: str) -> list[dict]:
    """A run's per-epoch records, one per epoch (the last written wins: a resumed epoch replaces a
    record whose checkpoint was lost), in epoch order."""
    from ..training.metrics import read_metrics

    if not os.path.isfile(metrics_path):
        return []
    last: dict[int, dict] = {}
    for r in read_metrics(metrics_path):
        e = r.get("epoch")
        if isinstance(e, (int, float)) and not isinstance(e, bool):
            last[int(e)] = r
    return [last[e] for e in sorted(last)]


def step_rows(csv_path: str) -> list[tuple[int, float]]:
    """(step, training top-1 error over the updates since the previous row) of a metrics.csv's step rows."""
    from ..training.run_log import read_csv_rows

    if not os.path.isfile(csv_path):
        return []
    out = []
    try:
        rows = read_csv_rows(csv_path)
    except (OSError, ValueError):
        return []
    for r in rows:
        try:
            if r.get("train_top1_err_step"):
                out.append((int(r["step"]), float(r["train_top1_err_step"])))
        except (TypeError, ValueError):
            continue
    return out


def steps_to_target(rows: list[tuple[int, float]], target: float) -> int | None:
    """The first step row at or below `target` (None: never)."""
    return next((s for s, e in rows if e <= target), None)


@dataclass
class RunResult:
    """One run of a comparison, read back from its directory."""

    seed: int
    epochs_run: int
    steps_run: int
    val_top1_err: float | None
    val_top5_err: float | None
    train_top1_err: float | None          # the last epoch's (with dropout and augmentation, as trained)
    epochs_to_target: int | None
    steps_to_target: int | None
    train_seconds: float
    curve: list[tuple[float, float]] = field(default_factory=list)   # (epoch, training error), finest kept

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "curve"}


def read_run(run_dir: str, seed: int, epochs: int, target: float) -> RunResult:
    """The numbers of the run in `run_dir`, up to epoch `epochs`."""
    recs = [r for r in epoch_records(os.path.join(run_dir, "metrics.jsonl")) if r["epoch"] <= epochs]
    last = recs[-1] if recs else {}
    steps_run = int(last.get("step") or 0)
    rows = [(s, e) for s, e in step_rows(os.path.join(run_dir, "metrics.csv")) if s <= steps_run]
    per_epoch = steps_run / len(recs) if recs and steps_run else 0
    if rows and per_epoch:     # the step rows, at fractional epochs
        curve = [(s / per_epoch, e) for s, e in rows]
    else:
        curve = [(float(r["epoch"]), r["train_top1_err"]) for r in recs
                 if isinstance(r.get("train_top1_err"), (int, float))]

    def num(key: str) -> float | None:
        v = last.get(key)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None

    return RunResult(seed, len(recs), steps_run, num("val_top1_err"), num("val_top5_err"), num("train_top1_err"),
                     epochs_to_target(recs, target), steps_to_target(rows, target) if rows else None,
                     sum(float(r.get("train_seconds") or 0) for r in recs), curve)


# --------------------------------------------------------------------------- several seeds

@dataclass
class SpecResult:
    """One spec's runs over the seeds and their spreads."""

    name: str
    spec: str
    runs: list[RunResult]

    def spread(self, key: str) -> Spread | None:
        vals = [getattr(r, key) for r in self.runs if getattr(r, key) is not None]
        return summarize(vals) if vals and len(vals) == len(self.runs) else None

    def to_target(self, unit: str) -> tuple[Spread | None, int]:
        """The spread of steps (or epochs) to the target, a run that never got there counted with what it
        ran (a lower bound), and how many of the runs did not get there."""
        got = [getattr(r, f"{unit}_to_target") for r in self.runs]
        ran = [getattr(r, f"{unit}_run") for r in self.runs]
        vals = [g if g is not None else n for g, n in zip(got, ran) if g is not None or n]
        if not vals:
            return None, len(self.runs)
        return summarize(vals), sum(g is None for g in got)

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "spec": self.spec, "runs": [r.as_dict() for r in self.runs]}
        for key in ("val_top1_err", "val_top5_err"):
            s = self.spread(key)
            out[key] = s.as_dict() if s else None
        for unit in ("steps", "epochs"):
            s, missed = self.to_target(unit)
            out[f"{unit}_to_target"] = dict(s.as_dict(), not_reached=missed) if s else None
        return out


def format_target(s: Spread | None, missed: int, digits: int = 0) -> str:
    if s is None:
        return "-"
    text = s.format(digits=digits)
    return f"≥{text} ({missed} of {s.n} not reached)" if missed else text


def summary_rows(results: list[SpecResult], target: float) -> tuple[list[str], list[list[str]]]:
    head = ["spec", "runs", "val top-1 err %", "val top-5 err %", f"steps to {target:.0%} train err",
            f"epochs to {target:.0%}"]
    rows = []
    for r in results:
        cells = [r.name, str(len(r.runs))]
        for key in ("val_top1_err", "val_top5_err"):
            s = r.spread(key)
            cells.append(s.format(100) if s else "-")
        for unit, digits in (("steps", 0), ("epochs", 1)):
            cells.append(format_target(*r.to_target(unit), digits=digits))
        rows.append(cells)
    return head, rows


def text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c) for c in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *rows])


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows])


def mean_curves(results: list[SpecResult]) -> list[tuple]:
    """Per spec (name, xs, mean, min, max) of the training error at the x positions every seed logged."""
    out = []
    for r in results:
        curves = [dict((round(x, 6), y) for x, y in run.curve) for run in r.runs if run.curve]
        xs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        ys = [[c[x] for c in curves] for x in xs]
        out.append((r.name, xs, [sum(v) / len(v) for v in ys], [min(v) for v in ys], [max(v) for v in ys]))
    return out


# --------------------------------------------------------------------------- the plan and its runs

@dataclass
class Plan:
    """What a comparison trains: every (spec, seed), alike."""

    specs: list[str]            # as given (for messages)
    paths: list[str]
    names: list[str]
    seeds: list[int]
    epochs: int
    out: str
    target: float
    data: str | None = None
    batch: int | None = None
    device: str = "auto"
    workers: int | None = None
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    progress: bool = True

    def run_dir(self, name: str, seed: int) -> str:
        return os.path.join(self.out, name) if len(self.seeds) == 1 else os.path.join(self.out, name, f"seed-{seed}")


def _has_checkpoint(run_dir: str) -> bool:
    from ..training.checkpoint import list_checkpoints

    return bool(list_checkpoints(os.path.join(run_dir, "checkpoints"), verify=False))


def check_specs(specs: list[str], paths: list[str], data: str | None) -> list:
    """Compile every spec and check each against the data before anything is trained."""
    from ...compiler import compile_spec
    from ..data.datasets import DatasetError
    from ..training.errors import TrainingError
    from ..training.inputs import check_data

    nets = [compile_spec(p) for p in paths]      # every spec error before any training
    opened: dict = {}
    for spec, path, net in zip(specs, paths, nets):
        try:
            check_data(net, data, path, opened)
        except (DatasetError, TrainingError) as exc:
            raise UserError(f"{spec}: {exc} (nothing was trained)") from None
    return nets


def train_plan(plan: Plan, log: Callable[[str], None] = say) -> int:
    """Train (or resume, or skip when finished) every run of `plan`: 0, or 130 when interrupted."""
    from ..data.augment import AugmentError
    from ..data.datasets import DatasetError
    from ..training.checkpoint import CheckpointError
    from ..training.errors import TrainingEnvironmentError, TrainingError
    from ..training.loop import Trainer
    from ..training.options import TrainOptions
    from .errors import EnvironmentFailure

    for spec, name, path in zip(plan.specs, plan.names, plan.paths):
        for seed in plan.seeds:
            out = plan.run_dir(name, seed)
            tag = name if len(plan.seeds) == 1 else f"{name} seed {seed}"
            log(f"[{tag}] {path} -> {out}")
            done = _has_checkpoint(out)
            opts = TrainOptions(spec=path, data=plan.data, out=out, epochs=plan.epochs, batch_size=plan.batch,
                                device=plan.device, workers=plan.workers, seed=seed,
                                # a re-run resumes; a run killed before its first checkpoint starts again
                                resume=done, overwrite=not done,
                                limit_train_batches=plan.limit_train_batches,
                                limit_val_batches=plan.limit_val_batches, progress=plan.progress,
                                log=lambda s, t=tag: log(f"[{t}] {s}"))
            try:
                Trainer(opts).run()
            except TrainingEnvironmentError as exc:
                raise EnvironmentFailure(str(exc)) from None
            except (AugmentError, DatasetError, CheckpointError, TrainingError) as exc:
                raise UserError(f"{spec}: {exc}") from None
            except KeyboardInterrupt:
                say("comparison interrupted; run the same command again to resume it", file=sys.stderr)
                return 130
    return 0


def collect(plan: Plan) -> list[SpecResult]:
    return [SpecResult(name, spec, [read_run(plan.run_dir(name, s), s, plan.epochs, plan.target) for s in plan.seeds])
            for spec, name in zip(plan.specs, plan.names)]


def plan_json(plan: Plan, results: list[SpecResult]) -> dict:
    return {"target_error": plan.target, "epochs": plan.epochs, "seeds": plan.seeds, "data": plan.data,
            "batch_size": plan.batch, "limit_train_batches": plan.limit_train_batches,
            "limit_val_batches": plan.limit_val_batches, "statistic": STATISTIC,
            "specs": [r.as_dict() for r in results]}


def draw(plan: Plan, results: list[SpecResult], png: str, title: str) -> None:
    from .figures import draw_compare

    draw_compare(mean_curves(results), png, target=plan.target, title=title,
                 band="min–max over seeds" if len(plan.seeds) > 1 else None)


# --------------------------------------------------------------------------- the command

def seed_list(first: int, n: int) -> list[int]:
    return [first + i for i in range(n)]


def _compare(args: argparse.Namespace) -> int:
    from .figure_commands import _check_output
    from .specs import resolve_spec_path

    if len(args.specs) < 2:
        raise UserError("compare: give at least two specs to compare")
    if not 0 < args.target_error < 1:
        raise UserError(f"--target-error {args.target_error}: must be between 0 and 1 (0.25 is 25%)")
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs {args.epochs}: must be at least 1")
    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: must be at least 1")
    png = args.png or os.path.join(args.out, "compare.png")
    _check_output(png, "--png")
    paths = [resolve_spec_path(s) for s in args.specs]
    from ..training.options import train_settings

    first = train_settings(check_specs(args.specs, paths, args.data)[0])
    plan = Plan(args.specs, paths, run_names(args.specs),
                seed_list(args.seed if args.seed is not None else first["seed"], args.seeds),
                args.epochs or first["epochs"], args.out, args.target_error, args.data, args.batch, args.device,
                args.workers, args.limit_train_batches, args.limit_val_batches, not args.no_progress)
    say(f"comparing {len(paths)} specs: {plan.epochs} epochs each, seed{'s' if args.seeds > 1 else ''} "
        f"{', '.join(map(str, plan.seeds))}, data {args.data or 'default'}; runs in {args.out}/")
    status = train_plan(plan)
    if status:
        return status
    results = collect(plan)
    draw(plan, results, png, f"training error to {plan.target:.0%}: {' vs '.join(plan.names)}")
    head, rows = summary_rows(results, plan.target)
    if len(plan.seeds) == 1:   # one seed: epochs to the target and the ratio to the fastest, as before
        say(format_table([(r.name, r.runs[0].epochs_to_target, r.runs[0].epochs_run) for r in results], plan.target))
        say("")
    say(text_table(head, rows))
    say(f"({STATISTIC}; steps: the first logged step whose error over the last "
        f"{_step_every()} updates is at or below the target)")
    md = os.path.join(args.out, "compare.md")
    write_text(md, markdown_table(head, rows) + f"\n\n{STATISTIC}.\n")
    js = os.path.join(args.out, "compare.json")
    write_text(js, json.dumps(plan_json(plan, results), indent=1) + "\n")
    say(f"curves written to {png}; tables to {md} and {js}")
    return 0


def _step_every() -> int:
    from ..training.run_log import STEP_EVERY

    return STEP_EVERY


def format_table(rows: list[tuple[str, int | None, int]], target: float) -> str:
    """The one-seed table: per ``(name, epochs or None, epochs run)``, the epochs to the target and the
    ratio to the fastest (a lower bound, '>', for a run that did not reach it)."""
    reached = [e for _, e, _ in rows if e is not None]
    fastest = min(reached) if reached else None
    head = f"epochs to {target:.1%} training error"
    w = max([len("variant")] + [len(n) for n, _, _ in rows])
    lines = [f"{'variant':<{w}}  {head:<34}  ratio to fastest"]
    for name, e, ran in rows:
        if e is not None:
            col, ratio = str(e), f"{e / fastest:.2f}x"
        else:
            col = f"not reached (in {ran} epoch{'s' if ran != 1 else ''})"
            ratio = f">{ran / fastest:.2f}x" if fastest and ran else "-"
        lines.append(f"{name:<{w}}  {col:<34}  {ratio}")
    return "\n".join(lines)


def add_training_options(c: argparse.ArgumentParser) -> None:
    """The options compare and ablate share: the budget, the data, the seeds, where and how to train."""
    c.add_argument("--data", metavar="DIR", help="dataset directory (default: as for train)")
    c.add_argument("--epochs", type=int, help="epoch budget for every run (default: the first spec's)")
    c.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="train every spec with N seeds (--seed, --seed+1, ...) and report mean and spread (default 1)")
    c.add_argument("--seed", type=int, help="the first seed (default: the first spec's)")
    c.add_argument("--batch", type=int, help="batch size for every run (default: each spec's)")
    c.add_argument("--limit-train-batches", type=int,
                   help="at most this many batches per epoch (each epoch a new random subset of the training set)")
    c.add_argument("--limit-val-batches", type=int, help="at most this many validation batches")
    c.add_argument("--workers", type=int, help="data loading processes (default: min(4, cores))")
    c.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run: auto (a GPU when there is one), cpu or cuda (default auto)")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(sub: Any) -> None:
    c = sub.add_parser("compare", help="train variants alike (with several seeds) and compare their errors "
                                       "and epochs to a training error (the paper's Figure 1)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_COMPARE)
    c.add_argument("specs", nargs="+", metavar="SPEC", help="spec files or shipped names (two or more)")
    add_training_options(c)
    c.add_argument("--target-error", type=float, default=0.25, help="training top-1 error to reach (default 0.25)")
    c.add_argument("--out", metavar="DIR", default="runs/compare", help="runs go in DIR/<name> (default runs/compare)")
    c.add_argument("--png", metavar="FILE.png", help="the curves (default OUT/compare.png)")
    c.set_defaults(func=_compare)
