"""The paper's figures as commands, on a tiny two-tower net: each picture's size and structure are
checked pixel by pixel against the layout (cells where kernels/images go, background in the gaps),
and their content against the checkpoint and the dataset."""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from alexnetc.runtime.app import figures
from alexnetc.runtime.app.cli import main
from alexnetc.runtime.app.figures import (
    BAR,
    BAR_TRUE,
    BG,
    MARGIN,
    PANEL_BG,
    FilterLayout,
    GalleryLayout,
    NeighborLayout,
)
from alexnetc.runtime.training.loop import Trainer
from alexnetc.runtime.training.options import TrainOptions

from ..training.test_train import TINY, _pattern_dataset

TANH = TINY.replace("act: relu", "act: tanh").replace("name: tiny", "name: tiny-tanh")
# Both towers' groups on one device: the compiler merges them, so conv1 is one 8-kernel node on gpu0.
ONE_DEVICE = (TINY.replace("devices: [gpu0, gpu1]\ndefaults", "devices: [gpu0]\ndefaults")
              .replace("devices: [gpu0, gpu1]", "devices: [gpu0, gpu0]").replace("name: tiny", "name: tiny-1dev"))


def _train(spec_text, root, name, **kw):
    spec = root / f"{name}.yaml"
    spec.write_text(spec_text)
    out = root / name
    Trainer(TrainOptions(spec=str(spec), data=str(root / "data"), out=str(out), epochs=1, workers=0,
                         progress=False, log=lambda s: None, **kw)).run()
    return str(spec), str(out)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    data = _pattern_dataset(root / "data", n_train=64, n_val=32)
    _, run = _train(TINY, root, "tiny")
    from alexnetc.runtime.data.datasets import IdxDataset

    ds = IdxDataset(data, "train")
    queries = []
    for i in (0, 5, 9):
        p = root / f"q{i}.png"
        Image.fromarray(ds[i][0][:, :, 0]).save(p)
        queries.append(str(p))
    return {"root": root, "data": data, "run": run, "ds": ds, "queries": queries, "qidx": [0, 5, 9]}


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _is_bg(a: np.ndarray) -> bool:
    return bool((a == np.array(BG, np.uint8)).all())


def _box(img, box):
    x0, y0, x1, y1 = box
    return img[y0:y1, x0:x1]


def _params(run):
    from alexnetc.runtime.training import checkpoint as ckpt

    tensors, _ = ckpt.load_checkpoint(os.path.join(run, "checkpoints"))
    return {k[len("param/"):]: v.numpy() for k, v in tensors.items() if k.startswith("param/")}


# --------------------------------------------------------------------------- filters (Figure 3)

def test_filters_one_block_per_device_with_each_kernel_in_its_cell(world, tmp_path, capsys):
    png = tmp_path / "filters.png"
    assert main(["filters", world["run"], "-o", str(png)]) == 0
    assert "gpu0: 4, gpu1: 4" in capsys.readouterr().out
    img = _png(png)

    # Geometry from the layout constants: 5x5 kernels enlarged 7x (>= 32 px), 4 columns, two blocks.
    scale = math.ceil(FilterLayout.MIN_KERNEL_PX / 5)
    cell, gap, title = 5 * scale, FilterLayout.CELL_GAP, FilterLayout.TITLE_H
    grid_w = 4 * cell + 3 * gap
    assert img.shape[0] == 2 * MARGIN + 2 * (title + cell) + FilterLayout.BLOCK_GAP
    assert img.shape[1] >= 2 * MARGIN + grid_w
    tops = [MARGIN + title, MARGIN + title + cell + FilterLayout.BLOCK_GAP + title]
    lay = FilterLayout([4, 4], 5, 5)
    params = _params(world["run"])
    blocks = []
    for b, tower in enumerate(np.split(params["conv1.weight"], 2)):   # gpu0's kernels, then gpu1's
        kimg = figures.kernel_images(tower)                          # (4, 5, 5, 3), grey
        assert kimg.shape == (4, 5, 5, 3) and (kimg[..., 0] == kimg[..., 1]).all()
        for i in range(4):
            x0, y0 = MARGIN + i * (cell + gap), tops[b]
            assert lay.cell_box(b, i) == (x0, y0, x0 + cell, y0 + cell)
            got = img[y0:y0 + cell, x0:x0 + cell]
            assert not _is_bg(got)
            # nearest-neighbour enlargement of the min-max normalised kernel: exactly its pixels
            assert (got[::scale, ::scale] == kimg[i]).all()
            assert got.min() == 0 and got.max() == 255            # min-max normalised
            if i < 3:                                             # background gap to the next cell
                assert _is_bg(img[y0:y0 + cell, x0 + cell:x0 + cell + gap])
        # the title strip holds text; the band under the grid (block gap / margin) is background
        assert not _is_bg(img[tops[b] - title:tops[b], MARGIN:img.shape[1] - MARGIN])
        assert _is_bg(img[tops[b] + cell:tops[b] + cell + MARGIN])
        assert _is_bg(img[tops[b]:tops[b] + cell, MARGIN + grid_w:])    # nothing right of the grid
        blocks.append(img[tops[b]:tops[b] + cell, MARGIN:MARGIN + grid_w])
    assert not np.array_equal(blocks[0], blocks[1])              # the two towers' kernels differ


