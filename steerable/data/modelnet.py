"""ModelNet-40 classification data: per-shape items with rotation protocols, and the DataModule.

Formats and on-disk layouts are handled by :mod:`steerable.data.modelnet_io`; this module turns
the raw clouds into training items:

1. subsample ``num_points`` of the shape's points (training: fresh random subset per access;
   evaluation: a subset fixed by ``(seed, index)``, so every evaluation sees the same points),
2. centre at the centroid and scale so the farthest point has norm 1,
3. apply one random orthogonal matrix of the split's rotation protocol (``none``, ``z``, ``so3``,
   ``o3``; see :func:`steerable.transforms.random_orthogonal`) to ``pos`` and ``normal`` alike
   (training: fresh per access; evaluation: fixed by ``(seed, index)``).

Validation is carved from the training split: a class-stratified ``val_fraction`` of each class,
chosen by ``split_seed`` (deterministic, independent of the run seed). ``val_fraction=0`` instead
validates on the test split (common in the literature, optimistic). Validation uses the test
rotation protocol, so model selection sees the conditions it is selected for.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from steerable.data.modelnet_io import CLASS_NAMES, CloudSet, find_layout, load_split
from steerable.data.split_loaders import SplitDataModule
from steerable.transforms import ROTATION_KINDS, random_orthogonal

log = logging.getLogger(__name__)

Rotation = Literal["none", "z", "so3", "o3"]
_TRANSFORM_STREAM = 0x5EED  # apart from the seeds of the evaluation subsets and rotations


def normalize_unit_sphere(pos: torch.Tensor) -> torch.Tensor:
    """Centre ``pos (P, 3)`` at its centroid and scale the largest norm to 1."""
    pos = pos - pos.mean(dim=0, keepdim=True)
    return pos / pos.norm(dim=1).max().clamp_min(1e-12)


def _rotate(points: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """``points (P, 3) @ rot.T`` as broadcasts: a tiny matmul thrashes threads in the main process."""
    return points[:, :1] * rot[:, 0] + points[:, 1:2] * rot[:, 1] + points[:, 2:] * rot[:, 2]


class ModelNet40(Dataset):
    """Shapes of one split as PyG ``Data`` items.

    Args:
        clouds: the split in memory (:func:`steerable.data.modelnet_io.load_split`).
        indices: rows of ``clouds`` in this dataset (default: all).
        num_points: points per item, at most the points stored per shape (default 1024).
        use_normals: include ``normal`` (requires ``clouds.normals``) (default False).
        rotation: ``none``, ``z``, ``so3`` or ``o3`` (default ``none``).
        train: random subsampling/rotation per access if True, else fixed per item (default False).
        seed: seed of the fixed evaluation subsets/rotations (default 0).
        transform: applied to every item last, e.g. the model's point hierarchy
            (:class:`steerable.models.point_hierarchy.PointHierarchy`) (default None). For evaluation
            items it runs with the global torch RNG seeded by ``(seed, index)`` (restored afterwards), so
            its random choices (``sampling=random``) are fixed per item as well.

    Shapes (one item):
        ``pos: (num_points, 3)`` unit-sphere normalised, ``normal: (num_points, 3)`` unit vectors
        (rotated with ``pos``), ``y: (1,)`` long label (batched: ``(B,)``), ``sample_id: (1,)`` the
        shape's row in the split (seeds test-time rotations, :class:`~steerable.tasks.ClassificationTask`).
    """

    def __init__(self, clouds: CloudSet, indices: np.ndarray | torch.Tensor | None = None,
                 num_points: int = 1024, use_normals: bool = False, rotation: Rotation = "none",
                 train: bool = False, seed: int = 0, transform: Callable[[Data], Data] | None = None):
        if rotation not in ROTATION_KINDS:
            raise ValueError(f"unknown rotation {rotation!r}; valid: {', '.join(ROTATION_KINDS)}")
        stored = clouds.points.shape[1]
        if not 1 <= num_points <= stored:
            raise ValueError(f"num_points={num_points} but the data has {stored} points per shape")
        if use_normals and clouds.normals is None:
            raise ValueError("use_normals=True but this data has no normals")
        self.clouds, self.num_points, self.use_normals = clouds, num_points, use_normals
        self.rotation, self.train, self.seed = rotation, train, seed
        self.transform = transform
        rows = torch.arange(len(clouds)) if indices is None else torch.as_tensor(indices).long()
        self.indices = rows

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Data:
        row = int(self.indices[i])
        gen = None if self.train else torch.Generator().manual_seed(self.seed * 1_000_003 + row)
        pos = self.clouds.points[row]
        normal = self.clouds.normals[row] if self.use_normals else None
        if self.num_points < pos.shape[0]:
            keep = torch.randperm(pos.shape[0], generator=gen)[: self.num_points]
            pos = pos[keep]
            normal = normal[keep] if normal is not None else None
        pos = normalize_unit_sphere(pos.float())
        if self.rotation != "none":
            rot = random_orthogonal(self.rotation, 1, generator=gen)[0]
            pos = _rotate(pos, rot)
            normal = _rotate(normal.float(), rot) if normal is not None else None
        data = Data(pos=pos, y=self.clouds.labels[row].view(1), sample_id=torch.tensor([row]))
        if normal is not None:
            data.normal = normal.float()
        if self.transform is None:
            return data
        if self.train:
            return self.transform(data)
        # evaluation: the transform's random choices (e.g. random sampling) are fixed per item too
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + row + _TRANSFORM_STREAM)
            return self.transform(data)


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (train, val) with ``round(fraction * n_c)`` of each class in val.

    Where that holds no row at all although ``fraction > 0`` (every class too small for its share to
    round to one shape, e.g. a few shapes per class), ``round(fraction * n)`` rows (at least one, at
    most ``n - 1``) drawn across the classes are held out instead: a validation split is never empty.
    Deterministic in ``seed``; both index arrays are sorted.

    Raises:
        ValueError: ``fraction > 0`` with fewer than two rows, so none can be held out.
    """
    rng = np.random.default_rng(seed)
    labels = labels.numpy()
    if fraction > 0 and len(labels) < 2:
        raise ValueError(f"val_fraction={fraction} holds out training shapes for validation, but there "
                         f"{'is' if len(labels) == 1 else 'are'} {len(labels)}; set val_fraction=0 to "
                         "validate on the test split")
    val = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        val.append(rng.permutation(rows)[: int(round(fraction * len(rows)))])
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    if fraction > 0 and len(val) == 0:
        count = min(len(labels) - 1, max(1, int(round(fraction * len(labels)))))
        val = np.sort(rng.permutation(len(labels))[:count])
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


