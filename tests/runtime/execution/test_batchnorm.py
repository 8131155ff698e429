"""Batch norm end to end: the compiler side (shape rule, schema, parameter counts), the executor's
state handling (updated once per training forward, read in evaluation, never differentiated or seen
by SGD), placement-independent checkpoints, and a resume after SIGKILL that restores the running
statistics bit for bit."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from alexnetc.compiler import compile_spec, sym
from alexnetc.compiler.errors import ShapeError
from alexnetc.compiler.pipeline import compile_dict
from alexnetc.runtime.app.cli import main
from alexnetc.runtime.execution.executor import bind
from alexnetc.runtime.execution.layout import param_layout, to_logical, to_placed
from alexnetc.runtime.execution.params import init_params
from alexnetc.runtime.training import checkpoint as ckpt
from alexnetc.runtime.training.loop import Trainer

from ..training.test_train import _KILLER, _opts, _pattern_dataset

TINY_BN = """
name: tiny-bn
input: {channels: 1, height: 28, width: 28}
classes: 4
devices: [gpu0, gpu1]
defaults: {weight_init: {type: kaiming}}
layers:
  - {name: conv1, op: conv, filters: 8, kernel: 5, stride: 2, pad: 2, bias: false,
     groups: {count: 2, devices: [gpu0, gpu1], connect: all}}
  - {name: bn1, op: batchnorm}
  - {name: relu1, op: relu}
  - {name: pool1, op: maxpool, kernel: 3, stride: 2}
  - {name: fc3, op: fc, units: 32, bias: false}
  - {name: bn3, op: batchnorm, momentum: 0.2, act: relu}
  - {name: fc4, op: fc, units: 4}
  - {name: loss, op: softmax_loss}
