"""Non-finite values never pass silently, and a checkpoint's optimizer state and data statistics are
checked before use (issue 25, item 4): eval, predict, export, filters, neighbors, --resume and
--init-from refuse a checkpoint whose weights, running statistics or momentum hold NaN or infinity,
naming the tensor; --resume refuses one without momentum buffers unless --fresh-optimizer asks for zero
momentum; malformed data statistics are a located message, not "internal error"."""
from __future__ import annotations

import re

import pytest
import torch

from alexnetc.runtime.app.cli import main
from alexnetc.runtime.training import checkpoint as ckpt

from .test_robustness import _resign as resign


def cli(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, [line for line in cap.err.splitlines() if line], cap.out


def one_error(argv, capsys, status=2) -> str:
    rc, err, out = cli(argv, capsys)
    assert rc == status and len(err) == 1 and err[0].startswith("alexnetc: error: "), (rc, err, out)
    assert "nan" not in out.lower(), out
    return err[0][len("alexnetc: error: "):]


def _poison(name: str, value: float = float("nan"), n: int = 3):
    def edit(tensors):
        tensors[name].view(-1)[:n] = value
    return edit


def train_argv(spec, data, run, *more):
    return ["train", spec, "--data", data, "--out", str(run), "--workers", "0", "--no-progress", "--epochs", "2",
            "--resume", *more]


def test_non_finite_weights_are_refused_by_every_reader(tiny_trained, tiny_copy, tmp_path, capsys):
    """predict printed "nan%", eval "loss nan", export wrote an ONNX file of NaN weights: each now refuses
    (exit 2), naming the tensor and how many of its values are not finite."""
    spec, data, _ = tiny_trained
    path = resign(tiny_copy, _poison("param/fc4.weight"))
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((28, 28), 90, np.uint8)).save(tmp_path / "q.png")
    expected = f"{path}: non-finite values (NaN or infinity) in fc4.weight (3 of 128 values); refusing to use " \
               "them (a diverged or damaged checkpoint)"
    for argv in (["eval", str(tiny_copy), "--data", data, "--workers", "0"],
                 ["predict", str(tiny_copy), str(tmp_path / "q.png")],
                 ["export", str(tiny_copy), "-o", str(tmp_path / "m.onnx")],
                 ["filters", str(tiny_copy), "-o", str(tmp_path / "f.png")],
                 ["neighbors", str(tiny_copy), "--limit", "8", "-o", str(tmp_path / "n.png"), "--query",
                  str(tmp_path / "q.png"), "--workers", "0"]):
        assert one_error(argv, capsys) == expected, argv
    assert not (tmp_path / "m.onnx").exists()
    assert one_error(train_argv(spec, data, tiny_copy), capsys) == expected
    line = one_error(["train", spec, "--data", data, "--out", str(tmp_path / "ft"), "--workers", "0", "--no-progress",
                      "--epochs", "1", "--init-from", str(tiny_copy)], capsys)
    assert line == "--init-from: " + expected


def test_non_finite_momentum_is_refused_on_resume(tiny_trained, tiny_copy, capsys):
    spec, data, _ = tiny_trained
    path = resign(tiny_copy, _poison("momentum/conv2.weight", float("inf"), 1))
    assert one_error(train_argv(spec, data, tiny_copy), capsys) == \
        f"{path}: non-finite values (NaN or infinity) in momentum/conv2.weight (1 of 576 values); refusing " \
        "to use them (a diverged or damaged checkpoint)"


