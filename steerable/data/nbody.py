"""Charged N-body trajectory prediction: PyG dataset, Lightning DataModule, physics baselines, CLI.

Task (EGNN, Satorras et al. 2021, §5.1): from positions, velocities and charges of 5 charged particles at
frame ``frame_in`` predict their positions at ``frame_out``. With the defaults (frames every 100 steps of
``dt = 0.001``) ``frame_in = 30 → frame_out = 40`` is 1,000 integration steps, i.e. a time horizon of
1.0. Our frame ``k`` is the state after ``100 k`` steps (frame 0 = initial state); EGNN's frame ``k``
is the state after ``100 (k + 1)`` steps, so the two differ by a 100-step shift of the window
(EGNN's ``30 → 40`` is our ``31 → 41``; the horizon, 1,000 steps, is the same). EGNN's simulator is a
kick-drift leapfrog whose stored velocities lag the positions by half a step and which clips each
force component to 100; ours is velocity Verlet with a clip of the force norm (O(3)-equivariant, see
``nbody_sim``). Protocol (EGNN, SEGNN, CGENN): 3,000 training, 2,000 validation and 2,000 test
trajectories of 5 particles; inputs positions, velocities, charges; MSE of the predicted positions.

Each item is a fully connected graph without self loops:

- ``pos (N, 3)``, ``vel (N, 3)``: positions and velocities at ``frame_in``; both are polar vectors
  (ℓ = 1, odd parity, e3nn ``1o``: they transform with the standard representation of O(3)),
- ``charge (N, 1)``: charges ±1 (invariant),
- ``edge_index (2, N (N - 1))``: all ordered pairs ``i ≠ j`` (both directions),
- ``edge_attr (N (N - 1), 1)``: ``c_i c_j`` of the two end points (invariant),
- ``y (N, 3)``: positions at ``frame_out`` (rotates and translates with ``pos``).

CLI (generates all three splits into ``out``; any :class:`SimConfig` field may be given)::

    python -m steerable.data.nbody out=data/nbody n_train=3000 n_val=2000 n_test=2000 seed=42 gen_workers=2
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from steerable.data.nbody_io import SPLITS, ensure_split, load_split, split_params
from steerable.data.nbody_sim import SimConfig
from steerable.data.split_loaders import SplitDataModule


def fully_connected_edges(n: int) -> torch.Tensor:
    """``edge_index (2, n (n - 1))`` of the complete directed graph on ``n`` nodes, no self loops."""
    src, dst = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    mask = src != dst
    return torch.stack([src[mask], dst[mask]])


class NBodyDataset(Dataset):
    """In-memory dataset of ``(frame_in → frame_out)`` graphs from cached trajectories.

    Args:
        arrays: ``{"pos": (S, F, N, 3), "vel": (S, F, N, 3), "charge": (S, N)}`` (see ``nbody_io``).
        frame_in: input frame index (default: 30).
        frame_out: target frame index (default: 40).
    """

    def __init__(self, arrays: dict[str, np.ndarray], frame_in: int = 30, frame_out: int = 40):
        n_frames = arrays["pos"].shape[1]
        if not 0 <= frame_in < frame_out < n_frames:
            raise ValueError(f"need 0 <= frame_in ({frame_in}) < frame_out ({frame_out}) < {n_frames} frames")
        self.pos = torch.as_tensor(arrays["pos"][:, frame_in], dtype=torch.float32)
        self.vel = torch.as_tensor(arrays["vel"][:, frame_in], dtype=torch.float32)
        self.y = torch.as_tensor(arrays["pos"][:, frame_out], dtype=torch.float32)
        self.charge = torch.as_tensor(arrays["charge"], dtype=torch.float32).unsqueeze(-1)
        self.edge_index = fully_connected_edges(self.pos.shape[1])

    def __len__(self) -> int:
        return self.pos.shape[0]

    def __getitem__(self, idx: int) -> Data:
        charge = self.charge[idx]
        src, dst = self.edge_index
        return Data(pos=self.pos[idx], vel=self.vel[idx], charge=charge, edge_index=self.edge_index,
                    edge_attr=charge[src] * charge[dst], y=self.y[idx])


def fit_time_scale(pos: torch.Tensor, vel: torch.Tensor, y: torch.Tensor) -> float:
    """Least-squares ``τ`` of ``y ≈ pos + τ · vel`` (EGNN's "Linear" baseline learns this one scalar).

    Shapes: ``pos, vel, y (..., 3)``.
    """
    vel64 = vel.double()
    return ((vel64 * (y.double() - pos.double())).sum() / (vel64**2).sum()).item()


def baseline_mse(pos: torch.Tensor, vel: torch.Tensor, y: torch.Tensor, horizon: float,
                 time_scale: float | None = None) -> dict[str, float]:
    """MSE (mean over particles and coordinates, as EGNN's) of physics-free predictors.

    ``no_motion``: ``ŷ = pos``; ``constant_velocity``: ``ŷ = pos + vel · horizon``; and, if
    ``time_scale`` τ is given (see :func:`fit_time_scale`), ``linear``: ``ŷ = pos + vel · τ``.

    Shapes: ``pos, vel, y (..., 3)``; ``horizon`` is the time between input and target frames.
    """
    out = {"no_motion": torch.mean((pos - y) ** 2).item(),
           "constant_velocity": torch.mean((pos + vel * horizon - y) ** 2).item()}
    if time_scale is not None:
        out["linear"] = torch.mean((pos + vel * time_scale - y) ** 2).item()
    return out


class NBodyDataModule(SplitDataModule):
    """Charged N-body DataModule; generates the three splits into ``data_dir`` on first use.

    Args:
        data_dir: cache folder for the generated ``.npz`` splits.
        n_train, n_val, n_test: trajectories generated per split (default: 3000 / 2000 / 2000, the
            EGNN/SEGNN/CGENN protocol).
        batch_size: graphs per batch (default: 100).
        num_workers: DataLoader workers (default: 0).
        seed: base seed; each split derives its own (see ``nbody_io``) (default: 42).
        frame_in, frame_out: input and target frame (default: 30 → 40, a horizon of 1.0).
        limit: use at most the first ``limit`` trajectories of each split (default: ``None``, all).
        progress: show a progress bar while generating (default: True).
        gen_workers: processes used to generate a split (default: 1); the data do not depend on it.
        n_particles, n_steps, dt, sample_every, loc_std, vel_norm, softening, max_force: simulation
            parameters, see :class:`~steerable.data.nbody_sim.SimConfig` (defaults: the EGNN setup).
    """

    def __init__(self, data_dir: str, n_train: int = 3000, n_val: int = 2000, n_test: int = 2000,
                 batch_size: int = 100, num_workers: int = 0, seed: int = 42, frame_in: int = 30,
                 frame_out: int = 40, limit: int | None = None, progress: bool = True, gen_workers: int = 1,
                 n_particles: int = 5, n_steps: int = 5000, dt: float = 0.001, sample_every: int = 100,
                 loc_std: float = 1.0, vel_norm: float = 0.5, softening: float = 0.0,
                 max_force: float | None = 100.0):
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.sim = SimConfig(n_particles=n_particles, n_steps=n_steps, dt=dt, sample_every=sample_every,
                             loc_std=loc_std, vel_norm=vel_norm, softening=softening, max_force=max_force)
        if not 0 <= frame_in < frame_out < self.sim.n_frames:
            raise ValueError(f"need 0 <= frame_in ({frame_in}) < frame_out ({frame_out}) "
                             f"< n_frames ({self.sim.n_frames})")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.batch_size, self.num_workers, self.seed, self.limit = batch_size, num_workers, seed, limit
        self.frame_in, self.frame_out, self.progress = frame_in, frame_out, progress
        self.gen_workers = gen_workers
        self.datasets: dict[str, NBodyDataset] = {}

    @property
    def horizon(self) -> float:
        """Time between the input and the target frame."""
        return (self.frame_out - self.frame_in) * self.sim.frame_dt

    def split_file(self, split: str) -> Path:
        """The cache file of ``split`` (generated first if missing)."""
        return ensure_split(self.data_dir, self.sim, split, self.sizes[split], self.seed, self.progress,
                            self.gen_workers)

    def prepare_data(self) -> None:
        for split in SPLITS:
            self.split_file(split)

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.datasets:
                params = split_params(self.sim, split, self.sizes[split], self.seed)
                arrays = {k: v[: self.limit] for k, v in load_split(self.split_file(split), params).items()}
                self.datasets[split] = NBodyDataset(arrays, self.frame_in, self.frame_out)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def baselines(self, split: str = "test") -> dict[str, float]:
        """:func:`baseline_mse` on a whole split, ``linear`` with τ fitted on the training split.

        Returns ``{"no_motion", "constant_velocity", "linear", "linear_time_scale"}`` (MSEs and τ).
        """
        self.setup()
        train, ds = self.datasets["train"], self.datasets[split]
        tau = fit_time_scale(train.pos, train.vel, train.y) if len(train) else None
        out = baseline_mse(ds.pos, ds.vel, ds.y, self.horizon, time_scale=tau)
        if tau is not None:
            out["linear_time_scale"] = tau
        return out


def _parse_value(text: str, kind: type | None):
    """Convert a CLI value: ``none``/``null`` → None; else by the target field type (int/float/str)."""
    if text.lower() in ("none", "null"):
        return None
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    return text


def main(argv: list[str]) -> None:
    """``key=value`` CLI: ``out`` (required), split sizes, ``seed``, frames and ``SimConfig`` fields."""
    sim_types = {f.name: (int if f.type in ("int", int) else float) for f in dataclasses.fields(SimConfig)}
    types = {"out": str, "n_train": int, "n_val": int, "n_test": int, "seed": int, "progress": int,
             "gen_workers": int, "frame_in": int, "frame_out": int, **sim_types}
    args: dict = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"usage: python -m steerable.data.nbody out=DIR [key=value ...]; "
                             f"bad argument {item!r}; keys: {', '.join(types)}")
        args[key] = _parse_value(value, types[key])
    if "out" not in args:
        raise SystemExit("missing out=DIR")
    start = time.perf_counter()
    dm = NBodyDataModule(data_dir=args.pop("out"), progress=bool(args.pop("progress", 1)), **args)
    dm.prepare_data()
    for split in SPLITS:
        print(f"{split}: {dm.split_file(split)}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    base = dm.baselines("test") if dm.sizes["test"] else {}
    for name, value in base.items():
        print(f"test {'' if name.endswith('scale') else 'MSE '}{name} (horizon {dm.horizon:g}): {value:.6f}")


if __name__ == "__main__":
    main(sys.argv[1:])
