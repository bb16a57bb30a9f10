"""Shared Lightning plumbing: train/val/test loaders from one ``_loader(split, shuffle)`` method."""

from __future__ import annotations

from collections.abc import Iterator

import pytorch_lightning as pl
import torch.distributed as dist
from torch.utils.data import DistributedSampler
from torch_geometric.loader import DataLoader


class EvalShardSampler(DistributedSampler):
    """Every ``world``-th sample from ``rank`` on: each sample once over all ranks, no padding.

    Lightning's own distributed sampler pads the ranks to equal length by repeating samples, which
    biases validation/test metrics (and the best-checkpoint choice). Ranks may then run different
    numbers of batches; epoch metrics are reduced once, at the end (see ``BaseTask._log_stage``).
    """

    def __init__(self, dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


def sharded_for_eval(loader: DataLoader) -> DataLoader:
    """``loader`` itself in one process; under a distributed run, the same loader over this rank's shard."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return loader
    sampler = EvalShardSampler(loader.dataset, dist.get_world_size(), dist.get_rank())
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      persistent_workers=loader.persistent_workers, drop_last=False)


class SplitDataModule(pl.LightningDataModule):
    """A LightningDataModule whose subclasses only implement ``_loader(split, shuffle) -> DataLoader``.

    The training split is shuffled; validation and test are not, and under DDP each rank evaluates a
    disjoint shard (:class:`EvalShardSampler`).
    """

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return sharded_for_eval(self._loader("val", shuffle=False))

    def test_dataloader(self) -> DataLoader:
        return sharded_for_eval(self._loader("test", shuffle=False))
