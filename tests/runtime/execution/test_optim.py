"""The paper's SGD update and the learning-rate schedules, against values worked out by hand; AdamW
against torch.optim.AdamW."""
from __future__ import annotations

import math

import pytest
import torch

from alexnetc.runtime.execution.adamw import AdamW
from alexnetc.runtime.execution.optim import SGD, build_optimizer
from alexnetc.runtime.execution.schedule import LRSchedule


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
    fresh.load_state(st)
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


def test_adamw_is_torchs_adamw_with_the_multipliers():
    """oracle: torch.optim.AdamW (foreach=False: its plain per-tensor formula) with one param group per
    (lr_mult, decay_mult): lr x lr_mult and weight_decay x decay_mult. Five updates at changing learning
    rates (a schedule), gradients redrawn each time; then the state round trip continues identically."""
    g = torch.Generator().manual_seed(0)
    init = {"a": torch.randn(4, 3, generator=g), "b": torch.randn(5, generator=g), "c": torch.randn(2, 2, generator=g)}
    mults = {"a": (1.0, 1.0), "b": (2.0, 0.0), "c": (0.5, 3.0)}
    ours = {k: v.clone() for k, v in init.items()}
    opt = AdamW(ours, mults, weight_decay=0.05, betas=(0.8, 0.99), eps=1e-6)
    ref = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
    base = 1e-2
    torch_opt = torch.optim.AdamW([{"params": [ref[k]], "lr": base * m[0], "weight_decay": 0.05 * m[1]}
                                   for k, m in mults.items()], betas=(0.8, 0.99), eps=1e-6, foreach=False)
    lrs = [1e-2, 5e-3, 2e-2, 1e-3, 1e-2, 7e-3, 3e-3]
    grads = [{k: torch.randn(v.shape, generator=g) for k, v in init.items()} for _ in lrs]
    for lr, gr in zip(lrs[:5], grads):
        opt.step(gr, lr)
        for group, (k, m) in zip(torch_opt.param_groups, mults.items()):
            group["lr"] = lr * m[0]
            ref[k].grad = gr[k].clone()
        torch_opt.step()
    for k in init:
        torch.testing.assert_close(ours[k], ref[k].detach(), rtol=1e-6, atol=1e-7)
        st = torch_opt.state[ref[k]]
        torch.testing.assert_close(opt.exp_avg[k], st["exp_avg"], rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(opt.exp_avg_sq[k], st["exp_avg_sq"], rtol=1e-6, atol=1e-10)
    # a checkpoint's state: moments as tensors, the update count in the record
    saved, record = {k: v.clone() for k, v in opt.state_tensors().items()}, opt.state()
    assert record == {"type": "adamw", "steps": 5} and set(saved) == {f"{p}/{k}" for p in ("exp_avg", "exp_avg_sq")
                                                                     for k in init}
    again_w = {k: v.clone() for k, v in ours.items()}
    again = build_optimizer({"type": "adamw", "betas": [0.8, 0.99], "eps": 1e-6}, again_w, mults, momentum=0.9,
                            weight_decay=0.05)
    again.load_state(saved, record)
    for lr, gr in zip(lrs[5:], grads[5:]):
        opt.step(gr, lr)
        again.step(gr, lr)
    for k in init:
        assert torch.equal(again_w[k], ours[k]), k
    fresh = AdamW({k: v.clone() for k, v in init.items()}, mults, weight_decay=0.05)
    fresh.load_state({}, record)            # --fresh-optimizer: no moments, so update 1 again
    assert fresh.steps == 0


def test_warm_up_then_cosine_decay_by_hand():
    """4 updates per epoch, 3 epochs (T = 12), warm-up 0.5 epoch (W = 2), lr 0.1 down to min_lr 0.01:
    updates 0, 1 at 0.05, 0.1; then 0.01 + 0.09 (1 + cos(pi k / 10)) / 2 for k = 0..9."""
    s = LRSchedule(0.1, {"type": "cosine", "warmup_epochs": 0.5, "min_lr": 0.01}, steps_per_epoch=4, epochs=3)
    want = [0.05, 0.1] + [0.01 + 0.09 * (1 + math.cos(math.pi * k / 10)) / 2 for k in range(10)]
    assert [s.lr_at(i) for i in range(12)] == pytest.approx(want, rel=1e-12)
    assert s.lr_at(11) > 0.01 and not any(s.end_epoch(e, 0.5) for e in (1, 2, 3))   # epochs change nothing
    assert s.lr_at(100) == pytest.approx(0.01)
    again = LRSchedule(0.1, {"type": "cosine", "warmup_epochs": 0.5, "min_lr": 0.01}, steps_per_epoch=4, epochs=3)
    again.load_state(s.state())
    assert [again.lr_at(i) for i in range(12)] == [s.lr_at(i) for i in range(12)]
    plain = LRSchedule(0.2, {"type": "cosine"}, steps_per_epoch=2, epochs=2)     # no warm-up, to 0
    assert [plain.lr_at(i) for i in range(4)] == pytest.approx([0.2, 0.1 * (1 + math.cos(math.pi / 4)), 0.1,
                                                                0.1 * (1 + math.cos(3 * math.pi / 4))])
    with pytest.raises(ValueError, match="cosine schedule needs"):
        LRSchedule(0.1, {"type": "cosine"})


def test_warm_up_before_the_papers_schedules():
    """A warm-up of 1 epoch of 3 updates on the step schedule: 1/3, 2/3, 1 x lr, then as before."""
    s = LRSchedule(0.3, {"type": "step", "every": 1, "factor": 0.5, "warmup_epochs": 1}, steps_per_epoch=3, epochs=3)
    assert [s.lr_at(i) for i in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert s.end_epoch(1, None) and s.lr_at(3) == pytest.approx(0.15)
    assert LRSchedule(0.3, {"type": "constant"}, steps_per_epoch=3, epochs=1).lr_at(0) == 0.3
