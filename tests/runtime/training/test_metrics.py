"""Metrics: JSON-lines log, the curves PNG, top-k errors and ten-crop averaging."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alexnetc.runtime.training import metrics as M


def test_jsonl_append_and_read(tmp_path):
    p = tmp_path / "run" / "metrics.jsonl"
    M.append_metrics(p, {"epoch": 1, "train_loss": 2.5, "lr": np.float32(0.01), "n": np.int64(3)})
    M.append_metrics(p, {"epoch": 2, "train_loss": 2.0, "val_loss": torch.tensor(2.1)})
    lines = p.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["n"] == 3
    with open(p, "a") as fh:             # a crash mid-append left a partial line
        fh.write('{"epoch": 3, "train_lo')
    M.append_metrics(p, {"epoch": 3, "train_loss": 1.5})
    recs = M.read_metrics(p)
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    assert abs(recs[0]["lr"] - 0.01) < 1e-8 and abs(recs[1]["val_loss"] - 2.1) < 1e-6
    with pytest.raises(M.MetricsError, match="metrics.jsonl: metrics record is not JSON"):
        M.append_metrics(p, {"bad": object()})
    with pytest.raises(M.MetricsError, match="missing.jsonl: cannot read"):
        M.read_metrics(tmp_path / "missing.jsonl")


def test_plot_curves_writes_a_png(tmp_path):
    from PIL import Image

    p = tmp_path / "m.jsonl"
    for e in range(1, 6):
        M.append_metrics(p, {"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.2 / e,
                             "train_top1_err": 0.6 / e, "train_top5_err": 0.2 / e,
                             "val_top1_err": 0.65 / e, "val_top5_err": 0.25 / e, "lr": 0.01})
    M.append_metrics(p, {"epoch": 5, "train_loss": 0.3, "val_loss": float("nan")})   # resumed run
    png = M.plot_curves(p, tmp_path / "out" / "curves.png", title="alexnet-mini")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == M.PLOT_SIZE_PX
        a = np.asarray(im.convert("RGB"))
    assert a.std() > 10                   # something was drawn
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"note": "no epochs"}\n')
    with pytest.raises(M.MetricsError, match="empty.jsonl: no per-epoch records"):
        M.plot_curves(empty, tmp_path / "x.png")


def test_topk_hand_computed():
    logits = torch.tensor([
        [0.1, 0.5, 0.2, 0.9, 0.0, 0.3],   # order 3,1,5,2,0,4 ; label 3 -> top1 hit
        [0.8, 0.1, 0.7, 0.6, 0.5, 0.4],   # order 0,2,3,4,5,1 ; label 4 -> top5 hit only
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],   # order 5,4,3,2,1,0 ; label 0 -> miss both
        [0.3, 0.2, 0.9, 0.1, 0.0, 0.0],   # order 2,0,1,3,.. ; label 1 -> top5 hit only
    ])
    labels = torch.tensor([3, 4, 0, 1])
    assert M.topk_correct(logits, labels, (1, 5)) == (1, 3)
    top1, top5 = M.topk_errors(logits, labels)
    assert (top1, top5) == (0.75, 0.25)
    probs = torch.softmax(logits, 1).numpy()          # probabilities and numpy work the same
    assert M.topk_errors(probs, labels.numpy(), ks=(1, 2, 5)) == (0.75, 0.75, 0.25)
    assert M.topk_errors(logits[:, :3], torch.tensor([1, 0, 0, 1]), ks=(5,)) == (0.0,)   # k > classes
    with pytest.raises(ValueError, match="expected scores"):
        M.topk_errors(logits, labels[:3])


def test_crop_average_probs():
    logits = torch.randn(2 * 10, 4)
    avg = M.crop_average_probs(logits, 10)
    assert avg.shape == (2, 4)
    expect = torch.softmax(logits.reshape(2, 10, 4), 2).mean(1)
    assert torch.allclose(avg, expect) and torch.allclose(avg.sum(1), torch.ones(2))
    assert torch.allclose(M.crop_average_probs(logits.reshape(2, 10, 4), 10), expect)
    with pytest.raises(ValueError, match="not a multiple of 10"):
        M.crop_average_probs(torch.randn(7, 4), 10)
