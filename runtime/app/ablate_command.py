"""`alexnetc ablate`: the paper's ablations (`compiler.ablation`) on a base spec, trained with several seeds,
each measured effect beside the paper's, with a verdict.

The variants are written as files (``OUT/specs/<base name>-<ablation>.yaml``: ``base:`` and the spec's own
edits) and printed, then the base and every variant are trained as `alexnetc compare --seeds N` trains
them (``OUT/<base|ablation>/seed-<s>/``, resumable). Per ablation, the effect is the variant's mean minus
the base's with Welch's 95 % interval (`spread.difference`): validation top-1 and top-5 error in points,
or for ReLU vs tanh the steps to the target training error and their ratio. The verdict (on top-1, or
on the steps) is `spread.verdict`'s rule. Written: ``OUT/ablation.md``, ``OUT/ablation.json``, the
training curves ``OUT/ablation-curves.png`` (mean over seeds, min–max band) and the effects with their
intervals beside the paper's ``OUT/ablation-effects.png``.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

from .compare_command import (
    STATISTIC,
    Plan,
    SpecResult,
    add_training_options,
    check_specs,
    collect,
    markdown_table,
    mean_curves,
    plan_json,
    seed_list,
    summary_rows,
    text_table,
    train_plan,
)
from .errors import UserError, say, write_text
from .spread import Difference, Spread, difference, verdict

EPILOG = """examples:
  alexnetc ablate --smoke                          # the mini on Fashion-MNIST: 2 seeds, 1 short epoch each
  alexnetc ablate --seeds 3 --epochs 2 --limit-train-batches 60 --out runs/ablate
  alexnetc ablate specs/alexnet.yaml --data /data/imagenet --only no-lrn pool-2x2 --seeds 3
  alexnetc ablate --dry-run                        # write and check the variant specs, train nothing

