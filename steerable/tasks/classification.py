"""Classification of whole point clouds (ModelNet-40), with test-time averaging over rotations."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from steerable.tasks.base import BaseTask, Interval, Mode, OptimizerFactory, SchedulerFactory
from steerable.transforms import random_orthogonal, rotate_batch


class ClassificationTask(BaseTask):
    """Label-smoothed cross-entropy; accuracy logged as ``{stage}/acc``.

    At test time the class probabilities are averaged over ``tta_samples`` copies of the batch, each
    graph rotated by its own random matrix of kind ``tta_rotation`` (:func:`random_orthogonal`). The
    matrices come from a generator seeded with ``tta_seed`` at the start of every test/predict epoch,
    so a checkpoint tested after training and re-tested by ``steerable.evaluate`` sees the same ones.

    Args:
        model: ``forward(batch) -> (B, C)`` logits.
        label_smoothing: cross-entropy label smoothing in ``[0, 1)``.
        tta_samples: number of random transforms averaged at test time (1: the batch as is).
        tta_rotation: ``none``, ``z``, ``so3`` or ``o3``.
        tta_seed: seed of the test-time rotations.
        (others as in :class:`~steerable.tasks.base.BaseTask`)

    Shapes:
        ``batch.y: (B,)`` class indices; ``forward(batch): (B, C)`` logits.
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, label_smoothing: float = 0.0,
                 tta_samples: int = 1, tta_rotation: Literal["none", "z", "so3", "o3"] = "so3",
                 tta_seed: int = 0,
                 scheduler: SchedulerFactory | None = None, scheduler_interval: Interval = "epoch",
                 monitor: str = "val/acc", monitor_mode: Mode = "max") -> None:
        if tta_samples < 1:
            raise ValueError(f"tta_samples must be >= 1, got {tta_samples}")
        super().__init__(model, optimizer, scheduler, scheduler_interval, monitor, monitor_mode)
        self._tta_generator = torch.Generator()

    def on_test_epoch_start(self) -> None:
        self._tta_generator.manual_seed(self.hparams.tta_seed)

    on_predict_epoch_start = on_test_epoch_start

    def _probabilities(self, batch) -> torch.Tensor:
        """Class probabilities ``(B, C)`` averaged over the test-time transforms."""
        if self.hparams.tta_samples == 1:
            return self.model(batch).softmax(dim=-1)
        num_graphs = batch.num_graphs
        probs = 0.0
        for _ in range(self.hparams.tta_samples):
            rotations = random_orthogonal(self.hparams.tta_rotation, num_graphs, self._tta_generator)
            rotations = rotations.to(batch.pos)
            probs = probs + self.model(rotate_batch(batch, rotations)).softmax(dim=-1)
        return probs / self.hparams.tta_samples

    def _step(self, batch, stage: str) -> torch.Tensor:
        target = batch.y.view(-1).long()
        logits = self.model(batch)
        loss = F.cross_entropy(logits, target, label_smoothing=self.hparams.label_smoothing)
        probs = self._probabilities(batch) if stage == "test" else logits.softmax(dim=-1)
        acc = (probs.argmax(dim=-1) == target).float().mean()
        self._log_stage(stage, {"loss": loss, "acc": acc}, batch_size=target.shape[0])
        return loss

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._probabilities(batch)