class ModelNet40DataModule(SplitDataModule):
    """ModelNet-40 loaders for any of the supported on-disk formats.

    Args:
        root: directory holding the data (``paths.modelnet40``); searched to depth 2.
        format: ``auto`` (first of hdf5, normal_resampled, off found), ``hdf5``, ``off`` or
            ``normal_resampled`` (default ``auto``).
        num_points: points per shape fed to the model (default 1024).
        use_normals: add ``normal (P, 3)`` to each item (default False).
        train_rotation / test_rotation: ``none``, ``z``, ``so3`` or ``o3``; validation uses
            ``test_rotation`` (default ``none``).
        batch_size: shapes per batch (default 32); eval_batch_size: for val/test (default: same).
        num_workers: DataLoader workers (default 0).
        val_fraction: class-stratified fraction of train held out for validation (default 0.1);
            0 validates on the test split. Sets too small for any class to give a shape are split
            across classes instead (see :func:`stratified_split`).
        split_seed: seed of the validation split and of ``limit`` subsets (default 0).
        limit: keep at most this many shapes per split (seeded random subset), for tiny runs.
        points_per_shape: points sampled per mesh (OFF) / read per text file (default 2048).
        off_sampling: ``uniform`` (area-weighted) or ``fps`` (area-weighted 4x, then FPS).
        sample_seed: seed of OFF surface sampling and of the fixed evaluation subsets/rotations.
        cache_dir: where processed OFF/text clouds are cached (default: no cache).
        processes: worker processes for OFF surface sampling when a cache is built (default 1).
        pin_memory: passed to the DataLoaders (default False).

    A model's per-item transform (its point hierarchy) is handed over with :meth:`set_item_transform`
    (done by ``steerable.train``/``steerable.evaluate``), so the loader workers build it.

    Attributes:
        num_classes (40), class_names: available before ``setup()``; ``class_names`` is replaced
        by the data's own list (e.g. ``shape_names.txt``) in ``setup()``.
        format, directory: the detected layout (after ``setup()``).
    """

    def __init__(self, root: str, format: Literal["auto", "hdf5", "off", "normal_resampled"] = "auto",
                 num_points: int = 1024, use_normals: bool = False,
                 train_rotation: Rotation = "none", test_rotation: Rotation = "none",
                 batch_size: int = 32, eval_batch_size: int | None = None, num_workers: int = 0,
                 val_fraction: float = 0.1, split_seed: int = 0, limit: int | None = None,
                 points_per_shape: int = 2048, off_sampling: Literal["uniform", "fps"] = "uniform",
                 sample_seed: int = 0, cache_dir: str | None = None, processes: int = 1,
                 pin_memory: bool = False):
        super().__init__()
        for name, kind in (("train_rotation", train_rotation), ("test_rotation", test_rotation)):
            if kind not in ROTATION_KINDS:
                raise ValueError(f"unknown {name} {kind!r}; valid: {', '.join(ROTATION_KINDS)}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
        self.root, self.format_arg, self.num_points, self.use_normals = root, format, num_points, use_normals
        self.train_rotation, self.test_rotation = train_rotation, test_rotation
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.val_fraction, self.split_seed, self.limit = val_fraction, split_seed, limit
        self.points_per_shape, self.off_sampling = points_per_shape, off_sampling
        self.sample_seed = sample_seed
        self.cache_dir, self.processes = cache_dir, processes
        self.class_names: tuple[str, ...] = CLASS_NAMES
        self.num_classes = len(CLASS_NAMES)
        self.datasets: dict[str, ModelNet40] = {}
        self.format: str | None = None
        self.directory: Path | None = None
        self.item_transform: Callable[[Data], Data] | None = None

    def set_item_transform(self, transform: Callable[[Data], Data] | None) -> None:
        """Apply ``transform`` to every item of every split (last, after subsampling and rotation)."""
        self.item_transform = transform
        for dataset in self.datasets.values():
            dataset.transform = transform

    def _load(self, split: str) -> CloudSet:
        return load_split(self.root, split, self.format_arg, self.use_normals, self.points_per_shape,
                          self.off_sampling, self.sample_seed, self.cache_dir, self.processes)

    def prepare_data(self) -> None:
        """Build the OFF/text caches once (no-op for HDF5 or without ``cache_dir``)."""
        if self.cache_dir is not None and find_layout(self.root, self.format_arg)[0] != "hdf5":
            for split in ("train", "test"):
                self._load(split)

    def _limited(self, rows: np.ndarray, salt: int) -> np.ndarray:
        if self.limit is None or len(rows) <= self.limit:
            return rows
        rng = np.random.default_rng([self.split_seed, salt])
        return np.sort(rng.permutation(rows)[: self.limit])

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.format, self.directory = find_layout(self.root, self.format_arg)
        train, test = self._load("train"), self._load("test")
        self.class_names = train.class_names
        self.num_classes = len(self.class_names)
        if len(train) == 0:
            raise ValueError(f"no training shapes found under {self.root}")
        if self.val_fraction > 0:
            train_rows, val_rows = stratified_split(train.labels, self.val_fraction, self.split_seed)
            val_set = train
        else:
            train_rows, val_rows, val_set = np.arange(len(train)), np.arange(len(test)), test
        common = dict(num_points=self.num_points, use_normals=self.use_normals, seed=self.sample_seed,
                      transform=self.item_transform)
        self.datasets = {
            "train": ModelNet40(train, self._limited(train_rows, 0), rotation=self.train_rotation,
                                train=True, **common),
            "val": ModelNet40(val_set, self._limited(val_rows, 1), rotation=self.test_rotation, **common),
            "test": ModelNet40(test, self._limited(np.arange(len(test)), 2),
                               rotation=self.test_rotation, **common),
        }
        log.info("ModelNet40 %s", self.summary())

    def summary(self) -> str:
        """One line: split sizes, points, normals and rotation protocols."""
        sizes = {k: len(v) for k, v in self.datasets.items()}
        return (f"format={self.format} dir={self.directory} splits={sizes} num_points={self.num_points} "
                f"normals={self.use_normals} rotation={self.train_rotation}/{self.test_rotation} "
                f"item_transform={self.item_transform!r}")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        batch_size = self.batch_size if split == "train" else self.eval_batch_size
        return DataLoader(self.datasets[split], batch_size=batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0, drop_last=False)