Trains the base spec (default variants/mini, on Fashion-MNIST) and one variant per ablation of the paper,
each with every seed: tanh instead of ReLU (steps to the target training error, and the ratio: the
paper's Figure 1, 6x), without LRN (paper: +1.4/+1.2 top-1/top-5 error points), 2/2 instead of 3/2
pooling (+0.4/+0.3), one device with half the kernels instead of two towers (+1.7/+1.2), without dropout
(overfitting, no number). The variants are written to OUT/specs/ and printed first. Verdict per row:
reproduced (95% interval of the difference excludes 0 on the paper's side), not reproduced (excludes 0
on the other side, or holds 0 but excludes the paper's effect), within noise (holds both). The budget:
--epochs, --limit-train-batches (each epoch a random subset of the training set), --limit-val-batches;
--smoke picks a few minutes' worth."""

SMOKE = {"epochs": 1, "limit_train_batches": 20, "limit_val_batches": 10, "seeds": 2}


def _points(d: Difference) -> Difference:
    return Difference(d.delta * 100, None if d.half is None else d.half * 100, d.df)


def _fmt_diff(d: Difference, digits: int = 2) -> str:
    f = f"{{:+.{digits}f}}"
    return f.format(d.delta) + ("" if d.half is None else f" ± {d.half:.{digits}f}")


def _paper(a: Any) -> str:
    if a.paper_ratio is not None:
        return f"{a.paper_ratio:g}x the steps"
    if a.paper_top1 is None:
        return "overfits (no number)"
    return f"{a.paper_top1:+.1f} / {a.paper_top5:+.1f}"


def _steps_row(a: Any, base: SpecResult, var: SpecResult) -> dict:
    (bs, bmiss), (vs, vmiss) = base.to_target("steps"), var.to_target("steps")
    row: dict = {"base_steps": bs.as_dict() if bs else None, "variant_steps": vs.as_dict() if vs else None,
                 "base_not_reached": bmiss, "variant_not_reached": vmiss}
    if bs is None or vs is None:
        row.update(verdict="no verdict (no step rows: metrics.csv missing)", measured="-")
        return row
    d = difference(bs, vs)
    ratio = vs.mean / bs.mean if bs.mean else float("inf")
    v = verdict(d, (a.paper_ratio - 1) * bs.mean)
    if bmiss:
        v = f"no verdict (the base did not reach the target in {bmiss} of {bs.n} runs)"
    elif vmiss and v != "reproduced":
        v = f"no verdict (the variant did not reach the target in {vmiss} of {vs.n} runs: lower bounds)"
    row.update(ratio=ratio, difference=d.__dict__, verdict=v,
               measured=f"{'≥' if vmiss else ''}{ratio:.2f}x the steps ({'≥' if vmiss else ''}{_fmt_diff(d, 0)})")
    return row


def _error_row(a: Any, base: SpecResult, var: SpecResult) -> dict:
    """Validation top-1/top-5 differences in points and their verdicts (ReLU vs tanh: none, its verdict
    is on the steps), and how much more the variant overfits (validation − training top-1)."""
    row: dict = {}
    parts = []
    for key, paper in (("val_top1_err", a.paper_top1), ("val_top5_err", a.paper_top5)):
        b, v = base.spread(key), var.spread(key)
        if b is None or v is None:
            row[key] = None
            continue
        d = _points(difference(b, v))
        row[key] = {"difference_points": d.__dict__,   # no number (dropout): the paper's direction only
                    "verdict": None if a.metric == "steps_to_target" else
                    verdict(d, paper if paper is not None else 1.0, magnitude=paper is not None)}
        parts.append(f"{key[4:8]} {_fmt_diff(d)}")
    gap = [_gap(base), _gap(var)]
    if gap[0] is not None and gap[1] is not None:
        d = _points(difference(*gap))
        row["overfit_gap_points"] = d.__dict__
        if a.paper_top1 is None:
            parts.append(f"val−train gap {_fmt_diff(d)}")
    row["measured"] = "; ".join(parts) or "-"
    top1 = row.get("val_top1_err")
    row["verdict"] = top1["verdict"] if top1 else "no verdict (no validation error)"
    return row


def _gap(r: SpecResult) -> Spread | None:
    """The spread of (validation − training) top-1 error: how much the runs overfit."""
    from .spread import summarize

    vals = [x.val_top1_err - x.train_top1_err for x in r.runs if x.val_top1_err is not None and x.train_top1_err is not None]
    return summarize(vals) if vals and len(vals) == len(r.runs) else None


def ablation_rows(variants: list, results: list[SpecResult]) -> list[dict]:
    """One row per ablation trained: what was compared, the measured effect, the paper's, the verdict."""
    base, rows = results[0], []
    for v, var in zip(variants, results[1:]):
        a = v.ablation
        row = {"ablation": a.key, "title": a.title, "paper": a.paper, "paper_effect": _paper(a), "spec": v.path}
        row.update(_error_row(a, base, var))
        if a.metric == "steps_to_target":
            errors = row["measured"]
            row.update(_steps_row(a, base, var))
            row["measured"] += f"; val {errors}"
        b1, v1 = base.spread("val_top1_err"), var.spread("val_top1_err")
        row["base_val_top1"] = b1.format(100) if b1 else "-"
        row["variant_val_top1"] = v1.format(100) if v1 else "-"
        rows.append(row)
    return rows


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["ablation", "base val top-1 %", "variant val top-1 %", "measured (variant − base)", "paper", "verdict"]
    return head, [[r["title"], r["base_val_top1"], r["variant_val_top1"], r["measured"], r["paper_effect"],
                   r["verdict"]] for r in rows]


def _base_ref(arg: str, path: str) -> str:
    """What the variants' ``base:`` says: a shipped name as given, else the base file's absolute path."""
    from ...compiler.variants import shipped_spec

    return arg if not os.path.exists(arg) and shipped_spec(arg) else os.path.abspath(path)


def _ablate(args: argparse.Namespace) -> int:
    from ...compiler.ablation import KEYS, write_variants
    from ..training.options import train_settings
    from .figure_commands import _check_output
    from .figures import draw_compare, draw_effects
    from .specs import resolve_spec_path

    for key, value in SMOKE.items():
        if args.smoke and getattr(args, key) is None:
            setattr(args, key, value)
    if args.seeds is None:
        args.seeds = 3
    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: must be at least 1")
    if not 0 < args.target_error < 1:
        raise UserError(f"--target-error {args.target_error}: must be between 0 and 1 (0.25 is 25%)")
    unknown = [k for k in args.only or () if k not in KEYS]
    if unknown:
        raise UserError(f"--only {unknown[0]}: expected some of {', '.join(KEYS)}")
    path = resolve_spec_path(args.base)
    for png in ("ablation-curves.png", "ablation-effects.png"):
        _check_output(os.path.join(args.out, png), "--out")
    specs_dir = os.path.join(args.out, "specs")
    variants = write_variants(path, _base_ref(args.base, path), specs_dir, tuple(args.only or KEYS), write=write_text)
    for v in variants:
        if v.skipped:
            say(f"skipped {v.ablation.key}: {v.skipped}")
        else:
            say(f"--- {v.path} ({v.ablation.title})")
            with open(v.path, encoding="utf-8") as fh:
                say(fh.read().rstrip())
    variants = [v for v in variants if v.path]
    if not variants:
        raise UserError(f"{args.base}: none of the ablations applies to this spec")
    specs = [args.base] + [v.path for v in variants]
    paths = [path] + [v.path for v in variants]
    nets = check_specs(specs, paths, args.data)
    first = train_settings(nets[0])
    plan = Plan(specs, paths, ["base"] + [v.ablation.key for v in variants],
                seed_list(args.seed if args.seed is not None else first["seed"], args.seeds),
                args.epochs or first["epochs"], args.out, args.target_error, args.data, args.batch, args.device,
                args.workers, args.limit_train_batches, args.limit_val_batches, not args.no_progress)
    say(f"ablating {args.base}: {len(specs)} specs x {len(plan.seeds)} seeds ({', '.join(map(str, plan.seeds))}), "
        f"{plan.epochs} epochs each" + (f" of at most {plan.limit_train_batches} batches" if plan.limit_train_batches
                                        else "") + f"; runs in {args.out}/")
    if args.dry_run:
        say("--dry-run: the variants are written and compile; nothing trained")
        return 0
    status = train_plan(plan)
    if status:
        return status
    results = collect(plan)
    rows = ablation_rows(variants, results)
    head, cells = table(rows)
    shead, scells = summary_rows(results, plan.target)
    say(text_table(head, cells))
    say("")
    say(text_table(shead, scells))
    note = (f"{STATISTIC}; effects: variant − base, ± the half-width of Welch's 95 % interval; verdicts on top-1 "
            "(ReLU vs tanh: on the steps)")
    say(f"({note})")
    md = os.path.join(args.out, "ablation.md")
    write_text(md, markdown_table(head, cells) + "\n\n" + markdown_table(shead, scells) + f"\n\n{note}.\n")
    js = os.path.join(args.out, "ablation.json")
    write_text(js, json.dumps({"base": args.base, "rows": rows, **plan_json(plan, results)}, indent=1) + "\n")
    curves, effects = (os.path.join(args.out, p) for p in ("ablation-curves.png", "ablation-effects.png"))
    draw_compare(mean_curves(results), curves, target=plan.target, band="min–max over seeds" if len(plan.seeds) > 1 else None,
                 title=f"training error, mean of {len(plan.seeds)} seeds: {args.base} and its ablations")
    draw_effects([(r["title"], r["val_top1_err"]["difference_points"] if r.get("val_top1_err") else None,
                   _paper_top1(r["ablation"])) for r in rows], effects,
                 title=f"validation top-1 error, variant − base ({len(plan.seeds)} seeds, 95% Welch intervals)")
    say(f"tables written to {md} and {js}; curves to {curves}, effects to {effects}")
    return 0


def _paper_top1(key: str) -> float | None:
    from ...compiler.ablation import ABLATIONS

    return next(a.paper_top1 for a in ABLATIONS if a.key == key)


def register(sub: Any) -> None:
    from ...compiler.ablation import KEYS

    c = sub.add_parser("ablate", help="the paper's ablations (tanh, no LRN, 2/2 pooling, one tower, no dropout) on a "
                                      "base spec, with seeds, beside the paper's numbers",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    c.add_argument("base", nargs="?", default="variants/mini",
                   help="the base spec: a file or shipped name (default variants/mini, on Fashion-MNIST)")
    add_training_options(c)
    c.set_defaults(seeds=None)
    c.add_argument("--only", nargs="+", metavar="ABLATION", help=f"run only these: {', '.join(KEYS)}")
    c.add_argument("--target-error", type=float, default=0.25,
                   help="training top-1 error ReLU vs tanh is timed to (default 0.25, as the paper)")
    c.add_argument("--out", metavar="DIR", default="runs/ablate", help="specs, runs and reports (default runs/ablate)")
    c.add_argument("--smoke", action="store_true",
                   help="a few minutes' budget: 2 seeds, 1 epoch of 20 batches, 10 validation batches (options given win)")
    c.add_argument("--dry-run", action="store_true", help="write and check the variant specs; train nothing")
    c.set_defaults(func=_ablate)
