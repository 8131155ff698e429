"""The paper's SGD update and the learning-rate schedules, against values worked out by hand."""
from __future__ import annotations

import pytest
import torch

from alexnetc.runtime.execution.optim import SGD, LRSchedule


def test_sgd_is_the_papers_update_with_multipliers():
    """v <- 0.9 v - 0.0005 * decay_mult * lr * lr_mult * w - lr * lr_mult * g; w <- w + v, twice."""
    w = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([0.5])}
    opt = SGD(w, {"a": (1.0, 1.0), "b": (2.0, 0.0)}, momentum=0.9, weight_decay=0.0005)
    g = {"a": torch.tensor([0.1, 0.2]), "b": torch.tensor([-1.0])}
    lr = 0.01
    va, vb = [0.0, 0.0], [0.0]
    wa, wb = [1.0, -2.0], [0.5]
    for _ in range(2):
        opt.step(g, lr)
        for i in range(2):
            va[i] = 0.9 * va[i] - 0.0005 * lr * wa[i] - lr * float(g["a"][i])
            wa[i] += va[i]
        vb[0] = 0.9 * vb[0] - 0.0 - 2 * lr * float(g["b"][0])   # decay_mult 0: no weight decay on b
        wb[0] += vb[0]
    torch.testing.assert_close(w["a"], torch.tensor(wa), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(w["b"], torch.tensor(wb), rtol=1e-6, atol=1e-7)
    st = opt.state_tensors()
    torch.testing.assert_close(st["momentum/a"], torch.tensor(va), rtol=1e-6, atol=1e-8)
    fresh = SGD({"a": torch.zeros(2), "b": torch.zeros(1)}, {})
    fresh.load_state_tensors(st)
    torch.testing.assert_close(fresh.velocity["b"], torch.tensor(vb))


def test_plateau_divides_by_ten_when_validation_stops_improving_at_most_n_times():
    s = LRSchedule(0.01, {"type": "plateau", "factor": 0.1, "patience": 1, "max_drops": 2})
    errs = [0.5, 0.4, 0.4, 0.39, 0.45, 0.3, 0.31, 0.32, 0.33]
    lrs = []
    for epoch, e in enumerate(errs, 1):
        s.end_epoch(epoch, e)
        lrs.append(s.lr)
    assert lrs == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001, 0.0001, 0.0001, 0.0001])
    assert s.drops == 2
    again = LRSchedule(0.01, {"type": "plateau"})
    again.load_state(s.state())
    assert (again.lr, again.best, again.drops) == (s.lr, s.best, s.drops)


def test_step_schedule():
    s = LRSchedule(0.1, {"type": "step", "every": 2, "factor": 0.5})
    lrs = []
    for epoch in range(1, 7):
        s.end_epoch(epoch, None)
        lrs.append(s.lr)
    assert lrs == pytest.approx([0.1, 0.05, 0.05, 0.025, 0.025, 0.0125])
