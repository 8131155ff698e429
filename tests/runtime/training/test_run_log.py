"""What a run leaves for other tools: metrics.csv (Lightning's layout), hparams.yaml, and TensorBoard events
read back with tensorboard's own reader (skipped, with the reason, when the package is not installed);
a resumed run continues the files with no step logged twice."""
from __future__ import annotations

import json
import os

import pytest
import yaml

from alexnetc.compiler import compile_spec
from alexnetc.runtime.training import run_log
from alexnetc.runtime.training.errors import TrainingError
from alexnetc.runtime.training.loop import Trainer
from alexnetc.runtime.training.run_log import COLUMNS, read_csv_rows

from .faults import nan_loss_at_step
from .test_train import TINY, _opts, _pattern_dataset, run_interrupted

TB_MISSING = "the optional tensorboard package is not installed (pip install 'alexnetc[tensorboard]')"


@pytest.fixture
def tiny10(tmp_path):
    """TINY on 320 training images: 10 updates an epoch, so one step row (every 10) per epoch."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    return str(spec), _pattern_dataset(tmp_path / "data", n_train=320, n_val=64)


def _jsonl(out):
    return [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")).read().splitlines()]


def _steps(rows):
    return [(int(r["epoch"]), int(r["step"]), "step" if r["train_loss_step"] else "epoch") for r in rows]


def test_csv_and_hparams_of_a_run(tiny10, tmp_path):
    spec, data = tiny10
    out = tmp_path / "run"
    Trainer(_opts(spec, data, out, epochs=2)).run()
    rows = read_csv_rows(str(out / "metrics.csv"))
    assert list(rows[0]) == list(COLUMNS)
    assert _steps(rows) == [(1, 10, "step"), (1, 10, "epoch"), (2, 20, "step"), (2, 20, "epoch")]
    for row, rec in zip([r for r in rows if r["val_loss"]], _jsonl(out)):   # epoch rows = metrics.jsonl
        for key in ("train_loss", "train_top1_err", "val_top1_err", "val_top5_err", "lr", "images_per_second"):
            assert float(row[key]) == pytest.approx(rec[key], rel=1e-12), key
        assert float(row["wall_seconds"]) >= rec["train_seconds"] > 0
    # a step row covering a whole epoch equals the epoch's training numbers
    assert float(rows[0]["train_top1_err_step"]) == pytest.approx(float(rows[1]["train_top1_err"]))
    hp = yaml.safe_load(open(out / "hparams.yaml"))
    assert hp["spec"]["hash"] == compile_spec(spec).hash and hp["spec"]["name"] == "tiny"
    assert hp["train"]["epochs"] == 2 and hp["train"]["batch_size"] == 32 and hp["train"]["seed"] == 7
    assert hp["train"]["schedule"]["type"] == "step" and hp["data"] == data
    import torch

    assert hp["versions"]["torch"] == torch.__version__.split("+")[0] or hp["versions"]["torch"] == torch.__version__


def test_resume_continues_the_files_without_a_step_twice(tiny10, tmp_path, monkeypatch):
    spec, data = tiny10
    straight, out = tmp_path / "straight", tmp_path / "stopped"
    Trainer(_opts(spec, data, straight, epochs=2)).run()
    run_interrupted(monkeypatch, _opts(spec, data, out, epochs=2), at=15)   # Ctrl-C in epoch 2, at step 14
    # a crashed run may have logged past its checkpoint: those rows go on resume
    with open(out / "metrics.csv", "a") as fh:
        fh.write("2,18,0.05,9,9,9" + "," * (len(COLUMNS) - 6) + "\n")
    Trainer(_opts(spec, data, out, epochs=2, resume=True)).run()
    rows, want = read_csv_rows(str(out / "metrics.csv")), read_csv_rows(str(straight / "metrics.csv"))
    assert _steps(rows) == _steps(want)                                    # no step twice, none lost
    epoch_rows = [r for r in rows if r["val_loss"]]
    for got, ref in zip(epoch_rows, [r for r in want if r["val_loss"]]):  # the resumed run is the same run
        assert float(got["val_top1_err"]) == pytest.approx(float(ref["val_top1_err"]), abs=1e-12)
        assert float(got["train_loss"]) == pytest.approx(float(ref["train_loss"]), rel=1e-6)
    assert float(epoch_rows[1]["wall_seconds"]) > float(epoch_rows[0]["wall_seconds"])


def test_tensorboard_events_read_back(tiny10, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason=TB_MISSING)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec, data = tiny10
    out = tmp_path / "run"
    run_interrupted(monkeypatch, _opts(spec, data, out, epochs=2), at=15)
    Trainer(_opts(spec, data, out, epochs=2, resume=True)).run()
    assert [f for f in os.listdir(out) if f.startswith(run_log.EVENTS_PREFIX)]
    acc = EventAccumulator(str(out))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/train", "loss/val", "top1_err/train", "top1_err/val", "top5_err/val", "lr",
            "speed/images_per_second", "speed/data_wait_share", "top1_err/train_step"} <= scalars
    recs = _jsonl(out)
    for tag, key in (("top1_err/val", "val_top1_err"), ("loss/train", "train_loss"), ("lr", "lr")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r["step"] for r in recs]      # one event per epoch, none twice
        assert [e.value for e in events] == pytest.approx([r[key] for r in recs], rel=1e-6)
    assert [e.step for e in acc.Scalars("top1_err/train_step")] == [10, 20]
    assert "_hparams_/experiment" in acc.PluginTagToContent("hparams")


def test_without_tensorboard_the_csv_is_still_written(tiny10, tmp_path, monkeypatch):
    monkeypatch.setattr(run_log, "tensorboard_writer", lambda: None)
    spec, data = tiny10
    out = tmp_path / "run"
    Trainer(_opts(spec, data, out, epochs=1)).run()
    assert not [f for f in os.listdir(out) if f.startswith(run_log.EVENTS_PREFIX)]
    assert len(read_csv_rows(str(out / "metrics.csv"))) == 2 and (out / "hparams.yaml").is_file()


def test_divergence_is_recorded_and_a_resume_clears_it(tiny10, tmp_path, monkeypatch):
    spec, data = tiny10
    out = tmp_path / "nan"
    real_step = nan_loss_at_step(monkeypatch, 12)   # the 13th step
    with pytest.raises(TrainingError, match="diverged"):
        Trainer(_opts(spec, data, out, epochs=2)).run()
    last = _jsonl(out)[-1]
    assert last["event"] == "diverged" and "step 13" in last["message"] and "nan" in last["message"]
    monkeypatch.setattr(Trainer, "train_step", real_step)
    Trainer(_opts(spec, data, out, epochs=2, resume=True)).run()
    assert [r.get("event") for r in _jsonl(out)] == [None, None]


def test_only_the_writing_process_logs(tiny10, tmp_path, monkeypatch):
    """Under torchrun only rank 0 writes (`Trainer.writes`): a process that does not write opens no RunLog."""
    opened = []
    real_start = run_log.RunLog.start
    monkeypatch.setattr(run_log.RunLog, "start", lambda self, step, hp: (opened.append(self.out),
                                                                       real_start(self, step, hp)))
    spec, data = tiny10
    t = Trainer(_opts(spec, data, tmp_path / "quiet", epochs=1))
    t.writes = False
    t.run()
    assert opened == [] and not (tmp_path / "quiet" / "metrics.csv").exists()
    Trainer(_opts(spec, data, tmp_path / "rank0", epochs=1)).run()
    assert opened == [str(tmp_path / "rank0")] and (tmp_path / "rank0" / "metrics.csv").is_file()
