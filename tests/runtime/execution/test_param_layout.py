"""Placement-independent parameters: one logical name and shape per layer parameter (conv1.weight is
96x3x11x11 whatever the towers and devices), joined when saving and split when binding; checkpoints of
one placement evaluate with another (and with renamed devices) to the same outputs; checkpoints with
placed names (written before names were logical) still load; a spec that does not fit is refused
naming the first layer that differs and both shapes."""
from __future__ import annotations

import re

import pytest
import torch

from alexnetc.compiler import compile_spec
from alexnetc.compiler.pipeline import compile_dict, plain
from alexnetc.runtime.app.cli import main
from alexnetc.runtime.app.model import load_model
from alexnetc.runtime.execution.executor import Executor
from alexnetc.runtime.execution.layout import LayoutError, param_layout, to_logical, to_placed
from alexnetc.runtime.execution.params import init_params
from alexnetc.runtime.training.checkpoint import PARAM_PREFIX, CheckpointError, load_checkpoint, save_checkpoint

from ..training.test_train import _pattern_dataset


def _renamed_devices(net, names=("left", "right")):
    spec = plain(net.spec)
    mapping = dict(zip(spec["devices"], names))
    spec["devices"] = list(names)
    for layer in spec["layers"]:
        g = layer.get("groups") or {}
        if g.get("devices"):
            g["devices"] = [mapping[d] for d in g["devices"]]
        if layer.get("device"):
            layer["device"] = mapping[layer["device"]]
    return compile_dict(spec, f"{net.name} on renamed devices")


def test_logical_names_and_shapes_do_not_depend_on_placement(specs_dir):
    two = param_layout(compile_spec(specs_dir / "alexnet.yaml").graph)
    one = param_layout(compile_spec(specs_dir / "alexnet-1gpu.yaml").graph)
    assert [(p.name, p.shape) for p in two] == [(p.name, p.shape) for p in one]
    by = {p.name: p for p in two}
    assert by["conv1.weight"].shape == (96, 3, 11, 11)
    assert by["conv1.weight"].pieces == (("conv1_g0_weight", (48, 3, 11, 11)), ("conv1_g1_weight", (48, 3, 11, 11)))
    assert by["conv2.weight"].shape == (256, 48, 5, 5)       # towers read their own 48 maps
    assert by["fc6.weight"].shape == (4096, 9216) and by["fc8.bias"].shape == (1000,)
    assert {p.name: p.pieces for p in one}["conv2.weight"] == (("conv2_weight", (256, 48, 5, 5)),)
    assert sum(torch.Size(p.shape).numel() for p in two) == 60_965_224


def test_join_then_split_is_the_identity(specs_dir):
    net = compile_spec(specs_dir / "variants" / "mini.yaml")
    placed = init_params(net, 3)
    logical = to_logical(placed, net.graph)
    assert set(logical) == {p.name for p in param_layout(net.graph)}
    back = to_placed(logical, net.graph)
    assert set(back) == set(placed) and all(torch.equal(back[k], placed[k]) for k in placed)


@pytest.mark.parametrize("target", ["mini-1gpu", "renamed"])
def test_two_tower_parameters_run_the_same_on_another_placement(specs_dir, target):
    two = compile_spec(specs_dir / "variants" / "mini.yaml", batch=3)
    other = (compile_spec(specs_dir / "variants" / "mini-1gpu.yaml", batch=3) if target == "mini-1gpu"
             else _renamed_devices(two).at_batch(3))
    logical = to_logical(init_params(two, 5), two.graph)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    outs = []
    for net in (two, other):
        ex = Executor(net, {d: "cpu" for d in net.devices}, for_training=False, params=logical)  # binding splits
        outs.append(ex.forward(x)["prob"])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-7)


def test_a_spec_that_does_not_fit_names_the_first_layer_and_both_shapes(specs_dir):
    full = compile_spec(specs_dir / "alexnet.yaml")
    half = compile_spec(specs_dir / "variants" / "one-gpu-half.yaml")
    logical = {p.name: torch.zeros(p.shape) for p in param_layout(full.graph)}
    with pytest.raises(LayoutError, match=re.escape("ckpt does not fit alexnet-one-gpu-half: layer conv1: conv1.weight "
                                                    "is (96, 3, 11, 11) there, (48, 3, 11, 11) in alexnet-one-gpu-half")):
        to_placed(logical, half.graph, source="ckpt", target="alexnet-one-gpu-half")
    del logical["fc8.bias"]
    with pytest.raises(LayoutError, match=r"no parameter fc8\.bias for layer fc8"):
        to_placed(logical, full.graph)


