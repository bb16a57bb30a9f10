"""Shared Lightning plumbing: train/val/test loaders from one ``_loader(split, shuffle)`` method."""

from __future__ import annotations

import pytorch_lightning as pl
from torch_geometric.loader import DataLoader


class SplitDataModule(pl.LightningDataModule):
    """A LightningDataModule whose subclasses only implement ``_loader(split, shuffle) -> DataLoader``.

    The training split is shuffled; validation and test are not.
    """

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
