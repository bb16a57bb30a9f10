"""Learning-rate schedules over a wall-clock budget (``task.scheduler``, stepped every optimiser step).

An epoch-based cosine (``CosineAnnealingLR(T_max=max_epochs)``) anneals fully only when the run
reaches ``max_epochs``; under ``trainer.max_time`` a slower machine stops half-way at a high learning
rate and a faster one finishes early. :class:`BudgetCosineLR` anneals over the time budget itself, so
an equal wall-clock comparison gives every model a fully annealed run, on any machine.
"""

from __future__ import annotations

import math
import time

import torch
from torch.optim.lr_scheduler import LRScheduler


def budget_seconds(budget: float | str) -> float:
    """Seconds in ``budget``: a number of seconds, or Lightning's ``max_time`` string ``"DD:HH:MM:SS"``.

    Raises:
        ValueError: a string not of the form ``DD:HH:MM:SS``, or a budget that is not positive.
    """
    if isinstance(budget, str):
        parts = budget.split(":")
        if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"budget {budget!r}: expected seconds or 'DD:HH:MM:SS' (as trainer.max_time)")
        days, hours, minutes, seconds = (int(p) for p in parts)
        budget = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if not float(budget) > 0:
        raise ValueError(f"budget must be positive, got {budget!r} seconds")
    return float(budget)


class BudgetCosineLR(LRScheduler):
    """``lr(t) = eta_min + (lr₀ − eta_min) · ½ (1 + cos(π · min(1, t / budget)))``, after a linear warm-up.

    ``t`` is the wall-clock time since the scheduler was built (the start of fit), validation included,
    as Lightning's ``max_time`` counts it. The elapsed time is part of the scheduler's state, so a run
    resumed from a checkpoint continues the schedule where it stopped (the learning rates of a resumed
    run follow the time of the new process, so they are not bit-identical to an uninterrupted run's).

    Args:
        optimizer: the wrapped optimiser; each group's initial ``lr`` is its ``lr₀``.
        budget: seconds, or ``"DD:HH:MM:SS"`` (pass ``${trainer.max_time}``).
        warmup: the fraction of the budget spent in a linear warm-up from ``lr₀ / 100`` (0: none).
        eta_min: the learning rate at the end of the budget.
        clock: seconds of a monotonic clock (tests pass a fake one).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, budget: float | str | None, warmup: float = 0.0,
                 eta_min: float = 0.0, clock=time.monotonic):
        if budget is None:
            raise ValueError("BudgetCosineLR needs a time budget: set trainer.max_time (DD:HH:MM:SS), "
                             "or use an epoch-based scheduler for runs bounded by max_epochs")
        self.budget_s = budget_seconds(budget)
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup is a fraction of the budget in [0, 1), got {warmup}")
        self.warmup_s, self.eta_min, self.clock = warmup * self.budget_s, float(eta_min), clock
        self.elapsed_before = 0.0  # seconds of earlier processes (restored from a checkpoint)
        self.started = clock()
        super().__init__(optimizer)

    def elapsed(self) -> float:
        """Seconds of the budget spent so far (this process and the ones it resumed)."""
        return self.elapsed_before + self.clock() - self.started

    def get_lr(self) -> list[float]:
        t = self.elapsed()
        progress = min(1.0, t / self.budget_s)
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        warm = 1.0 if t >= self.warmup_s else 0.01 + 0.99 * t / self.warmup_s
        return [warm * (self.eta_min + (base - self.eta_min) * factor) for base in self.base_lrs]

    def state_dict(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "clock", "started")}
        state["elapsed_before"] = self.elapsed()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)
        self.started = self.clock()
