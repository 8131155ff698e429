"""Progress in a log (runtime/training/progress.py): when stdout is not a terminal, a line at most every
`every` seconds with the batch, running loss, images/s and time left; none on a terminal."""
from __future__ import annotations

import re

from alexnetc.runtime.training.loop import Trainer
from alexnetc.runtime.training.progress import Progress

from .test_train import TINY, _opts, _pattern_dataset


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_line_every_interval_never_more_often():
    """oracle: a fake clock. 100 batches of 0.7 s each with every=10: a line at the first batch at least
    10 s after the previous line (batch 15, 10.5 s; then every 15 batches), so 6 lines in 70 s; the
    time left from the mean time per batch so far (85 x 0.7 s = 59.5 s)."""
    clock, lines = Clock(), []
    bar = Progress(100, 0, "epoch 1/3", enabled=True, log=lines.append, every=10.0, clock=clock, lines=True)
    for i in range(100):
        clock.t += 0.7
        bar.update(loss=2.0 - i / 100, ips=512.0)
    bar.close()
    assert len(lines) == 6
    assert lines[0] == "epoch 1/3: batch 15/100 (15%), loss 1.8600, 512 img/s, 1m00s left in this pass"
    done = [int(re.search(r"batch (\d+)/", l).group(1)) for l in lines]
    assert done == [15, 30, 45, 60, 75, 90]


def test_a_resumed_pass_counts_from_where_it_starts_and_no_lines_on_a_terminal():
    clock, lines = Clock(), []
    bar = Progress(50, 40, "epoch 2/2", enabled=True, log=lines.append, every=1.0, clock=clock, lines=True)
    clock.t += 2.0
    bar.update(loss=0.5, ips=0.0, unit="val")
    assert lines == ["epoch 2/2: batch 41/50 (82%), loss 0.5000, 18s left in this pass"]
    quiet = []
    off = Progress(50, 0, "x", enabled=True, log=quiet.append, every=0.0, clock=clock, lines=False)
    disabled = Progress(50, 0, "x", enabled=False, log=quiet.append, every=0.0, clock=clock, lines=True)
    for p in (off, disabled):
        clock.t += 1
        p.update(loss=1.0, ips=1.0)
    assert quiet == []


def test_training_writes_progress_lines_to_a_log(tmp_path):
    """Under pytest stdout is not a terminal: with --log-every tiny, every batch gets a line, before
    the epoch's line."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    spec, data = str(spec), _pattern_dataset(tmp_path / "data", n_train=128, n_val=64)
    logs = []
    Trainer(_opts(spec, data, tmp_path / "run", epochs=1, progress=True, log_every=1e-9, log=logs.append,
                  limit_train_batches=4, limit_val_batches=2)).run()
    train = [l for l in logs if l.startswith("epoch 1/1: batch")]
    val = [l for l in logs if l.startswith("validating 1/1: batch")]
    assert [l.split(",")[0] for l in train] == [f"epoch 1/1: batch {b}/4 ({b / 4:.0%})" for b in range(1, 5)]
    assert all(" img/s, " in l and "left in this pass" in l for l in train) and len(val) == 2
    assert logs.index(train[-1]) < next(i for i, l in enumerate(logs) if l.startswith("epoch 1: train loss"))
