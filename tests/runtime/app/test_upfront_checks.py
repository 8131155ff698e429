"""Mismatches found before any work (issue 26): `compare` checks every spec against the data before
training the first; `eval` refuses a dataset whose class count is not the model's, naming both, and
says which dataset it fell back to; the mapping of grey images onto colour channels is stated once."""
from __future__ import annotations

import os

from alexnetc.runtime.app.cli import main

from ..training.test_train import TINY, _pattern_dataset

LIMITS = ["--limit-train-batches", "1", "--limit-val-batches", "1", "--workers", "0", "--no-progress",
          "--device", "cpu"]


def _spec(tmp_path, name: str, **edits: str) -> str:
    text = TINY.replace("name: tiny", f"name: {name}")
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return str(path)


def test_compare_checks_every_spec_against_the_data_before_training_any(tmp_path, capsys):
    data = _pattern_dataset(tmp_path / "data", n_train=64, n_val=32)
    fits = _spec(tmp_path, "fits")
    wide = _spec(tmp_path, "wide", **{"classes: 4": "classes: 12", "units: 4,": "units: 12,"})
    out = tmp_path / "cmp"
    assert main(["compare", fits, wide, "--data", data, "--epochs", "1", "--out", str(out), *LIMITS]) == 2
    err = capsys.readouterr().err
    assert err == (f"alexnetc: error: {wide}: the dataset at {data} has 10 classes but the spec {wide} has classes: 12 "
                   "(nothing was trained)\n")
    assert not (out / "fits").exists()        # the first spec was not trained


def test_eval_refuses_a_dataset_with_another_class_count_naming_both(tmp_path, capsys, monkeypatch):
    """A 12-class model (trained on synthetic images) on the 4-quadrant IDX data (MNIST-like: 10
    classes): refused with both counts; --allow-class-mismatch scores it. Without --data it says which
    dataset it fell back to (the model records none that exists)."""
    data = _pattern_dataset(tmp_path / "data", n_train=64, n_val=32)
    wide = _spec(tmp_path, "wide", **{"classes: 4": "classes: 12", "units: 4,": "units: 12,"})
    run = tmp_path / "run"
    assert main(["train", wide, "--synthetic", "64", "--epochs", "1", "--out", str(run), *LIMITS]) == 0
    capsys.readouterr()
    monkeypatch.setenv("ALEXNETC_DATA", data)
    assert main(["eval", str(run), "--workers", "0", "--device", "cpu"]) == 2
    out, err = capsys.readouterr()
    ckpt = os.path.realpath(next((run / "checkpoints").glob("*.json")))
    assert out == (f"no --data given and {ckpt} records no dataset that still exists (it was trained on synthetic "
                   f"images): using {data}\n")
    assert err == (f"alexnetc: error: the dataset at {data} has 10 classes but the model {ckpt} (wide) has 12: "
                   "evaluate it on data of its classes (--data), or pass --allow-class-mismatch to score it anyway\n")
    assert main(["eval", str(run), "--data", data, "--workers", "0", "--device", "cpu",
                 "--allow-class-mismatch"]) == 0
    assert "wide on " in capsys.readouterr().out


def test_grey_images_onto_three_channels_are_stated_once(tmp_path, capsys):
    data = _pattern_dataset(tmp_path / "data", n_train=64, n_val=32)
    rgb = _spec(tmp_path, "rgb", **{"channels: 1": "channels: 3"})
    assert main(["train", rgb, "--data", data, "--epochs", "1", "--out", str(tmp_path / "run"), *LIMITS]) == 0
    out = capsys.readouterr().out
    note = f"the images in {os.path.realpath(data)} are grey: each is repeated on the network's 3 input channels (R = G = B)"
    assert out.count(note) == 1, out
    assert main(["eval", str(tmp_path / "run"), "--workers", "0", "--device", "cpu", "--limit-batches", "1"]) == 0
    assert capsys.readouterr().out.startswith(note + "\n")
