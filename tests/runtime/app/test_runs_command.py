"""`alexnetc runs`: finished, interrupted, running, diverged and damaged run directories, one line each,
sorted by a column; damaged ones name their problem and never print a traceback."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from alexnetc.runtime.app.cli import main
from alexnetc.runtime.training.loop import Trainer

from ..training.test_train import TINY, _opts, _pattern_dataset, run_interrupted


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    spec = root / "tiny.yaml"
    spec.write_text(TINY)
    data = _pattern_dataset(root / "data", n_train=64, n_val=32)
    top = root / "runs"
    Trainer(_opts(str(spec), data, top / "done", epochs=2)).run()
    return {"root": root, "spec": str(spec), "data": data, "top": top}


def _table(capsys, *argv):
    assert main(["runs", *map(str, argv)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and err == ""
    lines = out.splitlines()
    return lines[0], {l.split()[0]: l for l in lines[1:]}


def test_runs_table_states(runs, tmp_path, capsys, monkeypatch):
    top = tmp_path / "runs"
    shutil.copytree(runs["top"] / "done", top / "done")
    run_interrupted(monkeypatch, _opts(runs["spec"], runs["data"], top / "stopped", epochs=3), at=3)
    # running: a live process holds the lock (this one)
    shutil.copytree(top / "done", top / "busy")
    (top / "busy" / ".alexnetc.lock").write_text(f"{os.getpid()}\n")
    # diverged: the record a divergence leaves after the last epoch
    shutil.copytree(top / "done", top / "nan")
    with open(top / "nan" / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"event": "diverged", "message": "at epoch 3, batch 1 (step 5): the loss became nan"}) + "\n")
    # damaged three ways, and a directory that is no run at all (not listed)
    shutil.copytree(top / "done", top / "bad-yaml")
    (top / "bad-yaml" / "hparams.yaml").write_text("spec: [unclosed\n")
    shutil.copytree(top / "done", top / "bad-ckpt")
    for f in os.listdir(top / "bad-ckpt" / "checkpoints"):
        if f.endswith(".json"):
            (top / "bad-ckpt" / "checkpoints" / f).write_text("{not json")
    os.makedirs(top / "nothing" / "checkpoints")
    os.makedirs(top / "not-a-run" / "deeper")

    head, rows = _table(capsys, top)
    assert head.split()[:4] == ["run", "spec", "dataset", "epochs"] and "state" in head
    assert set(rows) == {"done", "stopped", "busy", "nan", "bad-yaml", "bad-ckpt", "nothing"}
    assert rows["done"].split()[1:4] == ["tiny", "data", "2/2"] and rows["done"].endswith("finished")
    assert rows["stopped"].split()[3] == "1/3" and rows["stopped"].endswith("interrupted")
    assert rows["busy"].endswith(f"running (pid {os.getpid()})")
    assert rows["nan"].endswith("diverged")
    assert "damaged: " in rows["bad-yaml"] and "damaged: " in rows["bad-ckpt"] and "not valid JSON" in rows["bad-ckpt"]
    assert "damaged: no epoch logged and no checkpoint" in rows["nothing"]
    recs = [json.loads(l) for l in open(top / "done" / "metrics.jsonl").read().splitlines()]
    best, last = min(r["val_top1_err"] for r in recs), recs[-1]["val_top1_err"]
    assert f"{100 * best:.2f}%" == rows["done"].split()[4] and f"{100 * last:.2f}%" == rows["done"].split()[5]
    wall = [float(ln.split(",")[-1]) for ln in open(top / "done" / "metrics.csv").read().splitlines()[1:]
            if ln.split(",")[-1]]
    s = round(wall[-1])
    assert f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" in rows["done"]


def test_runs_sorting_and_errors(runs, capsys, tmp_path):
    top = tmp_path / "r"
    for name, err in (("a", 0.5), ("b", 0.1), ("c", None)):
        shutil.copytree(runs["top"] / "done", top / name)
        recs = [json.loads(l) for l in open(top / name / "metrics.jsonl").read().splitlines()]
        for r in recs:
            r["val_top1_err"] = err
        (top / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    _, rows = _table(capsys, top, "--sort", "best")
    assert list(rows) == ["b", "a", "c"]                     # missing values last
    _, rows = _table(capsys, top, "--sort", "best", "--reverse")
    assert list(rows) == ["a", "b", "c"]                     # missing values last either way
    assert main(["runs", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"alexnetc: error: {tmp_path / 'missing'}: no such directory"
    assert main(["runs", str(tmp_path / "r" / "a" / "metrics.jsonl")]) == 2
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    assert main(["runs", str(tmp_path / "empty")]) == 0 and "no runs under" in capsys.readouterr().out
