"""`alexnetc train SPEC --init-from RUN` (runtime/training/warm_start.py): a new run starts from another
run's weights, layer by layer where names and shapes match, whatever either run's placement; the
other layers start from the spec's initialisers; refusals are one line."""
from __future__ import annotations

import pytest
import torch

from alexnetc.compiler import compile_spec
from alexnetc.runtime.app.cli import main
from alexnetc.runtime.execution.params import init_params
from alexnetc.runtime.training import checkpoint as ckpt
from alexnetc.runtime.training import resume
from alexnetc.runtime.training.errors import TrainingError
from alexnetc.runtime.training.loop import Trainer
from alexnetc.runtime.training.warm_start import WarmStartError, warm_start

from .test_train import TINY, _opts, _pattern_dataset


def _variant(tmp_path, name: str, **edits: str) -> str:
    text = TINY
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace("name: tiny", f"name: {name}"))
    return str(path)


@pytest.fixture
def trained(tmp_path_factory):
    """A tiny two-tower run trained one short epoch (the checkpoint fine-tuning starts from)."""
    root = tmp_path_factory.mktemp("source")
    spec = root / "tiny.yaml"
    spec.write_text(TINY)
    data = _pattern_dataset(root / "data")
    Trainer(_opts(str(spec), data, root / "run", epochs=1, limit_train_batches=3, limit_val_batches=1)).run()
    return str(root / "run"), data


def test_matching_layers_load_and_a_changed_layer_starts_fresh_whole(trained, tmp_path, monkeypatch):
    """oracle: the source checkpoint's tensors (joined to logical names, split for the new placement)
    and init_params of the new spec. The new spec is one device (no towers) and fc3 is wider: conv1,
    conv2 load; fc3's weight and bias change shape; fc4's weight changes shape, so its bias (same shape)
    starts fresh too."""
    run, data = trained
    one = TINY.replace("devices: [gpu0, gpu1], connect", "connect").replace("devices: [gpu0, gpu1]\n",
                                                                           "devices: [gpu0]\n")
    one = one.replace("units: 32", "units: 48")
    assert "gpu1" not in one.replace("device: gpu0", "")
    spec = tmp_path / "tiny-1gpu-wide.yaml"
    spec.write_text(one.replace("name: tiny", "name: tiny-1gpu-wide"))
    logs: list[str] = []
    started: dict = {}
    real = resume.warm_start_from

    def keep(*args):
        params, state, path = real(*args)
        started.update({k: v.clone() for k, v in params.items()})
        return params, state, path
    monkeypatch.setattr(resume, "warm_start_from", keep)
    opts = _opts(str(spec), data, tmp_path / "ft", epochs=1, limit_train_batches=1, limit_val_batches=1,
                 init_from=run, log=logs.append)
    t = Trainer(opts)
    t.run()
    net = compile_spec(spec)
    tensors, state = ckpt.load_checkpoint(run + "/checkpoints")
    fresh = init_params(net, t.cfg.seed)
    saved = ckpt.params_from(tensors)
    assert set(started) == set(fresh)
    for name in ("conv1_weight", "conv1_bias", "conv2_weight", "conv2_bias"):
        logical = name.replace("_", ".", 1)
        assert torch.equal(started[name], saved[logical]), name
    for name in ("fc3_weight", "fc3_bias", "fc4_weight", "fc4_bias"):
        assert torch.equal(started[name], fresh[name]), name
    summary = next(line for line in logs if line.startswith("--init-from"))
    assert "4 tensors loaded" in summary and "4 in layers of another shape initialised fresh" in summary, summary
    assert "not in the checkpoint" not in summary and "fc4.bias (with its layer)" in summary
    new_state = ckpt.load_checkpoint(str(tmp_path / "ft" / "checkpoints"))[1]
    assert new_state["init_from"].endswith(".json") and new_state["epoch"] == 1
    # a fine-tuned run resumes as any run (from its own checkpoint) and keeps saying where it started
    Trainer(_opts(str(spec), data, tmp_path / "ft", epochs=2, limit_train_batches=1, limit_val_batches=1,
                  resume=True)).run()
    again = ckpt.load_checkpoint(str(tmp_path / "ft" / "checkpoints"))[1]
    assert again["epoch"] == 2 and again["init_from"] == new_state["init_from"]


def test_another_number_of_classes_reinitialises_only_the_classifier(trained, tmp_path):
    """warm_start alone (no data needed for this network): 10 classes instead of 4."""
    run, _ = trained
    ten = compile_spec(_variant(tmp_path, "ten", **{"classes: 4": "classes: 10", "units: 4,": "units: 10,"}))
    tensors, state = ckpt.load_checkpoint(run + "/checkpoints")
    ws = warm_start(ten, 3, tensors, state, "src")
    assert sorted(ws.loaded) == ["conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight", "fc3.bias", "fc3.weight"]
    assert ws.reshaped == ["fc4.weight (4, 32) -> (10, 32)", "fc4.bias (4,) -> (10,)"] and not ws.unused
    assert torch.equal(ws.params["fc4_weight"], init_params(ten, 3)["fc4_weight"])
    renamed = compile_spec(_variant(tmp_path, "renamed", **{"name: conv1": "name: c1", "name: conv2": "name: c2",
                                                            "name: fc3": "name: f3", "name: fc4": "name: f4"}))
    with pytest.raises(WarmStartError, match="no layer of renamed is in this checkpoint"):
        warm_start(renamed, 3, tensors, state, "src")