def _checkpoint(net, tensors, directory, **state):
    st = {"spec": plain(net.spec), "spec_hash": net.hash, "classes": [str(i) for i in range(net.classes)], **state}
    return save_checkpoint(directory, tensors, st, tag="e0001")


def test_old_layout_checkpoints_load_on_any_placement(specs_dir, tmp_path):
    two = compile_spec(specs_dir / "variants" / "mini.yaml")
    placed = init_params(two, 7)
    _checkpoint(two, {PARAM_PREFIX + k: v for k, v in placed.items()}, tmp_path / "old")   # conv1_g0_weight ...
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    ref = Executor(two.at_batch(2), {d: "cpu" for d in two.devices}, for_training=False, params=placed).forward(x)
    for spec in (None, str(specs_dir / "variants" / "mini-1gpu.yaml")):
        model = load_model(str(tmp_path / "old"), "cpu", batch=2, spec=spec)
        torch.testing.assert_close(model.probs(x), ref["prob"], rtol=1e-5, atol=1e-7)
    with pytest.raises(CheckpointError, match=re.escape("does not fit alexnet: layer conv1: conv1.weight is (32, 1, 5, 5) "
                                                        "there, (96, 3, 11, 11) in alexnet")):
        load_model(str(tmp_path / "old"), "cpu", spec=str(specs_dir / "alexnet.yaml"))


def test_eval_with_a_one_device_spec_prints_the_same_error_rates(specs_dir, tmp_path, capsys):
    """Two epochs of the two-tower mini net (a few batches each), evaluated on its own spec and on
    the one-device spec: the same numbers. The checkpoint holds logical names only."""
    run, data = tmp_path / "run", _pattern_dataset(tmp_path / "data", n_train=32, n_val=32)
    assert main(["train", "variants/mini", "--data", data, "--out", str(run), "--epochs", "2", "--batch", "16",
                 "--workers", "0", "--no-progress", "--device", "cpu"]) == 0
    tensors, _ = load_checkpoint(str(run / "checkpoints"))
    assert tensors["param/conv1.weight"].shape == (32, 1, 5, 5) and "momentum/conv1.weight" in tensors
    assert not any("_g0_" in k for k in tensors)
    capsys.readouterr()
    lines = []
    for extra in ([], ["--spec", "variants/mini-1gpu"]):
        assert main(["eval", str(run), "--data", data, "--batch", "16", "--workers", "0", "--device", "cpu",
                     *extra]) == 0
        out = capsys.readouterr().out.strip().splitlines()[0]
        lines.append(out[out.index("loss"):])
    assert lines[0] == lines[1] and "top-1 error" in lines[0]
    assert main(["eval", str(run), "--data", data, "--spec", "variants/one-gpu-half"]) == 2
    err = capsys.readouterr().err
    assert "layer conv1" in err and len(err.strip().splitlines()) == 1


def test_a_two_tower_run_resumes_on_one_device(tmp_path, capsys):
    run, data = tmp_path / "run", _pattern_dataset(tmp_path / "data", n_train=32, n_val=16)
    common = ["--data", data, "--out", str(run), "--batch", "16", "--workers", "0", "--no-progress", "--device", "cpu"]
    assert main(["train", "variants/mini", "--epochs", "1", *common]) == 0
    first, _ = load_checkpoint(str(run / "checkpoints"))
    assert main(["train", "variants/mini-tanh", "--resume", "--epochs", "2", *common]) == 2   # another network
    assert "refusing to resume" in capsys.readouterr().err
    assert main(["train", "variants/mini-1gpu", "--resume", "--epochs", "2", *common]) == 0
    assert "resumed from" in capsys.readouterr().out
    tensors, state = load_checkpoint(str(run / "checkpoints"))
    assert state["epoch"] == 2 and state["spec_name"] == "alexnet-mini-1gpu" and len(state["history"]) == 2
    assert set(tensors) == set(first)     # the same logical names, whichever placement saved them
    assert not torch.equal(tensors["param/conv1.weight"], first["param/conv1.weight"])   # and it trained on
