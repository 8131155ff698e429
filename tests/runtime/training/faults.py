"""Faults injected into a training run by the tests of this folder: a loss that turns non-finite."""
from __future__ import annotations

from alexnetc.runtime.training.loop import Trainer


def nan_loss_at_step(monkeypatch, step: int):
    """Make `Trainer.train_step` report a NaN loss at 0-based `step` (the batch otherwise trains as
    usual); returns the real train_step, to put back for a resume."""
    real_step = Trainer.train_step

    def nan_at(self, images, labels, at):
        loss, probs = real_step(self, images, labels, at)
        return (float("nan"), probs) if at == step else (loss, probs)

    monkeypatch.setattr(Trainer, "train_step", nan_at)
    return real_step
