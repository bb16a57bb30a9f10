"""``BudgetCosineLR``: cosine decay over a wall-clock budget (fake clock), its state across a resume, and
a real Lightning run that anneals to ``eta_min`` within ``trainer.max_time``."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.runs import FAST

from steerable.schedules import BudgetCosineLR, budget_seconds
from steerable.train import train


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _scheduler(clock: FakeClock, lr: float = 1.0, **kwargs) -> BudgetCosineLR:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return BudgetCosineLR(optimizer, clock=clock, **kwargs)


def _lr_at(scheduler: BudgetCosineLR, clock: FakeClock, seconds: float) -> float:
    clock.now = scheduler.started + seconds - scheduler.elapsed_before
    scheduler.optimizer.step()
    scheduler.step()
    return scheduler.get_last_lr()[0]


def test_cosine_over_the_budget_then_eta_min():
    clock = FakeClock()
    scheduler = _scheduler(clock, lr=2.0, budget="00:00:01:40", eta_min=0.1)  # 100 s
    assert scheduler.get_last_lr() == [2.0]
    for t in (25.0, 50.0, 90.0):
        expected = 0.1 + 1.9 * 0.5 * (1 + math.cos(math.pi * t / 100))
        assert _lr_at(scheduler, clock, t) == pytest.approx(expected)
    assert _lr_at(scheduler, clock, 100.0) == pytest.approx(0.1)
    assert _lr_at(scheduler, clock, 500.0) == pytest.approx(0.1)


def test_linear_warmup_then_cosine():
    clock = FakeClock()
    scheduler = _scheduler(clock, budget=100, warmup=0.1)
    assert scheduler.get_last_lr() == [pytest.approx(0.01)]
    cosine_at_5s = 0.5 * (1 + math.cos(math.pi * 0.05))
    assert _lr_at(scheduler, clock, 5.0) == pytest.approx((0.01 + 0.99 * 0.5) * cosine_at_5s)
    assert _lr_at(scheduler, clock, 10.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))


def test_resumed_scheduler_continues_from_the_saved_elapsed_time():
    clock = FakeClock()
    scheduler = _scheduler(clock, budget=100)
    _lr_at(scheduler, clock, 40.0)
    state = scheduler.state_dict()
    assert state["elapsed_before"] == pytest.approx(40.0) and "clock" not in state
    clock.now += 3600.0  # the new process starts an hour later: that hour is not budget
    resumed = _scheduler(clock, budget=100)
    resumed.load_state_dict(state)
    assert resumed.elapsed() == pytest.approx(40.0)
    clock.now += 10.0
    resumed.optimizer.step()
    resumed.step()
    assert resumed.get_last_lr()[0] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize("budget, seconds", [(90, 90.0), ("00:01:00:05", 3605.0), ("01:00:00:00", 86400.0)])
def test_budget_seconds(budget, seconds):
    assert budget_seconds(budget) == seconds


@pytest.mark.parametrize("budget, message", [("1:00:00", "DD:HH:MM:SS"), ("00:00:00:00", "positive"),
                                             (-5, "positive"), ("aa:00:00:01", "DD:HH:MM:SS")])
def test_bad_budgets_are_one_clear_error(budget, message):
    with pytest.raises(ValueError, match=message):
        budget_seconds(budget)
    with pytest.raises(ValueError, match="warmup"):
        _scheduler(FakeClock(), budget=10, warmup=1.0)
    with pytest.raises(ValueError, match="set trainer.max_time"):
        _scheduler(FakeClock(), budget=None)


@pytest.mark.slow
def test_lightning_run_anneals_within_max_time(compose_cfg, tmp_path):
    """A real fit under ``trainer.max_time`` with ``max_epochs`` out of reach: the schedule, stepped
    every optimiser step, ends the run near ``eta_min`` (the budget, not the epochs, set the decay)."""
    cfg = compose_cfg([
        "experiment=smoke", *FAST, "logger=csv", "dataset.num_samples=40", "trainer.max_epochs=100000",
        "trainer.max_time=00:00:00:04", "task.optimizer.lr=0.01", "task.scheduler_interval=step",
        "+task.scheduler={_target_: steerable.schedules.BudgetCosineLR, _partial_: true, "
        "budget: '${trainer.max_time}', eta_min: 0.0}",
    ])
    train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    (state,) = ckpt["lr_schedulers"]
    assert state["budget_s"] == 4.0 and 3.5 <= state["elapsed_before"] <= 8.0
    lr = ckpt["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr < 0.01 * 0.05  # annealed (a constant or epoch-based schedule would still sit near 0.01)
