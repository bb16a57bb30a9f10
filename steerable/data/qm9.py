"""QM9 (from the offline ``qm9pack`` wheel) as a Lightning DataModule of PyG molecular graphs.

Each item is a ``torch_geometric.data.Data`` with
``pos (N, 3)`` float32 Å, ``z (N,)`` atomic numbers, ``x (N, 5)`` one-hot H/C/N/O/F,
``edge_index (2, E)`` (both directions), ``edge_attr (E, num_bond_types)`` one-hot bond class,
``y (1, T)`` float32 targets in reporting units (see ``target_names`` / ``target_units``),
``idx`` the original QM9 index and ``name`` (``dsgdb9nsd_XXXXXX``).

``polarizability_tensor`` is rotated from qm9pack's principal-axes frame into the frame of ``pos``
(see :mod:`steerable.data.qm9_polarizability`), so it co-rotates with the molecule.

Split (the paper's protocol): ``numpy.random.default_rng(split_seed).permutation(130831)`` over
the molecules in ascending QM9 index; the first 100,000 are train, the next 17,748 val, the last
13,083 test. ``subset={"train": n, ...}`` keeps the first n of each split (tiny runs and tests).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from steerable.chem import NUM_ATOM_TYPES, check_graph, num_bond_types
from steerable.data import qm9_cache
from steerable.data.mol_graph import molecule_data
from steerable.data.molecules import molecules_to_batch, read_molecules
from steerable.data.qm9_polarizability import to_coordinate_frame
from steerable.data.qm9_raw import NUM_MOLECULES, read_qm9pack
from steerable.data.qm9_targets import (
    TENSOR_TARGET,
    column_names_units,
    compute_targets,
    element_counts,
    polarizability_matrix,
    validate_targets,
)
from steerable.data.split_loaders import SplitDataModule

__all__ = ["QM9DataModule", "QM9Graphs", "split_indices", "molecules_to_batch", "read_molecules"]

log = logging.getLogger(__name__)

SPLIT_SIZES: dict[str, int] = {"train": 100_000, "val": 17_748, "test": 13_083}


def split_indices(
    n: int = NUM_MOLECULES, seed: int = 0, sizes: Mapping[str, int] = SPLIT_SIZES
) -> dict[str, np.ndarray]:
    """Row indices of each split: a ``default_rng(seed)`` permutation of ``range(n)`` cut in order.

    Raises ``ValueError`` if the sizes do not add up to ``n``.
    """
    if sum(sizes.values()) != n:
        raise ValueError(f"split sizes {dict(sizes)} add up to {sum(sizes.values())}, not {n}")
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0, *sizes.values()])
    return {name: perm[a:b] for name, a, b in zip(sizes, bounds[:-1], bounds[1:], strict=True)}


class QM9Graphs(Dataset):
    """Molecules of one split, built into ``Data`` on access from flat cached tensors.

    Args:
        cache: processed molecules (see :func:`steerable.data.qm9_cache.process`).
        y: (M, T) float32 targets aligned with ``cache``.
        graph: ``"bonds"`` | ``"radius"`` | ``"full"``.
        radius: cutoff in Å for ``graph="radius"``.
    """

    def __init__(self, cache: dict, y: torch.Tensor, graph: str = "bonds", radius: float = 5.0):
        check_graph(graph)
        self.cache, self.y, self.graph, self.radius = cache, y, graph, radius

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Data:
        c = self.cache
        a0, a1 = int(c["atom_ptr"][i]), int(c["atom_ptr"][i + 1])
        b0, b1 = int(c["bond_ptr"][i]), int(c["bond_ptr"][i + 1])
        return molecule_data(
            c["z"][a0:a1],
            c["pos"][a0:a1],
            c["bonds"][b0:b1],
            self.graph,
            self.radius,
            y=self.y[i : i + 1],
            idx=int(c["idx"][i]),
            name=c["name"][i],
        )


class QM9DataModule(SplitDataModule):
    """QM9 train/val/test loaders with standardisation statistics.

    Args:
        data_dir: root for caches; files go to ``{data_dir}/qm9/``.
        targets: target names, e.g. ``["homo"]`` (see ``qm9_targets.TARGET_NAMES``).
        graph: ``"bonds"`` (default, as the paper), ``"radius"`` or ``"full"``.
        radius: cutoff in Å for ``graph="radius"`` (default 5.0).
        atomization: report U0/U/H/G minus free-atom energies (default False).
        batch_size: molecules per batch (default 32).
        num_workers: DataLoader workers (default 0).
        split_seed: seed of the split permutation (default 0).
        limit: optional n: keep the first n molecules of every split (quick runs).
        subset: optional ``{"train": n, "val": n, "test": n}``: keep the first n of each split
            (applied after ``limit``).
        processes: worker processes for bond perception when a cache is built (default 2).
        progress: show a progress bar while building the cache (default True).
        pin_memory: passed to the DataLoaders (default False).

    Attributes (after ``setup()``):
        target_names, target_units: lists of length T (per output column).
        target_mean, target_std: (T,) float64, train-split statistics. For ``polarizability_tensor``
            the mean is 0 and the std one scalar (RMS of all train entries) repeated 9×, so that
            standardising commutes with rotations.
        num_atom_types (5), num_bond_types (4 for bonds, 5 otherwise), num_targets (T): available
        before ``setup()``.
    """

    def __init__(
        self,
        data_dir: str = "data",
        targets: list[str] | str = ("homo",),
        graph: str = "bonds",
        radius: float = 5.0,
        atomization: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
        split_seed: int = 0,
        limit: int | None = None,
        subset: Mapping[str, int] | None = None,
        processes: int = 2,
        progress: bool = True,
        pin_memory: bool = False,
    ):
        super().__init__()
        check_graph(graph)
        if not radius > 0:  # also NaN; a radius graph would have no edges
            raise ValueError(f"radius must be > 0 Å, got {radius}")
        self.targets = validate_targets(list(targets) if not isinstance(targets, str) else targets)
        if subset is not None and set(subset) - set(SPLIT_SIZES):
            raise ValueError(f"subset keys {sorted(subset)} must be among {list(SPLIT_SIZES)}")
        sizes = {"limit": limit, **{f"subset.{k}": v for k, v in (subset or {}).items()}}
        if bad := {k: v for k, v in sizes.items() if v is not None and v < 1}:
            raise ValueError(f"molecules per split must be >= 1, got {bad}")
        self.data_dir, self.graph, self.radius, self.atomization = data_dir, graph, radius, atomization
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.split_seed, self.processes, self.progress = split_seed, processes, progress
        self.limit = limit
        self.subset = dict(subset) if subset is not None else None
        self.num_atom_types = NUM_ATOM_TYPES
        self.num_bond_types = num_bond_types(graph)
        self.target_names, self.target_units = column_names_units(self.targets, atomization)
        self.num_targets = len(self.target_names)
        self.datasets: dict[str, QM9Graphs] = {}
        self._summary: dict[str, int] = {}

    def _split_rows(self) -> dict[str, np.ndarray]:
        rows = split_indices(NUM_MOLECULES, self.split_seed)
        if self.limit is not None:
            rows = {k: v[: self.limit] for k, v in rows.items()}
        if self.subset is not None:
            rows = {k: v[: self.subset.get(k, len(v))] for k, v in rows.items()}
        return rows

    def _targets_of(self, cache: dict) -> torch.Tensor:
        counts = element_counts(cache["z"].numpy(), cache["atom_ptr"].numpy())
        pol = polarizability_matrix(cache["polarizability"].numpy())
        if TENSOR_TARGET in self.targets:  # qm9pack gives it in a principal-axes frame, not pos's
            z, pos = cache["z"].numpy(), cache["pos"].double().numpy()
            pol, frame_counts = to_coordinate_frame(pol, z, pos, cache["atom_ptr"].numpy(),
                                                    cache["symmetry_axis"].numpy())
            for name, count in frame_counts.items():
                key = f"polarizability_{name}"
                self._summary[key] = self._summary.get(key, 0) + count
        y = compute_targets(self.targets, cache["props"].numpy(), pol, counts, self.atomization)
        return torch.from_numpy(y).double()  # float32 would round total energies (~1e7 meV) by ~1 meV

    def _load_or_build(self, rows: np.ndarray) -> dict:
        return qm9_cache.load_or_build(
            self.data_dir, rows, NUM_MOLECULES, read_qm9pack, self.processes, self.progress
        )

    def prepare_data(self) -> None:
        """Build the cache once (Lightning calls this on one process per node before ``setup``)."""
        rows = np.concatenate(list(self._split_rows().values()))
        key = qm9_cache.rows_key(rows, NUM_MOLECULES)
        if not any(qm9_cache.cache_path(self.data_dir, k).is_file() for k in ("all", key)):
            self._load_or_build(rows)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        split_rows = self._split_rows()
        cache = self._load_or_build(np.concatenate(list(split_rows.values())))
        self._summary = qm9_cache.summarize(cache)
        bounds = np.cumsum([0, *(len(v) for v in split_rows.values())])
        for name, a, b in zip(split_rows, bounds[:-1], bounds[1:], strict=True):
            part = qm9_cache.select(cache, np.arange(a, b))
            self.datasets[name] = QM9Graphs(part, self._targets_of(part), self.graph, self.radius)
        self._set_statistics(self.datasets["train"].y)
        log.info("QM9 %s", self.summary())

    def _set_statistics(self, y: torch.Tensor) -> None:
        mean, std = y.mean(0), torch.nan_to_num(y.std(0), nan=1.0)  # nan: a 1-molecule train split
        if TENSOR_TARGET in self.targets:
            start = self.target_names.index("alpha_xx")
            block = slice(start, start + 9)
            mean[block] = 0.0
            std[block] = y[:, block].pow(2).mean().sqrt()
        self.target_mean, self.target_std = mean, std.clamp_min(1e-12)

    def summary(self) -> str:
        """One line: split sizes, targets, graph and the bond-perception counts."""
        sizes = {k: len(v) for k, v in self.datasets.items()}
        return (
            f"splits={sizes} targets={self.target_names} units={self.target_units} "
            f"graph={self.graph} radius={self.radius} atomization={self.atomization} {self._summary}"
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

