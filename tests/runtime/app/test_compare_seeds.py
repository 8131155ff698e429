"""`alexnetc compare --seeds N` and `alexnetc ablate` on tiny specs: every spec trained with every seed,
the spreads recomputed here from the runs' own metrics, an interrupted comparison resumed without
retraining what was done, the reports written."""
from __future__ import annotations

import json
import math
import os

import pytest

from alexnetc.runtime.app.cli import main
from alexnetc.runtime.training.loop import Trainer

from ..training.test_train import TINY, _pattern_dataset

TANH = TINY.replace("act: relu", "act: tanh").replace("name: tiny", "name: tiny-tanh")
T975_DF2 = 4.30265273   # Student's t, 97.5 % quantile, 2 degrees of freedom


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _pattern_dataset(tmp_path_factory.mktemp("seeds") / "data", n_train=320, n_val=64)


def _counting(monkeypatch, stop_at=None):
    calls = {"n": 0}
    real = Trainer.train_step

    def step(self, images, labels, i):
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise KeyboardInterrupt
        return real(self, images, labels, i)

    monkeypatch.setattr(Trainer, "train_step", step)
    return calls


def _final(run_dir):
    recs = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()]
    return recs[-1]


def test_seeds_spread_and_resume(data, tmp_path, capsys, monkeypatch):
    (tmp_path / "relu.yaml").write_text(TINY)
    (tmp_path / "tanh.yaml").write_text(TANH)
    out = tmp_path / "cmp"
    argv = ["compare", str(tmp_path / "relu.yaml"), str(tmp_path / "tanh.yaml"), "--data", data, "--epochs", "2",
            "--seeds", "3", "--target-error", "0.6", "--out", str(out), "--workers", "0", "--no-progress",
            "--device", "cpu"]
    calls = _counting(monkeypatch, stop_at=25)     # relu seed 7 (20 steps), then step 5 of relu seed 8
    assert main(argv) == 130
    assert "run the same command again" in capsys.readouterr().err
    calls = _counting(monkeypatch)
    assert main(argv) == 0
    assert calls["n"] == 6 * 20 - 24                # nothing trained twice: 24 steps were done before
    text = capsys.readouterr().out

    report = json.loads((out / "compare.json").read_text())
    assert report["seeds"] == [7, 8, 9] and report["statistic"].startswith("mean ± half-width of the 95 %")
    for spec in report["specs"]:
        runs = [str(out / spec["name"] / f"seed-{s}") for s in (7, 8, 9)]
        finals = [_final(r)["val_top1_err"] for r in runs]
        mean = sum(finals) / 3
        sd = math.sqrt(sum((x - mean) ** 2 for x in finals) / 2)
        got = spec["val_top1_err"]
        assert got["values"] == pytest.approx(finals) and got["mean"] == pytest.approx(mean)
        assert got["ci95_half_width"] == pytest.approx(T975_DF2 * sd / math.sqrt(3), abs=1e-9)
        assert (got["min"], got["max"]) == (min(finals), max(finals))
        assert [r["seed"] for r in spec["runs"]] == [7, 8, 9] and {r["steps_run"] for r in spec["runs"]} == {20}
        for run, path in zip(spec["runs"], runs):    # steps to the target: the first step row at or below it
            rows = [ln.split(",") for ln in open(os.path.join(path, "metrics.csv")).read().splitlines()[1:]]
            first = next((int(r[1]) for r in rows if r[4] and float(r[4]) <= 0.6), None)
            assert run["steps_to_target"] == first
        line = next(l for l in text.splitlines() if l.startswith(spec["name"] + " "))
        assert line.split()[1] == "3" and f"{100 * mean:.2f} ± " in line
    md = (out / "compare.md").read_text()
    assert md.startswith("| spec | runs | val top-1 err % |") and "95 % Student-t" in md
    assert (out / "compare.png").stat().st_size > 0

    def logs():
        return sorted((p, os.path.getmtime(p)) for p in out.rglob("*") if p.name.startswith(("events.", "hparams")))

    before = logs()
    calls = _counting(monkeypatch)                  # once more: nothing to train, the same report
    assert main(argv) == 0 and calls["n"] == 0
    assert json.loads((out / "compare.json").read_text()) == report
    assert logs() == before                         # a finished run re-read: its files untouched


def test_ablate_on_a_tiny_base(data, tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(TINY)
    out = tmp_path / "abl"
    argv = ["ablate", str(tmp_path / "tiny.yaml"), "--data", data, "--only", "tanh", "no-lrn", "--seeds", "2",
            "--epochs", "1", "--target-error", "0.7", "--out", str(out), "--workers", "0", "--no-progress",
            "--device", "cpu"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"--- {out / 'specs' / 'tiny-tanh.yaml'} (ReLU vs tanh)" in text and "remove_layers: [norm1]" in text
    report = json.loads((out / "ablation.json").read_text())
    rows = {r["ablation"]: r for r in report["rows"]}
    assert set(rows) == {"tanh", "no-lrn"} and report["seeds"] == [7, 8]
    spec = {s["name"]: s for s in report["specs"]}
    d = rows["no-lrn"]["val_top1_err"]["difference_points"]
    assert d["delta"] == pytest.approx(100 * (spec["no-lrn"]["val_top1_err"]["mean"] - spec["base"]["val_top1_err"]["mean"]))
    allowed = ("reproduced", "not reproduced", "within noise", "no verdict")
    assert all(r["verdict"].startswith(allowed) for r in rows.values())
    assert rows["no-lrn"]["paper_effect"] == "+1.4 / +1.2" and rows["tanh"]["paper_effect"] == "6x the steps"
    for f in ("ablation.md", "ablation-curves.png", "ablation-effects.png"):
        assert (out / f).stat().st_size > 0
    assert sorted(os.listdir(out / "base")) == ["seed-7", "seed-8"]


def test_ablate_dry_run_writes_the_variants_and_trains_nothing(data, tmp_path, capsys, monkeypatch):
    calls = _counting(monkeypatch)
    out = tmp_path / "dry"
    no_lrn = "".join(l + "\n" for l in TINY.splitlines() if "op: lrn" not in l)
    (tmp_path / "tiny.yaml").write_text(no_lrn)
    assert main(["ablate", str(tmp_path / "tiny.yaml"), "--data", data, "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert calls["n"] == 0 and "nothing trained" in text
    assert "skipped no-lrn: the base has no response normalisation (lrn) layer" in text
    assert sorted(os.listdir(out / "specs")) == sorted(f"tiny-{k}.yaml" for k in
                                                       ("tanh", "pool-2x2", "one-tower-half", "no-dropout"))


@pytest.mark.parametrize("argv, message", [
    (["ablate", "--seeds", "0"], "--seeds 0"),
    (["ablate", "--only", "lrn"], "--only lrn: expected some of tanh, no-lrn"),
    (["ablate", "--target-error", "25"], "between 0 and 1"),
    (["compare", "a", "b", "--seeds", "0"], "--seeds 0"),
])
def test_bad_options_are_one_line(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l]
    assert len(err) == 1 and message in err[0], err
