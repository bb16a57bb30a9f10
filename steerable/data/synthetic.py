"""Synthetic point clouds with rotation-invariant targets: tiny, instant data for tests and debugging.

Each sample is a cloud of 3-D points drawn from an anisotropic Gaussian with random axis lengths,
randomly rotated (so every target is rotation-invariant, or equivariant for ``trajectory``):

- ``regression``: targets ``gyration`` (radius of gyration, Ang) and ``extent`` (largest distance
  from the centroid, Ang); ``y: (1, 2)``.
- ``classification``: the shape class, ``0`` ball / ``1`` rod / ``2`` disc; ``y: (1,)``.
- ``trajectory``: points move with random velocities ``vel``; ``y: (N, 3)`` positions after one step.

Graphs connect points closer than ``radius`` (built with ``torch.cdist``, no extra dependencies).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from steerable.data.split_loaders import SplitDataModule
from steerable.transforms import random_orthogonal

Kind = Literal["regression", "classification", "trajectory"]
SHAPE_AXES = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.4, 0.4], [1.5, 1.5, 0.3]])  # ball, rod, disc
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
TRAJECTORY_DT = 0.1


def radius_edges(pos: torch.Tensor, radius: float) -> torch.Tensor:
    """Directed edges ``(2, E)`` (source, target) between distinct points closer than ``radius``.

    Shapes:
        ``pos: (N, 3)`` → ``edge_index: (2, E)``.
    """
    close = torch.cdist(pos, pos) < radius
    close.fill_diagonal_(False)
    target, source = close.nonzero(as_tuple=True)
    return torch.stack([source, target])


def make_sample(kind: Kind, num_points: int, radius: float, generator: torch.Generator) -> Data:
    """One random cloud (see module docstring for the targets of each ``kind``)."""
    shape = int(torch.randint(len(SHAPE_AXES), (1,), generator=generator))
    scale = 0.5 + torch.rand(1, generator=generator)
    if kind == "classification":
        axes = SHAPE_AXES[shape] * scale
    else:
        axes = 0.3 + 1.2 * torch.rand(3, generator=generator)
    rotation = random_orthogonal("so3", 1, generator=generator)[0]
    pos = (torch.randn(num_points, 3, generator=generator) * axes) @ rotation.T
    centred = pos - pos.mean(dim=0)
    data = Data(pos=pos, x=torch.ones(num_points, 1), edge_index=radius_edges(pos, radius))
    if kind == "regression":
        dist = centred.norm(dim=1)
        data.y = torch.stack([dist.pow(2).mean().sqrt(), dist.max()]).view(1, 2)
    elif kind == "classification":
        data.y = torch.tensor([shape])
    else:
        data.vel = torch.randn(num_points, 3, generator=generator)
        data.y = pos + TRAJECTORY_DT * data.vel
    return data


class SyntheticPointCloudDataModule(SplitDataModule):
    """Deterministic random clouds split 80/10/10.

    Args:
        kind: ``regression``, ``classification`` or ``trajectory``.
        num_samples: total number of clouds before the split.
        min_points: fewest points per cloud.
        max_points: most points per cloud.
        radius: graph cutoff.
        split_seed: seed of the generator (the same seed gives the same data and split).
        limit: at most this many samples per split (``None``: all).
        batch_size: graphs per batch.
        num_workers: DataLoader workers.

    Attributes (regression): ``target_mean``/``target_std`` ``(T,)`` over the training split,
    ``target_names``, ``target_units``. (classification): ``num_classes``.
    """

    target_names = ["gyration", "extent"]
    target_units = ["Ang", "Ang"]
    num_classes = len(SHAPE_AXES)

    def __init__(self, kind: Kind = "regression", num_samples: int = 256, min_points: int = 8,
                 max_points: int = 16, radius: float = 1.5, split_seed: int = 0, limit: int | None = None,
                 batch_size: int = 32, num_workers: int = 0) -> None:
        super().__init__()
        if not 2 <= min_points <= max_points:
            raise ValueError(f"need 2 <= min_points <= max_points, got {min_points}, {max_points}")
        self.kind, self.radius, self.limit = kind, radius, limit
        self.num_samples, self.min_points, self.max_points = num_samples, min_points, max_points
        self.split_seed, self.batch_size, self.num_workers = split_seed, batch_size, num_workers
        self.splits: dict[str, list[Data]] = {}
        self.target_mean = self.target_std = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        generator = torch.Generator().manual_seed(self.split_seed)
        sizes = torch.randint(self.min_points, self.max_points + 1, (self.num_samples,), generator=generator)
        samples = [make_sample(self.kind, int(n), self.radius, generator) for n in sizes]
        for row, sample in enumerate(samples):
            sample.sample_id = torch.tensor([row])  # seeds test-time rotations (ClassificationTask)
        n_train = int(SPLIT_FRACTIONS[0] * self.num_samples)
        n_val = int(SPLIT_FRACTIONS[1] * self.num_samples)
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, None)}
        for split, (start, stop) in bounds.items():
            self.splits[split] = samples[start:stop][: self.limit]
        if self.kind == "regression":
            y = torch.cat([d.y for d in self.splits["train"]])
            self.target_mean, self.target_std = y.mean(dim=0), y.std(dim=0).clamp_min(1e-6)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