def test_missing_momentum_needs_an_explicit_fresh_optimizer(tiny_trained, tiny_copy, capsys):
    """A checkpoint re-signed without its momentum buffers resumed (exit 0) with momentum silently zero."""
    spec, data, _ = tiny_trained

    def drop_momentum(tensors):
        for k in [k for k in tensors if k.startswith("momentum/")]:
            del tensors[k]

    path = resign(tiny_copy, drop_momentum)
    line = one_error(train_argv(spec, data, tiny_copy, "--limit-train-batches", "2", "--limit-val-batches", "1"),
                     capsys)
    assert re.fullmatch(re.escape(f"{path}: no optimizer state (momentum buffers) for ") + r"conv1_g0_bias, .* and \d+ "
                        r"more: resuming would silently restart SGD's momentum at zero; pass --fresh-optimizer to "
                        r"resume so", line), line
    rc, err, out = cli(train_argv(spec, data, tiny_copy, "--fresh-optimizer"), capsys)
    assert rc == 0, err
    assert "--fresh-optimizer: SGD's momentum starts at zero (0 optimizer state tensors in the checkpoint ignored)" in out
    assert "resumed from" in out and "epoch 2:" in out


def test_malformed_data_statistics_are_a_message(tiny_trained, tiny_copy, tmp_path, capsys):
    """A checkpoint whose data statistics are malformed gave "internal error: ValueError"."""
    spec, data, _ = tiny_trained
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((28, 28), 90, np.uint8)).save(tmp_path / "q.png")
    for stats, why in (({"mean": [0.5], "std": "x"}, "could not convert string to float: 'x'"),
                       ({"mean": [0.5], "std": [0.2], "eigval": [1.0], "eigvec": [[1.0]]}, "no 'images'"),
                       ({"mean": [0.5], "std": [float("nan")], "eigval": [1.0], "eigvec": [[1.0]], "images": 3},
                        "non-finite statistics (NaN or infinity)"),
                       ({"mean": [0.5], "std": [0.0], "eigval": [1.0], "eigvec": [[1.0]], "images": 3},
                        "not one positive std per channel of the mean")):
        path = resign(tiny_copy, edit_state=lambda s, st=stats: s.update(data_stats=st))
        expected = f"{path}: not a usable alexnetc training checkpoint: state.data_stats is malformed ({why})"
        assert one_error(["predict", str(tiny_copy), str(tmp_path / "q.png")], capsys) == expected
        assert one_error(["eval", str(path), "--data", data], capsys) == expected
    path = resign(tiny_copy, edit_state=lambda s: s.update(data_config=[1, 2]))
    assert one_error(train_argv(spec, data, tiny_copy), capsys) == \
        f"{path}: not a usable alexnetc training checkpoint: state.data_config is not a mapping"


def test_non_finite_running_statistics_are_refused(tmp_path, capsys):
    from alexnetc.runtime.training.loop import Trainer

    from ..execution.test_batchnorm import TINY_BN
    from .test_train import _opts, _pattern_dataset

    spec = tmp_path / "bn.yaml"
    spec.write_text(TINY_BN)
    data = _pattern_dataset(tmp_path / "data", n_train=64, n_val=32)
    Trainer(_opts(str(spec), data, tmp_path / "run", epochs=1, limit_train_batches=1, limit_val_batches=1)).run()
    path = resign(tmp_path / "run", _poison("state/bn3.running_var", float("-inf"), 2))
    assert one_error(["eval", str(tmp_path / "run"), "--data", data], capsys) == \
        f"{path}: non-finite values (NaN or infinity) in bn3.running_var (2 of 32 values); refusing to use them " \
        "(a diverged or damaged checkpoint)"


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_check_finite_names_every_bad_tensor(value):
    from alexnetc.runtime.training.verify import check_finite

    good, bad = torch.ones(4), torch.tensor([1.0, value, value])
    check_finite("x", {"param/a": good, "rng/torch": torch.zeros(3, dtype=torch.uint8)})
    with pytest.raises(ckpt.CheckpointError, match=r"^x: non-finite values \(NaN or infinity\) in b \(2 of 3 values\), "
                                                   r"momentum/c \(2 of 3 values\); refusing"):
        check_finite("x", {"param/a": good, "param/b": bad, "momentum/c": bad})
