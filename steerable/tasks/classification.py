"""Classification of whole point clouds (ModelNet-40), with test-time averaging over rotations."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from steerable.seeding import mixed_seed
from steerable.tasks.base import BaseTask, Interval, Mode, OptimizerFactory, SchedulerFactory
from steerable.transforms import random_orthogonal, rotate_batch


class ClassificationTask(BaseTask):
    """Label-smoothed cross-entropy; accuracy logged as ``{stage}/acc``.

    At test time the class probabilities are averaged over ``tta_samples`` copies of the batch, each
    graph rotated by its own random matrix of kind ``tta_rotation`` (:func:`random_orthogonal`). A
    graph's matrices depend only on ``tta_seed`` and the graph's ``sample_id`` (its row in the dataset,
    set by the ModelNet-40 and synthetic datasets), not on the batch size, the order of the batches or
    the number of DDP ranks: a checkpoint tested after training (on any number of devices) and
    re-tested by ``steerable.evaluate`` with another batch size sees the same rotations. Batches
    without ``sample_id`` number their graphs in the order of the test/predict epoch instead (still
    independent of the batch size, but not of how DDP shards the data).

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
        self._graphs_seen = 0

    def on_test_epoch_start(self) -> None:
        self._graphs_seen = 0

    on_predict_epoch_start = on_test_epoch_start

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """At test/predict time also draws the batch's test-time rotations here, on the host (CPU
        generators seeded per graph), as ``batch.tta_rotations``: they travel with the batch instead of
        being drawn from device-resident ids and copied over inside the step."""
        batch = super().on_before_batch_transfer(batch, dataloader_idx)
        trainer = self._trainer
        if self.hparams.tta_samples > 1 and trainer is not None and (trainer.testing or trainer.predicting):
            batch.tta_rotations = self._tta_rotations(batch)
        return batch

    def _tta_rotations(self, batch) -> torch.Tensor:
        """``(tta_samples, B, 3, 3)``: the test-time matrices of every graph, seeded by its sample id."""
        num_graphs = batch.num_graphs
        ids = getattr(batch, "sample_id", None)
        ids = (range(self._graphs_seen, self._graphs_seen + num_graphs) if ids is None
               else ids.view(-1).tolist())
        self._graphs_seen += num_graphs
        per_graph = [random_orthogonal(self.hparams.tta_rotation, self.hparams.tta_samples,
                                       torch.Generator().manual_seed(
                                           mixed_seed(self.hparams.tta_seed, int(sample_id), "tta")))
                     for sample_id in ids]
        return torch.stack(per_graph, dim=1)

    def _probabilities(self, batch) -> torch.Tensor:
        """Class probabilities ``(B, C)`` averaged over the test-time transforms."""
        if self.hparams.tta_samples == 1:
            return self.model(batch).softmax(dim=-1)
        rotations = getattr(batch, "tta_rotations", None)
        if rotations is None:  # called outside a Trainer's test/predict loop
            rotations = self._tta_rotations(batch)
        probs = 0.0
        for rotation in rotations.to(batch.pos):
            probs = probs + self.model(rotate_batch(batch, rotation)).softmax(dim=-1)
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