train: {batch_size: 32, epochs: 2, lr: 0.05, momentum: 0.9, weight_decay: 0.0005, seed: 7}
data: {mirror: false}
"""
# The same network on one device: the two towers' batch norms become one node over all 8 channels.
ONE_GPU = TINY_BN.replace("devices: [gpu0, gpu1]\n", "devices: [gpu0]\n").replace(
    "groups: {count: 2, devices: [gpu0, gpu1], connect: all}", "groups: {count: 2, devices: [gpu0, gpu0], connect: all}")


@pytest.fixture
def spec(tmp_path):
    p = tmp_path / "tiny-bn.yaml"
    p.write_text(TINY_BN)
    return str(p)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _pattern_dataset(tmp_path_factory.mktemp("data"), n_train=96, n_val=32)


def _cpu(net):
    return {d: "cpu" for d in net.devices}


# ------------------------------------------------------------------------------------------ compiler
def test_parameters_are_counted_and_running_statistics_are_state(spec, capsys):
    assert main(["compile", spec]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("bn")}
    assert rows["bn1"][-4] == "16" and rows["bn3"][-4] == "64"   # scale + shift only, not the statistics
    net = compile_spec(spec)
    roles = {n.name: n.role for n in net.graph.variables()}
    assert roles["bn1_g0_scale"] == roles["bn1_g1_shift"] == "param"
    assert roles["bn1_g0_running_mean"] == roles["bn3_running_var"] == "state"
    assert [lp.name for lp in param_layout(net.graph, "state")] == [
        "bn1.running_mean", "bn1.running_var", "bn3.running_mean", "bn3.running_var"]
    assert {lp.name: lp.shape for lp in param_layout(net.graph)}["bn1.scale"] == (8,)
    # relu1 is folded into bn1; the gradient program has no gradient for a running statistic
    assert not any(n.op == "relu" for n in net.graph.nodes())
    assert all("running" not in g for g in net.training().grad_of)


@pytest.mark.parametrize("edit, where, message", [
    ("{name: bn1, op: batchnorm}", "{name: bn1, op: batchnorm, momentum: 1.5}", "momentum"),
    ("{name: bn1, op: batchnorm}", "{name: bn1, op: batchnorm, eps: 0}", "eps"),
    ("{name: bn1, op: batchnorm}", "{name: bn1, op: batchnorm, mometum: 0.1}", "mometum"),
])
def test_bad_attributes_are_located_errors(tmp_path, capsys, edit, where, message):
    p = tmp_path / "bad.yaml"
    p.write_text(TINY_BN.replace(edit, where))
    assert main(["compile", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[1:] == ["1 error"] and f"{p}:10:" in err[0] and message in err[0], err


def test_shape_rule():
    x = sym.var("data")
    y = sym.batchnorm(x, name="bn")
    assert y.infer_shape_dict(data=(2, 3, 4, 5))["bn_running_var"] == (3,)
    assert y.infer_shape_dict(data=(2, 7))["bn_scale"] == (7,)
    with pytest.raises(ShapeError, match="4-d input .* or a 2-d input"):
        y.infer_shape(data=(2, 3, 4))
    with pytest.raises(ShapeError, match="scale has shape"):
        sym.batchnorm(x, params={"scale": sym.var("s", shape=(4,))}).infer_shape(data=(2, 3, 4, 5))


# ------------------------------------------------------------------------------------------ executor
def test_state_is_updated_once_per_training_forward_and_read_in_evaluation(spec):
    net = compile_spec(spec, batch=6)
    params = init_params(net, 0)
    ex = bind(net, _cpu(net), params=params)
    assert set(ex.state) == {"bn1_g0_running_mean", "bn1_g0_running_var", "bn1_g1_running_mean",
                             "bn1_g1_running_var", "bn3_running_mean", "bn3_running_var"}
    assert all(torch.equal(ex.state[k], torch.zeros(4)) for k in ("bn1_g0_running_mean", "bn1_g1_running_mean"))
    assert torch.equal(ex.state["bn3_running_var"], torch.ones(32))
    assert not set(ex.state) & set(ex.grads) and not set(ex.state) & set(ex.params)
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    label = torch.tensor([0, 1, 2, 3, 0, 1])

    out = ex.forward(x, label, is_train=True, keep=("conv1_g0",))
    conv = out["conv1_g0"]
    mean, var = conv.mean((0, 2, 3)), conv.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(ex.state["bn1_g0_running_mean"], 0.1 * mean)
    torch.testing.assert_close(ex.state["bn1_g0_running_var"], 0.9 + 0.1 * var)
    after_one = {k: v.clone() for k, v in ex.state.items()}
    ex.backward()
    assert all(torch.equal(after_one[k], v) for k, v in ex.state.items())   # backward leaves state alone

    ev = bind(net, _cpu(net), params=ex.params, state=ex.state, for_training=False)
    assert ev.state["bn3_running_mean"].data_ptr() == ex.state["bn3_running_mean"].data_ptr()   # shared
    out = ev.forward(x, keep=("conv1_g0", "bn1_g0"))
    expect = F.relu(F.batch_norm(out["conv1_g0"], ex.state["bn1_g0_running_mean"], ex.state["bn1_g0_running_var"],
                                 ex.params["bn1_g0_scale"], ex.params["bn1_g0_shift"], False, 0.1, 1e-5))
    torch.testing.assert_close(out["bn1_g0"], expect)
    ex.forward(x, label, is_train=False)         # evaluating with the training executor changes nothing
    assert all(torch.equal(after_one[k], v) for k, v in ex.state.items())
    ex.forward(x, label, is_train=True)
    torch.testing.assert_close(ex.state["bn1_g0_running_mean"], 0.9 * after_one["bn1_g0_running_mean"] + 0.1 * mean)


def test_sgd_and_weight_decay_never_touch_the_state(spec, data, tmp_path):
    t = Trainer(_opts(spec, data, tmp_path / "run", epochs=1, limit_train_batches=1, limit_val_batches=1))
    t.run()
    assert not set(t.executor.state) & set(t.opt.velocity)
    assert not set(t.executor.state) & set(t.executor.grads)
    mults = t.opt.mults
    assert mults["bn1_g0_scale"] == (1.0, 1.0) and mults["bn3_shift"] == (1.0, 1.0)


def test_decay_mult_zero_excludes_scale_and_shift(tmp_path):
    spec = TINY_BN.replace("{name: bn1, op: batchnorm}", "{name: bn1, op: batchnorm, decay_mult: 0, lr_mult: {bias: 2}}")
    net = compile_dict(__import__("yaml").safe_load(spec), "<bn>")
    attrs = {n.name: dict(n.attrs) for n in net.graph.variables()}
    assert (attrs["bn1_g0_scale"]["lr_mult"], attrs["bn1_g0_scale"]["decay_mult"]) == (1.0, 0.0)
    assert (attrs["bn1_g1_shift"]["lr_mult"], attrs["bn1_g1_shift"]["decay_mult"]) == (2.0, 0.0)
    assert "lr_mult" not in attrs["bn1_g0_running_mean"]


def test_state_moves_between_two_tower_and_one_device_placements(spec, tmp_path):
    two = compile_spec(spec, batch=4)
    p = tmp_path / "one.yaml"
    p.write_text(ONE_GPU)
    one = compile_spec(str(p), batch=4)
    assert "bn1_running_mean" in {n.name for n in one.graph.variables()}
    ex = bind(two, _cpu(two), params=init_params(two, 1))
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    ex.forward(x, torch.tensor([0, 1, 2, 3]), is_train=True)
    logical = to_logical(ex.state, two.graph, "state")
    assert logical["bn1.running_mean"].shape == (8,)
    assert torch.equal(logical["bn1.running_mean"][:4], ex.state["bn1_g0_running_mean"])
    placed = to_placed(logical, one.graph, role="state")
    assert torch.equal(placed["bn1_running_var"], torch.cat([ex.state["bn1_g0_running_var"],
                                                             ex.state["bn1_g1_running_var"]]))
    ev1 = bind(one, _cpu(one), params=to_logical(ex.params, two.graph), state=logical, for_training=False)
    ev2 = bind(two, _cpu(two), params=ex.params, state=ex.state, for_training=False)
    torch.testing.assert_close(ev1.forward(x)["prob"], ev2.forward(x)["prob"], rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------ checkpoints
def _final(run):
    tensors, state = ckpt.load_checkpoint(str(run / "checkpoints"))
    return tensors, state


def test_checkpoint_holds_logical_running_statistics_and_eval_uses_them(spec, data, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(_opts(spec, data, run, epochs=1, limit_train_batches=2, limit_val_batches=1)).run()
    tensors, _ = _final(run)
    st = ckpt.state_from(tensors)
    assert sorted(st) == ["bn1.running_mean", "bn1.running_var", "bn3.running_mean", "bn3.running_var"]
    assert not torch.equal(st["bn3.running_var"], torch.ones(32))      # two training steps moved them
    assert not any(k.startswith("momentum/") and "running" in k for k in tensors)
    from alexnetc.runtime.app.model import load_model

    model = load_model(str(run), device="cpu")
    assert torch.equal(to_logical(model.executor.state, model.net.graph, "state")["bn1.running_var"],
                       st["bn1.running_var"])
    assert main(["eval", str(run), "--data", data, "--workers", "0"]) == 0


def test_a_checkpoint_without_the_running_statistics_is_refused(spec, data, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(_opts(spec, data, run, epochs=1, limit_train_batches=1, limit_val_batches=1)).run()
    tensors, state = _final(run)
    bad = tmp_path / "bad" / "checkpoints"
    ckpt.save_checkpoint(str(bad), {k: v for k, v in tensors.items() if k != "state/bn3.running_var"}, state,
                         tag="e0001")
    assert main(["eval", str(tmp_path / "bad"), "--data", data, "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no state tensor bn3.running_var" in err[0] and "Traceback" not in err[0], err


def test_sigkill_resume_restores_running_statistics_bit_for_bit(spec, data, tmp_path):
    fast = dict(limit_train_batches=2, limit_val_batches=1)
    straight = tmp_path / "straight"
    Trainer(_opts(spec, data, straight, epochs=3, **fast)).run()
    a, _ = _final(straight)
    out = tmp_path / "killed"
    argv = ["train", spec, "--data", data, "--out", str(out), "--workers", "0", "--no-progress", "--epochs", "3",
            "--limit-train-batches", "2", "--limit-val-batches", "1"]
    r = subprocess.run([sys.executable, "-c", _KILLER, "last-batch", *argv], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr
    Trainer(_opts(spec, data, out, epochs=3, resume=True, **fast)).run()
    b, sb = _final(out)
    assert sb["epoch"] == 3
    stats = [k for k in a if k.startswith(ckpt.STATE_PREFIX)]
    assert len(stats) == 4
    for k in stats + [k for k in a if k.startswith(ckpt.PARAM_PREFIX)]:
        assert torch.equal(a[k], b[k]), k


def test_export_of_a_trained_run_carries_its_running_statistics(spec, data, tmp_path, capsys):
    """oracle: onnxruntime against the executor in evaluation mode (`export --verify`, <= 1e-5)."""
    run = tmp_path / "run"
    Trainer(_opts(spec, data, run, epochs=1, limit_train_batches=2, limit_val_batches=1)).run()
    out = tmp_path / "bn.onnx"
    assert main(["export", str(run), "-o", str(out), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "9,628 parameters" in text and "normwise relative error" in text    # statistics not counted
    import onnx
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    tensors, _ = _final(run)
    assert (inits["bn3_running_var"] == ckpt.state_from(tensors)["bn3.running_var"].numpy()).all()


# ------------------------------------------------------------------------------------------ data parallel
def _dp_worker(rank: int, world: int, port: int, spec: str, data: str, out: str) -> None:
    import os

    from .test_data_parallel import _env

    torch.set_num_threads(1)
    os.environ.update(_env(rank, world, port))
    t = Trainer(_opts(spec, data, out, epochs=1, batch_size=8, limit_train_batches=1, limit_val_batches=1,
                      seed=3))
    t.run()
    torch.save({k: v.clone() for k, v in t.executor.state.items()}, os.path.join(out, f"state.{rank}.pt"))


def test_data_parallel_ranks_hold_the_same_running_statistics(spec, data, tmp_path, monkeypatch):
    """oracle: one process on the same global batch. Each shard normalises with its own statistics;
    the running statistics are averaged over the ranks weighted by shard size after each step, so
    every rank holds bit-identical ones, one process under torchrun equals no torchrun bit for bit (on
    as many threads: the workers run on one, and so does the reference here, since ATen's batch norm
    splits a channels-last channel's sums over the threads), and after one step the running mean is
    the global batch mean's update (weighted shard means are the global mean; within 1e-6), while the
    running variance (mean of shard variances) is not."""
    import os

    import torch.multiprocessing as mp

    from .test_distributed import free_port

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    one = Trainer(_opts(spec, data, tmp_path / "one", epochs=1, batch_size=8, limit_train_batches=1,
                        limit_val_batches=1, seed=3))
    torch.set_num_threads(1)   # as the workers (tests/conftest.py restores the count)
    one.run()
    ref = one.executor.state
    for world in (1, 3):
        out = str(tmp_path / f"dp{world}")
        mp.spawn(_dp_worker, args=(world, free_port(), spec, data, out), nprocs=world, join=True)
        states = [torch.load(os.path.join(out, f"state.{r}.pt")) for r in range(world)]
        for r in range(1, world):
            assert all(torch.equal(states[r][k], states[0][k]) for k in ref), f"rank {r} differs from rank 0"
        for k in ref:
            if world == 1:
                assert torch.equal(states[0][k], ref[k]), k
            elif k.startswith("bn1") and k.endswith("running_mean"):
                torch.testing.assert_close(states[0][k], ref[k], rtol=0, atol=1e-6)
        if world > 1:
            assert not torch.equal(states[0]["bn1_g0_running_var"], ref["bn1_g0_running_var"])
        saved = ckpt.state_from(ckpt.load_checkpoint(out + "/checkpoints")[0])
        assert torch.equal(saved["bn3.running_var"], states[0]["bn3_running_var"])


def test_a_two_tower_run_resumes_on_one_device_with_its_running_statistics(spec, data, tmp_path):
    """oracle: the same run resumed on its own two-tower spec. Resumed on the one-device spec (bn1's two
    tower nodes become one over 8 channels), the statistics after one more step agree with it to fp32
    rounding (the convolutions compute in another grouping), and differ from the saved ones."""
    import shutil

    run = tmp_path / "run"
    Trainer(_opts(spec, data, run, epochs=1, limit_train_batches=1, limit_val_batches=1)).run()
    saved = ckpt.state_from(_final(run)[0])
    shutil.copytree(run, tmp_path / "two")
    one = tmp_path / "one.yaml"
    one.write_text(ONE_GPU)
    logs = []
    o = _opts(str(one), data, run, epochs=2, limit_train_batches=1, limit_val_batches=1, resume=True,
              log=logs.append)
    t = Trainer(o)
    t.run()
    assert any("resumed from" in line for line in logs), logs
    assert set(t.executor.state) == {"bn1_running_mean", "bn1_running_var", "bn3_running_mean", "bn3_running_var"}
    Trainer(_opts(spec, data, tmp_path / "two", epochs=2, limit_train_batches=1, limit_val_batches=1,
                  resume=True)).run()
    a, b = ckpt.state_from(_final(run)[0]), ckpt.state_from(_final(tmp_path / "two")[0])
    for k in saved:
        assert not torch.equal(a[k], saved[k]), k
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_batch_norm_with_one_value_per_channel_is_refused(spec, data, tmp_path, capsys):
    """With one value per channel a training batch norm outputs its shift whatever its input: it cannot
    learn, and PyTorch refuses it ("Expected more than 1 value per channel when training"). It used to
    train without a word (issue 25, item 5)."""
    rc = main(["train", spec, "--data", data, "--out", str(tmp_path / "r"), "--batch", "1", "--workers", "0",
               "--no-progress", "--epochs", "1", "--limit-train-batches", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"alexnetc: error: {spec}: layer bn3: batch norm in training needs more than one value "
                               "per channel, it gets 1 (batch 1): its output would be its shift whatever its input; "
                               "train with a larger batch"], err
    assert not (tmp_path / "r" / "checkpoints").exists()
    net = compile_spec(spec)
    assert net.training_problems(2) == []   # bn1 sees 7x7 maps: one image would do for it; bn3 needs two
    gap = compile_dict({"input": {"channels": 1, "height": 8, "width": 8}, "classes": 2, "layers": [
        {"name": "conv", "op": "conv", "filters": 4, "kernel": 3}, {"name": "gap", "op": "globalavgpool"},
        {"name": "bn", "op": "batchnorm"}, {"name": "fc", "op": "fc", "units": 2},
        {"name": "loss", "op": "softmax_loss"}]}, "<gap>")
    assert gap.training_problems(1) == ["layer bn: batch norm in training needs more than one value per channel, it "
                                        "gets 1 (batch 1 of 1x1 maps): its output would be its shift whatever its "
                                        "input; train with a larger batch"]
    assert gap.training_problems(3) == []
