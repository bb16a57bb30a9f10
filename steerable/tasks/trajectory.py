"""Trajectory prediction (N-body): predict every particle's future position."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from steerable.tasks.base import BaseTask, Interval, Mode, OptimizerFactory, SchedulerFactory


class TrajectoryTask(BaseTask):
    """Mean squared error between predicted and true future positions, logged as ``{stage}/mse``.

    Args:
        model: ``forward(batch) -> (N, 3)`` predicted positions.
        (others as in :class:`~steerable.tasks.base.BaseTask`)

    Shapes:
        ``batch.y: (N, 3)``; ``forward(batch): (N, 3)``.
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory,
                 scheduler: SchedulerFactory | None = None, scheduler_interval: Interval = "epoch",
                 monitor: str = "val/mse",
                 monitor_mode: Mode = "min") -> None:
        super().__init__(model, optimizer, scheduler, scheduler_interval, monitor, monitor_mode)

    def _step(self, batch, stage: str) -> torch.Tensor:
        loss = F.mse_loss(self.model(batch), batch.y)
        # weighted by particles, as the loss averages over them: epoch values are then the per-particle
        # MSE whatever the batch size, also when systems differ in size
        self._log_stage(stage, {"loss": loss, "mse": loss}, batch_size=batch.num_nodes)
        return loss
