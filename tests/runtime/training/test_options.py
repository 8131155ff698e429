"""A run's configuration, resolved once (runtime/training/options.py): the schema's defaults under the
spec's train section, the options over it, and a resumed checkpoint's seed, batch size, dtype, batch
limit and epoch count over both. Oracle: the precedence rules of the module docstring and docs/spec.md."""
from __future__ import annotations

import dataclasses

import pytest

from alexnetc.compiler.schema import with_defaults
from alexnetc.runtime.training.errors import TrainingError
from alexnetc.runtime.training.options import TrainOptions, check_options, remembered, resolve

DEFAULTS = with_defaults({}, "train")


def _opts(**kw) -> TrainOptions:
    return TrainOptions(spec="specs/variants/mini.yaml", **kw)


def test_the_schemas_defaults_fill_what_the_spec_leaves_out():
    cfg = resolve(_opts(), DEFAULTS)
    assert (cfg.batch_size, cfg.epochs, cfg.seed, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.dtype) == \
        (128, 90, 0, 0.01, 0.9, 0.0005, "float32")
    assert dict(cfg.schedule) == {"type": "constant", "factor": 0.1, "max_drops": 3, "patience": 1, "every": 30,
                                  "warmup_epochs": 0, "min_lr": 0}
    assert dict(cfg.optimizer) == {"type": "sgd", "betas": [0.9, 0.999], "eps": 1e-8}   # the paper's SGD
    assert cfg.limit_train_batches is None and cfg.sync_batchnorm is False


def test_the_spec_over_the_defaults_and_the_options_over_the_spec():
    train = with_defaults({"batch_size": 64, "epochs": 8, "lr": 0.02, "schedule": {"type": "step", "every": 2},
                           "limit_val_batches": 5, "sync_batchnorm": True}, "train")
    cfg = resolve(_opts(), train)
    assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.limit_val_batches, cfg.sync_batchnorm) == (64, 8, 0.02, 5, True)
    assert cfg.schedule["every"] == 2 and cfg.schedule["factor"] == 0.1
    cfg = resolve(_opts(batch_size=16, epochs=3, lr=0.5, seed=7, dtype="float64", sync_batchnorm=False), train)
    assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.seed, cfg.dtype, cfg.sync_batchnorm) == \
        (16, 3, 0.5, 7, "float64", False)


def test_a_resumed_checkpoint_keeps_its_run_and_refuses_another():
    saved = {"seed": 3, "batch_size": 16, "dtype": "bfloat16", "limit_train_batches": 2, "epochs": 5}
    cfg = resolve(_opts(), DEFAULTS, saved, "ckpt.json")
    assert (cfg.seed, cfg.batch_size, cfg.dtype, cfg.limit_train_batches, cfg.epochs) == (3, 16, "bfloat16", 2, 5)
    assert resolve(_opts(epochs=9, seed=3), DEFAULTS, saved, "ckpt.json").epochs == 9   # more epochs: allowed
    with pytest.raises(TrainingError, match=r"ckpt.json: this run was trained with batch_size 16; cannot resume it "
                                            r"with batch_size 32"):
        resolve(_opts(batch_size=32), DEFAULTS, saved, "ckpt.json")
    with pytest.raises(TrainingError, match="cannot resume it with --limit-train-batches 4"):
        resolve(_opts(limit_train_batches=4), DEFAULTS, saved, "ckpt.json")
    # A checkpoint from before train.dtype existed was trained in float32.
    assert resolve(_opts(), DEFAULTS, {"seed": 0}, "old.json").dtype == "float32"
    with pytest.raises(TrainingError, match="trained with dtype float32"):
        resolve(_opts(dtype="float64"), DEFAULTS, {"seed": 0}, "old.json")


