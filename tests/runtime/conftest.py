"""Fixtures shared by the runtime tests: one small trained run, made once per session, for the tests
that read it or tamper with a copy of it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    """``(spec, data, run)``: one epoch (2 batches) of test_train's TINY net on the 4-quadrant dataset.
    Read-only: copy it (`tiny_copy`) before changing anything."""
    from alexnetc.runtime.training.loop import Trainer

    from .training.test_train import TINY, _opts, _pattern_dataset

    d = tmp_path_factory.mktemp("tiny-trained")
    spec = d / "tiny.yaml"
    spec.write_text(TINY)
    data = _pattern_dataset(d / "data", n_train=96, n_val=32)
    Trainer(_opts(str(spec), data, d / "run", epochs=1, limit_train_batches=2, limit_val_batches=1)).run()
    return str(spec), data, d / "run"


@pytest.fixture
def tiny_copy(tiny_trained, tmp_path) -> Path:
    """A copy of the trained run to tamper with."""
    run = tmp_path / "run"
    shutil.copytree(tiny_trained[2], run)
    return run