def test_refusals_are_one_line(trained, tmp_path, capsys):
    run, data = trained
    spec = _variant(tmp_path, "same")
    with pytest.raises(TrainingError, match="--init-from starts a new run .* give one of them"):
        Trainer(_opts(spec, data, tmp_path / "x", resume=True, init_from=run))
    for source, needle in ((str(tmp_path / "nowhere"), "no such checkpoint"),
                           (str(tmp_path), "no checkpoint in this directory verifies")):
        assert main(["train", spec, "--data", data, "--out", str(tmp_path / "y"), "--init-from", source,
                     "--epochs", "1", "--workers", "0", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("alexnetc: error: --init-from:") and needle in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_a_variant_that_only_changes_classes_fine_tunes_from_its_base_run(trained, tmp_path, capsys):
    """The README's recipe on the tiny net: `base: tiny.yaml` + `classes: 6` (no modify_layers) trains
    from the 4-class run; fc4 (the classifier) follows classes to 6 units and starts fresh, the rest loads."""
    run, data = trained
    base = tmp_path / "tiny.yaml"
    base.write_text(TINY)
    six = tmp_path / "six.yaml"
    six.write_text("base: tiny.yaml\nname: six\nclasses: 6\n")
    assert main(["train", str(six), "--data", data, "--out", str(tmp_path / "six"), "--init-from", run,
                 "--epochs", "1", "--limit-train-batches", "1", "--limit-val-batches", "1", "--workers", "0",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "fc4.weight (4, 32) -> (6, 32)" in out, out
    tensors, state = ckpt.load_checkpoint(str(tmp_path / "six" / "checkpoints"))
    assert tuple(tensors["param/fc4.weight"].shape) == (6, 32) and state["init_from"]


def _image_tree(root, classes: int, per_class: int = 2, size: int = 40):
    """An ImageNet-style tree of random RGB images: train/ and val/, `classes` class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c:02d}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return str(root)


def _fine_tune(tmp_path, base: str, source: str, data: str) -> dict:
    variant = tmp_path / f"{base}-10.yaml"
    variant.write_text(f"base: {base}\nname: {base}-10\nclasses: 10\n")
    out = tmp_path / "tuned"
    assert main(["train", str(variant), "--data", data, "--out", str(out), "--init-from", source, "--epochs", "1",
                 "--batch", "2", "--limit-train-batches", "1", "--limit-val-batches", "1", "--workers", "0",
                 "--no-progress", "--device", "cpu", "--lr", "1e-9"]) == 0   # a step that moves nothing visibly
    tensors, state = ckpt.load_checkpoint(str(out / "checkpoints"))
    assert state["classes"] == [f"class{c:02d}" for c in range(10)]
    return tensors


@pytest.mark.slow
def test_resnet18_with_ten_classes_fine_tunes_from_imported_torchvision_weights(tmp_path, capsys):
    """The README's fine-tuning recipe as written: import torchvision's ResNet-18 (random weights under
    its state-dict keys), a variant with `classes: 10` and nothing else, --init-from the import. The fc
    is 10-way and fresh; every other layer is the imported one (oracle: the torchvision state dict)."""
    from ..app.test_weights_import_resnet import _random_net

    net = _random_net("resnet18")
    weights = tmp_path / "resnet18.pth"
    torch.save({k: v.contiguous() for k, v in net.state_dict().items()}, weights)
    assert main(["import", "torchvision-resnet18", str(weights), "-o", str(tmp_path / "tv")]) == 0
    data = _image_tree(tmp_path / "data", 10)
    capsys.readouterr()
    tensors = _fine_tune(tmp_path, "resnet18", str(tmp_path / "tv"), data)
    assert "fc.weight (1000, 512) -> (10, 512)" in capsys.readouterr().out
    assert tuple(tensors["param/fc.weight"].shape) == (10, 512)
    for ours, theirs in (("conv1.weight", "conv1.weight"), ("layer4.conv2.weight", "layer4.1.conv2.weight")):
        assert torch.allclose(tensors[f"param/{ours}"], net.state_dict()[theirs], atol=1e-6), ours


@pytest.mark.slow
def test_alexnet_with_ten_classes_fine_tunes_from_a_thousand_class_run(tmp_path, capsys):
    """alexnet.yaml (1000 classes, two towers) trained one step on synthetic images; `base: alexnet` +
    `classes: 10` starts from it: fc8 is 10-way and fresh, conv1..fc7 loaded."""
    src = tmp_path / "src"
    assert main(["train", "alexnet", "--synthetic", "4", "--batch", "2", "--epochs", "1", "--limit-train-batches",
                 "1", "--limit-val-batches", "1", "--workers", "0", "--no-progress", "--device", "cpu",
                 "--out", str(src)]) == 0
    source, _ = ckpt.load_checkpoint(str(src / "checkpoints"))
    data = _image_tree(tmp_path / "data", 10)
    capsys.readouterr()
    tensors = _fine_tune(tmp_path, "alexnet", str(src), data)
    out = capsys.readouterr().out
    assert "fc8.weight (1000, 4096) -> (10, 4096)" in out, out
    assert tuple(tensors["param/fc8.weight"].shape) == (10, 4096)
    for name in ("conv1.weight", "fc7.weight"):
        assert torch.allclose(tensors[f"param/{name}"], source[f"param/{name}"], atol=1e-6), name