def test_optimizer_and_schedule_from_the_spec_and_the_command_line():
    train = with_defaults({"optimizer": {"type": "adamw", "betas": [0.9, 0.95]}, "weight_decay": 0.05,
                           "schedule": {"type": "cosine", "warmup_epochs": 2, "min_lr": 1e-5}}, "train")
    cfg = resolve(_opts(), train)
    assert dict(cfg.optimizer) == {"type": "adamw", "betas": [0.9, 0.95], "eps": 1e-8} and cfg.weight_decay == 0.05
    assert (cfg.schedule["type"], cfg.schedule["warmup_epochs"], cfg.schedule["min_lr"]) == ("cosine", 2, 1e-5)
    cfg = resolve(_opts(optimizer="sgd", weight_decay=0.0, schedule="step", warmup_epochs=0.5), train)
    assert (cfg.optimizer["type"], cfg.weight_decay, cfg.schedule["type"], cfg.schedule["warmup_epochs"]) == \
        ("sgd", 0.0, "step", 0.5)
    cfg = resolve(_opts(optimizer="adamw", schedule="cosine"), DEFAULTS)
    assert (cfg.optimizer["type"], cfg.optimizer["betas"], cfg.schedule["type"]) == ("adamw", [0.9, 0.999], "cosine")


def test_a_run_resumes_with_its_optimizer_or_starts_a_fresh_one_when_asked():
    with pytest.raises(TrainingError, match=r"ckpt.json: this run was trained with sgd; cannot resume it with adamw "
                                            r"\(--optimizer\): pass --fresh-optimizer"):
        resolve(_opts(optimizer="adamw"), DEFAULTS, {"seed": 0}, "ckpt.json")   # no record: SGD's
    adamw = with_defaults({"optimizer": {"type": "adamw"}}, "train")
    with pytest.raises(TrainingError, match=r"with adamw \(the spec's train.optimizer\)"):
        resolve(_opts(), adamw, {"seed": 0, "optimizer": {"type": "sgd"}}, "ckpt.json")
    assert resolve(_opts(fresh_optimizer=True), adamw, {"seed": 0}, "c").optimizer["type"] == "adamw"
    assert resolve(_opts(), adamw, {"seed": 0, "optimizer": {"type": "adamw", "steps": 3}}, "c").optimizer["type"] == \
        "adamw"
    # a run started with --optimizer adamw --weight-decay 0.05 --schedule cosine resumes with them (the spec
    # says sgd), and an option given again applies from the resume point
    started = {"seed": 0, "optimizer": {"type": "adamw", "steps": 3},
               "options": {"optimizer": "adamw", "weight_decay": 0.05, "schedule": "cosine", "warmup_epochs": 1}}
    cfg = resolve(_opts(), DEFAULTS, started, "c")
    assert (cfg.optimizer["type"], cfg.weight_decay, cfg.schedule["type"], cfg.schedule["warmup_epochs"]) == \
        ("adamw", 0.05, "cosine", 1)
    assert resolve(_opts(weight_decay=0.01), DEFAULTS, started, "c").weight_decay == 0.01
    assert remembered(_opts(weight_decay=0.01), started) == {"optimizer": "adamw", "weight_decay": 0.01,
                                                             "schedule": "cosine", "warmup_epochs": 1}


def test_options_and_configuration_are_frozen_and_checked():
    cfg = resolve(_opts(), DEFAULTS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.batch_size = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        _opts().epochs = 1
    for kw, message in (({"batch_size": 0}, "batch_size 0: must be at least 1"),
                        ({"lr": -1.0}, "lr -1: must be a positive number"),
                        ({"resume": True, "overwrite": True}, "--resume continues the run in --out"),
                        ({"resume": True, "init_from": "runs/x"}, "--init-from starts a new run"),
                        ({"dtype": "float16"}, "--dtype float16: expected one of"),
                        ({"optimizer": "adam"}, "--optimizer adam: expected one of sgd, adamw"),
                        ({"schedule": "cos"}, "--schedule cos: expected one of constant, plateau, step, cosine"),
                        ({"weight_decay": 2.0}, "--weight-decay 2: must be between 0 and 1"),
                        ({"warmup_epochs": -1.0}, "--warmup-epochs -1: must be a number of epochs")):
        with pytest.raises(TrainingError, match=message):
            check_options(_opts(**kw))