def test_filters_one_device_net_gives_one_block(world, tmp_path):
    _, run = _train(ONE_DEVICE, world["root"], "onedev", limit_train_batches=1)
    png = tmp_path / "one.png"
    assert main(["filters", run, "-o", str(png)]) == 0
    img = _png(png)
    cell, gap = 5 * math.ceil(FilterLayout.MIN_KERNEL_PX / 5), FilterLayout.CELL_GAP
    assert img.shape[0] == 2 * MARGIN + FilterLayout.TITLE_H + cell        # one block, one row of 8
    kimg = figures.kernel_images(_params(run)["conv1.weight"])
    y0 = MARGIN + FilterLayout.TITLE_H
    for i in range(8):
        x0 = MARGIN + i * (cell + gap)
        assert (img[y0:y0 + cell:cell // 5, x0:x0 + cell:cell // 5] == kimg[i]).all()
    assert img.shape[1] >= 2 * MARGIN + 8 * cell + 7 * gap


def test_kernel_images_rgb_and_constant_kernels():
    w = np.zeros((2, 3, 2, 2))
    w[0, 0, 0, 0], w[0, 2, 1, 1] = 1.0, -1.0
    k = figures.kernel_images(w)
    assert k.shape == (2, 2, 2, 3)
    assert tuple(k[0, 0, 0]) == (255, 128, 128) and tuple(k[0, 1, 1]) == (128, 128, 0)
    assert (k[1] == 128).all()                                   # a constant kernel is mid-grey


# --------------------------------------------------------------------------- gallery (Figure 4, left)

def test_predict_gallery_one_panel_per_image_bars_match_probabilities(world, tmp_path):
    from alexnetc.runtime.app.model import load_model
    from alexnetc.runtime.data.datasets import load_image

    model = load_model(world["run"], "cpu")
    tf = model.eval_transform()
    q = world["queries"]
    with torch.no_grad():
        probs = model.probs(torch.stack([tf(load_image(p, "L")) for p in q]))
    top = [torch.topk(p, 4) for p in probs]
    names = model.class_names
    # truth: the top-1 label for image 0 (a long red bar), the true label for 1, the least likely for 2
    truth = [names[int(top[0].indices[0])], str(int(world["ds"].labels[5])), names[int(top[2].indices[-1])]]
    png = tmp_path / "gallery.png"
    assert main(["predict", world["run"], *q, "--gallery", str(png), "--truth", *truth]) == 0
    img = _png(png)
    lay = GalleryLayout(3, 4)
    assert img.shape[:2] == (lay.height, lay.width)
    assert lay.width == 2 * MARGIN + 3 * lay.panel_w + 2 * GalleryLayout.GAP     # three panels in a row
    for i, path in enumerate(q):
        x0, y0, x1, y1 = lay.panel_box(i)
        for corner in (img[y0, x0], img[y1 - 1, x1 - 1]):
            assert tuple(corner) == PANEL_BG
        if i < 2:
            assert _is_bg(img[y0:y1, x1:x1 + GalleryLayout.GAP])                # gap between panels
        expect = figures.fit_image(load_image(path, "L"), GalleryLayout.IMG)
        assert (_box(img, lay.image_box(i)) == expect).all()
        for j in range(4):
            tx0, ty0, tx1, ty1 = lay.bar_track(i, j)
            line = img[(ty0 + ty1) // 2, tx0:tx1]
            is_bar = (line == BAR).all(1) | (line == BAR_TRUE).all(1)
            p = float(top[i].values[j])
            assert int(is_bar.sum()) == round(p * GalleryLayout.BAR_W), (i, j, p)
            assert is_bar[:int(is_bar.sum())].all()                               # from the left edge
            red = (line == BAR_TRUE).all(1).any()
            assert red == (names[int(top[i].indices[j])] == truth[i] and round(p * GalleryLayout.BAR_W) > 0)
            assert (_box(img, lay.row_box(i, j))[:, :GalleryLayout.LABEL_W] < 150).any()   # label text
    x0, y0, x1, y1 = lay.bar_track(0, 0)
    assert (img[(y0 + y1) // 2, x0] == BAR_TRUE).all()           # image 0's truth is its top-1: red


def test_gallery_grid_wraps_and_checks_truth(world, tmp_path):
    q = world["queries"][0]
    results = [(q, [("0", 0.5), ("1", 0.25), ("2", 0.125), ("3", 0.0625), ("4", 0.0625)])] * 5
    lay = figures.draw_gallery(results, tmp_path / "g.png", image_mode="L")
    img = _png(tmp_path / "g.png")
    assert (lay.cols, lay.rows) == (4, 2) and img.shape[:2] == (lay.height, lay.width)
    for i in range(8):                                           # 5 panels, 3 empty slots
        x0, y0, x1, y1 = lay.panel_box(i)
        assert (tuple(img[y0, x0]) == PANEL_BG) == (i < 5)
        if i >= 5:
            assert _is_bg(img[y0:y1, x0:x1])
    with pytest.raises(figures.FigureError, match="2 labels for 5 images"):
        figures.draw_gallery(results, tmp_path / "h.png", truth=["0", "1"])


# --------------------------------------------------------------------------- neighbours (Figure 4, right)

def test_neighbors_rows_of_query_and_k_cells_features_cached(world, tmp_path, monkeypatch):
    from alexnetc.runtime.app.model import Model

    monkeypatch.delenv("ALEXNETC_CACHE", raising=False)
    seen = []
    real = Model.features

    def counting(self, images, layer=None):
        seen.append(int(images.shape[0]))
        return real(self, images, layer)

    monkeypatch.setattr(Model, "features", counting)
    q = world["queries"][:2]
    png = tmp_path / "nn.png"
    argv = ["neighbors", world["run"], "--data", world["data"], "--query", *q, "-o", str(png), "--k", "3",
            "--workers", "0", "--device", "cpu"]
    assert main(argv) == 0
    assert sum(seen) == 64 + 2                                   # the whole split once, then the queries
    cache = [f for f in os.listdir(os.path.join(world["run"], "cache")) if f.startswith("features-")]
    assert len(cache) == 1
    cache_path = os.path.join(world["run"], "cache", cache[0])
    with np.load(cache_path) as z:
        assert z["features"].shape == (64, 32) and sorted(z["indices"].tolist()) == list(range(64))
        assert json.loads(str(z["key"]))["layer"] == "fc3"
    mtime = os.stat(cache_path).st_mtime_ns

    img = _png(png)
    lay = NeighborLayout(2, 3)
    assert img.shape[:2] == (lay.height, lay.width)
    assert lay.width == 2 * MARGIN + 4 * NeighborLayout.CELL + 2 * NeighborLayout.GAP + NeighborLayout.QUERY_GAP
    for r, i in enumerate(world["qidx"][:2]):
        cells = [_box(img, lay.cell_box(r, j)) for j in range(4)]      # query + k neighbours
        assert all(not _is_bg(c) for c in cells)
        assert (cells[0] == figures.fit_image(world["ds"][i][0], NeighborLayout.CELL)).all()
        assert (cells[1] == cells[0]).all()                      # a training image's nearest is itself
        x0, y0, x1, y1 = lay.cell_box(r, 0)
        assert _is_bg(img[y0:y1, x1:x1 + NeighborLayout.QUERY_GAP])
        for j in range(1, 3):
            x0, y0, x1, y1 = lay.cell_box(r, j)
            assert _is_bg(img[y0:y1, x1:x1 + NeighborLayout.GAP])
        assert _is_bg(img[y0:y1, lay.cell_box(r, 3)[2]:])         # nothing after the k-th cell
        assert not _is_bg(_box(img, lay.caption_box(r, 1)))       # class and distance under a neighbour

    # The same query again: features come from the cache; only the queries go through the network.
    seen.clear()
    assert main(argv) == 0
    assert seen == [2] and os.stat(cache_path).st_mtime_ns == mtime
    # A different subset is a different cache entry.
    seen.clear()
    assert main(argv + ["--limit", "10"]) == 0
    assert sum(seen) == 10 + 2
    assert len([f for f in os.listdir(os.path.join(world["run"], "cache")) if f.startswith("features-")]) == 2


@pytest.mark.parametrize("spec,layer", [("alexnet", "fc7"), ("variants/mini", "fc7"), ("vgg16", "fc7"),
                                         ("resnet18", "pool5"), ("googlenet", "pool5")])
def test_neighbors_default_layer_is_what_the_class_scores_are_computed_from(spec, layer):
    """Through two towers' concat and dropout (alexnet: fc8 <- concat <- drop7 <- fc7), past GoogLeNet's
    auxiliary heads (the main loss), and for nets with a single fc after global pooling."""
    from alexnetc.compiler import compile_spec
    from alexnetc.runtime.app.model import Model
    from alexnetc.runtime.app.specs import resolve_spec_path

    model = Model.__new__(Model)
    model.net = compile_spec(resolve_spec_path(spec))
    assert model.last_hidden_layer() == layer


def test_neighbors_has_no_default_layer_when_pooling_computes_the_scores():
    """NiN pools 10 (1000) class maps into the scores: the maps are scores too, not a hidden layer, so
    neighbors asks for --layer (a KeyError it turns into that message)."""
    from alexnetc.compiler import compile_spec
    from alexnetc.runtime.app.model import Model
    from alexnetc.runtime.app.specs import resolve_spec_path

    model = Model.__new__(Model)
    model.net = compile_spec(resolve_spec_path("variants/nin-mini"))
    with pytest.raises(KeyError, match="class scores by globalavgpool"):
        model.last_hidden_layer()


def test_neighbors_cache_dir_from_environment(world, tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXNETC_CACHE", str(tmp_path / "cache"))
    argv = ["neighbors", world["run"], "--data", world["data"], "--query", world["queries"][2],
            "-o", str(tmp_path / "nn.png"), "--k", "2", "--limit", "8", "--workers", "0", "--device", "cpu"]
    assert main(argv) == 0
    assert [f for f in os.listdir(tmp_path / "cache") if f.startswith("features-")]
    assert _png(tmp_path / "nn.png").shape[:2] == (NeighborLayout(1, 2).height, NeighborLayout(1, 2).width)


# --------------------------------------------------------------------------- compare (Figure 1)

def _expected_epochs(metrics, target):
    for line in open(metrics).read().splitlines():
        r = json.loads(line)
        if r["train_top1_err"] <= target:
            return r["epoch"]
    return None


def _table(out: str, names):
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(\S+)\s+(\d+|not reached \(in \d+ epochs?\))\s+(\S+)$", line)
        if m and m.group(1) in names:
            rows[m.group(1)] = m.group(2)
    return rows


def test_compare_trains_alike_plots_and_tabulates_then_resumes(world, tmp_path, capsys, monkeypatch):
    root = world["root"]
    (tmp_path / "relu.yaml").write_text(TINY)
    (tmp_path / "tanh.yaml").write_text(TANH)
    out = tmp_path / "cmp"
    target = 0.6
    argv = ["compare", str(tmp_path / "relu.yaml"), str(tmp_path / "tanh.yaml"), "--data", str(root / "data"),
            "--epochs", "2", "--target-error", str(target), "--out", str(out), "--workers", "0",
            "--no-progress", "--device", "cpu"]
    steps = {"n": 0}
    real_step = Trainer.train_step

    def count_or_stop(self, images, labels, step):
        steps["n"] += 1
        if steps.get("stop") == steps["n"]:
            raise KeyboardInterrupt
        return real_step(self, images, labels, step)

    monkeypatch.setattr(Trainer, "train_step", count_or_stop)
    steps["stop"] = 7                  # 2 batches x 2 epochs of relu, then the 3rd step of tanh
    assert main(argv) == 130
    assert "run the same command again" in capsys.readouterr().err

    opts_seen = []
    real_init = Trainer.__init__

    def spy(self, opts):
        opts_seen.append(opts)
        real_init(self, opts)

    monkeypatch.setattr(Trainer, "__init__", spy)
    steps.update(n=0, stop=None)
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert steps["n"] == 2             # relu finished: not retrained; tanh resumed at epoch 2
    assert [o.resume for o in opts_seen] == [True, True]
    assert {o.seed for o in opts_seen} == {7} and {o.epochs for o in opts_seen} == {2}

    png = _png(out / "compare.png")
    assert png.shape[1::-1] == figures.COMPARE_SIZE_PX
    rows = _table(text, ["relu", "tanh"])
    assert set(rows) == {"relu", "tanh"}
    for name in ("relu", "tanh"):
        e = _expected_epochs(out / name / "metrics.jsonl", target)
        assert rows[name] == (str(e) if e is not None else "not reached (in 2 epochs)"), (name, text)
        assert len(open(out / name / "metrics.jsonl").read().splitlines()) == 2

    # Once more: nothing left to train, the same table.
    steps["n"] = 0
    assert main(argv) == 0
    assert steps["n"] == 0 and _table(capsys.readouterr().out, ["relu", "tanh"]) == rows


def test_compare_table_ratios():
    from alexnetc.runtime.app.compare_command import epochs_to_target, format_table, run_names

    recs = [{"epoch": 1, "train_top1_err": 0.5}, {"epoch": 2, "train_top1_err": 0.2}]
    assert epochs_to_target(recs, 0.25) == 2 and epochs_to_target(recs, 0.1) is None
    t = format_table([("relu", 2, 5), ("tanh", 12, 12), ("sigmoid", None, 12)], 0.25).splitlines()
    assert len(t) == 4 and "25.0%" in t[0]
    assert t[1].split()[-2:] == ["2", "1.00x"] and t[2].split()[-2:] == ["12", "6.00x"]
    assert "not reached (in 12 epochs)" in t[3] and t[3].endswith(">6.00x")
    assert run_names(["a/x.yaml", "b/x.yaml", "y"]) == ["x-1", "x-2", "y"]


# --------------------------------------------------------------------------- errors and help

@pytest.mark.parametrize("argv, message", [
    (["filters", "{root}/nope", "-o", "{tmp}/f.png"], "no such checkpoint"),
    (["filters", "{run}", "-o", "{tmp}/f.jpg"], "ending in .png"),
    (["filters", "{run}", "-o", "{tmp}/f.png", "--layer", "fc3"], "not a convolution layer"),
    (["neighbors", "{run}", "--data", "{root}/nodata", "--query", "{q}", "-o", "{tmp}/n.png"], "no such directory"),
    (["neighbors", "{run}", "--data", "{data}", "--query", "{root}/nope.png", "-o", "{tmp}/n.png"], "no such image"),
    (["neighbors", "{run}", "--data", "{data}", "--query", "{q}", "-o", "{tmp}/n.png", "--k", "0"], "--k 0"),
    (["neighbors", "{run}", "--data", "{data}", "--query", "{q}", "-o", "{tmp}/n.png", "--layer", "fc9"], "no layer"),
    (["compare", "{root}/tiny.yaml", "--out", "{tmp}/c"], "at least two specs"),
    (["compare", "{root}/tiny.yaml", "{root}/tiny.yaml", "--target-error", "25", "--out", "{tmp}/c"], "between 0 and 1"),
    (["predict", "{run}", "{q}", "--gallery", "{tmp}/g.png", "--truth", "1", "2"], "2 labels for 1 image"),
])
def test_errors_are_one_line(world, tmp_path, capsys, argv, message):
    fill = {"root": world["root"], "run": world["run"], "data": world["data"], "q": world["queries"][0],
            "tmp": tmp_path}
    assert main([a.format(**fill) for a in argv]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 1 and err[0].startswith("alexnetc: error: ") and message in err[0], err


def test_spec_errors_are_reported_before_training(world, tmp_path, capsys):
    assert main(["compare", str(world["root"] / "tiny.yaml"), str(tmp_path / "missing.yaml"),
                 "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml:1:1: spec file not found" in err and not (tmp_path / "c").exists()


@pytest.mark.parametrize("command", ["filters", "neighbors", "compare"])
def test_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert f"alexnetc {command} " in capsys.readouterr().out
