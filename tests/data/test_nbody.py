"""Charged N-body simulator, dataset cache, DataModule and CLI (fast: a few seconds in total)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from steerable.data import nbody_io
from steerable.data.nbody import (
    NBodyDataModule,
    NBodyDataset,
    baseline_mse,
    fit_time_scale,
    fully_connected_edges,
)
from steerable.data.nbody import main as nbody_main
from steerable.data.nbody_io import ensure_split, generate_split, load_split, split_params, split_path
from steerable.data.nbody_sim import SimConfig, energy, forces, initial_state, simulate, verlet

REPO = Path(__file__).resolve().parents[2]
EXACT = {"softening": 0.0, "max_force": None}  # Coulomb forces, no softening, no clipping


def batch_of_states(n: int, seed: int, cfg: SimConfig = SimConfig()):
    rng = np.random.default_rng(seed)
    return (np.stack(a) for a in zip(*(initial_state(rng, cfg) for _ in range(n)), strict=True))


def regular_states(n: int, seed: int, n_steps: int, r_min: float = 0.1):
    """Initial states of the systems among ``n`` whose particles stay ``> r_min`` apart (checked every
    step, unclipped) for ``n_steps`` steps. Close Coulomb encounters are chaotic: they amplify round-off
    (and the integration error) by orders of magnitude, which these tests do not want to measure."""
    pos0, vel0, charge = batch_of_states(n, seed)
    pos, _ = simulate(pos0, vel0, charge, SimConfig(n_steps=n_steps, sample_every=1, **EXACT))
    keep = min_pair_distance(pos) > r_min
    assert keep.sum() >= n // 2
    return pos0[keep], vel0[keep], charge[keep]


def random_orthogonal(rng: np.random.Generator, reflect: bool) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) < 0) != reflect:
        q = -q
    return q


def min_pair_distance(pos: np.ndarray) -> np.ndarray:
    """``pos (S, T, N, 3)`` → smallest distance between two particles over the trajectory ``(S,)``."""
    d = np.linalg.norm(pos[:, :, :, None] - pos[:, :, None, :], axis=-1)
    n = pos.shape[2]
    d[..., np.arange(n), np.arange(n)] = np.inf
    return d.min(axis=(1, 2, 3))


# ---------------------------------------------------------------- physics
def test_forces_are_minus_energy_gradient():
    pos, _, charge = batch_of_states(4, seed=0)
    eps = 1e-6
    for softening in (0.0, 0.3):
        f = forces(pos, charge, softening)
        grad = np.zeros_like(pos)
        for i in range(pos.shape[1]):
            for d in range(3):
                step = np.zeros_like(pos)
                step[:, i, d] = eps
                zero = np.zeros_like(pos)
                grad[:, i, d] = (energy(pos + step, zero, charge, softening)
                                 - energy(pos - step, zero, charge, softening)) / (2 * eps)
        np.testing.assert_allclose(f, -grad, rtol=1e-6, atol=1e-6)


def test_force_clipping_caps_the_norm():
    pos = np.array([[[0.0, 0.0, 0.0], [0.01, 0.0, 0.0]]])
    charge = np.array([[1.0, -1.0]])
    assert np.linalg.norm(forces(pos, charge), axis=-1).max() > 1e3
    np.testing.assert_allclose(np.linalg.norm(forces(pos, charge, max_force=100.0), axis=-1), 100.0)


def test_energy_conservation():
    """Unsoftened, unclipped: |E(t) - E(0)| ≤ 1e-4 over 5,000 steps (typical |E| ~ 1) for every system
    whose particles never come closer than 0.25; close Coulomb encounters are where dt = 0.001 fails."""
    cfg = SimConfig(n_steps=5000, sample_every=1, **EXACT)
    pos0, vel0, charge = batch_of_states(48, seed=1)
    pos, vel = simulate(pos0, vel0, charge, cfg)
    e = energy(pos, vel, charge[:, None, :])
    drift = np.abs(e - e[:, :1]).max(axis=1)
    regular = min_pair_distance(pos) > 0.25
    assert regular.sum() >= 16
    assert drift[regular].max() < 1e-4, drift[regular].max()


def test_energy_error_is_second_order_in_dt():
    cfg = SimConfig(n_steps=1000, sample_every=1000, **EXACT)
    pos0, vel0, charge = batch_of_states(16, seed=3)
    pos, _ = simulate(pos0, vel0, charge, SimConfig(n_steps=1000, sample_every=1, **EXACT))
    keep = min_pair_distance(pos) > 0.3
    errors = []
    for dt, steps in ((0.002, 500), (0.001, 1000)):
        c = SimConfig(dt=dt, n_steps=steps, sample_every=steps, **EXACT)
        p, v = simulate(pos0[keep], vel0[keep], charge[keep], c)
        e = energy(p, v, charge[keep][:, None, :])
        errors.append(np.abs(e[:, -1] - e[:, 0]).max())
    assert cfg.n_frames == 2
    assert 2.5 < errors[0] / errors[1] < 6.0, errors


@pytest.mark.parametrize("max_force", [None, 100.0])
def test_time_reversible(max_force):
    """Forward 1,000 steps, flip velocities, 1,000 steps back: initial state recovered to 1e-10."""
    cfg = SimConfig(n_steps=1000, sample_every=1000, max_force=max_force)
    pos0, vel0, charge = regular_states(32, seed=4, n_steps=1000)
    pos, vel = simulate(pos0, vel0, charge, cfg)
    back_pos, back_vel = simulate(pos[:, -1], -vel[:, -1], charge, cfg)
    assert np.abs(back_pos[:, -1] - pos0).max() < 1e-10
    assert np.abs(-back_vel[:, -1] - vel0).max() < 1e-10


@pytest.mark.parametrize("reflect", [False, True])
@pytest.mark.parametrize("max_force", [None, 100.0])
def test_o3_and_translation_equivariant(reflect, max_force):
    """Rotating/reflecting and translating the initial state maps the whole trajectory (float64, 1e-10)."""
    rng = np.random.default_rng(5)
    q, shift = random_orthogonal(rng, reflect), rng.standard_normal(3)
    cfg = SimConfig(n_steps=1000, sample_every=100, max_force=max_force)
    pos0, vel0, charge = regular_states(32, seed=6, n_steps=1000)
    pos, vel = simulate(pos0, vel0, charge, cfg)
    pos_g, vel_g = simulate(pos0 @ q.T + shift, vel0 @ q.T, charge, cfg)
    assert np.abs(pos_g - (pos @ q.T + shift)).max() < 1e-10
    assert np.abs(vel_g - vel @ q.T).max() < 1e-10


def test_verlet_yields_sampled_frames_without_mutating_input():
    pos0, vel0, charge = batch_of_states(2, seed=7)
    before = pos0.copy()
    frames = list(verlet(pos0, vel0, charge, n_steps=10, dt=0.001, sample_every=5))
    assert len(frames) == 3
    np.testing.assert_array_equal(frames[0][0], before)
    np.testing.assert_array_equal(pos0, before)


def test_initial_state_distribution():
    cfg = SimConfig()
    pos, vel, charge = batch_of_states(2000, seed=8, cfg=cfg)
    assert set(np.unique(charge)) == {-1.0, 1.0}
    np.testing.assert_allclose(np.linalg.norm(vel, axis=-1), cfg.vel_norm)
    assert abs(pos.std() - cfg.loc_std) < 0.02


def test_sim_config_validation():
    with pytest.raises(ValueError):
        SimConfig(n_steps=1000, sample_every=300)
    with pytest.raises(ValueError):
        SimConfig(max_force=0.0)
    assert SimConfig().n_frames == 51 and SimConfig().frame_dt == pytest.approx(0.1)


# ---------------------------------------------------------------- cache
TINY = SimConfig(n_steps=400, sample_every=20)


def test_splits_are_seeded_prefixes_and_independent():
    a = generate_split(TINY, "train", 6, seed=1, progress=False)
    b = generate_split(TINY, "train", 3, seed=1, progress=False)
    np.testing.assert_array_equal(a["pos"][:3], b["pos"])
    c = generate_split(TINY, "val", 3, seed=1, progress=False)
    assert not np.allclose(c["pos"][:, 0], b["pos"][:, 0])
    d = generate_split(TINY, "train", 3, seed=2, progress=False)
    assert not np.allclose(d["pos"][:, 0], b["pos"][:, 0])
    assert a["pos"].shape == (6, TINY.n_frames, 5, 3) and a["pos"].dtype == np.float32
    assert a["charge"].shape == (6, 5)


def test_generation_independent_of_chunking_and_workers():
    serial = generate_split(TINY, "test", 5, seed=3, chunk=5, progress=False)
    for kwargs in ({"chunk": 2}, {"chunk": 2, "workers": 2}):
        other = generate_split(TINY, "test", 5, seed=3, progress=False, **kwargs)
        for key in serial:
            np.testing.assert_array_equal(serial[key], other[key])


def test_cache_roundtrip_params_and_invalidation(tmp_path):
    path = ensure_split(tmp_path, TINY, "train", 4, seed=0, progress=False)
    params = split_params(TINY, "train", 4, 0)
    assert path == split_path(tmp_path, params)
    arrays = load_split(path, params)
    assert arrays["vel"].shape == (4, TINY.n_frames, 5, 3)
    mtime = path.stat().st_mtime_ns
    assert ensure_split(tmp_path, TINY, "train", 4, seed=0, progress=False) == path
    assert path.stat().st_mtime_ns == mtime  # reused, not regenerated
    changed = [SimConfig(n_steps=400, sample_every=20, softening=0.1),
               SimConfig(n_steps=400, sample_every=40)]
    others = {ensure_split(tmp_path, c, "train", 4, seed=0, progress=False) for c in changed}
    others |= {ensure_split(tmp_path, TINY, "train", 5, seed=0, progress=False),
               ensure_split(tmp_path, TINY, "train", 4, seed=1, progress=False)}
    assert path not in others and len(others) == 4
    with pytest.raises(ValueError, match="generated with"):
        load_split(path, split_params(TINY, "train", 4, 1))
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves neither a partial cache file nor a temp file behind."""
    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(nbody_io.np, "savez", broken_savez)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_split(tmp_path, TINY, "test", 2, seed=0, progress=False)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- dataset / datamodule
def test_fully_connected_edges():
    ei = fully_connected_edges(5)
    assert ei.shape == (2, 20) and (ei[0] != ei[1]).all()
    assert len({tuple(e) for e in ei.T.tolist()}) == 20


def test_datamodule_items_and_batches(tmp_path):
    dm = NBodyDataModule(str(tmp_path), n_train=8, n_val=4, n_test=4, batch_size=4, seed=0,
                         frame_in=5, frame_out=15, progress=False, n_steps=400, sample_every=20)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.horizon == pytest.approx(0.2)
    item = dm.datasets["train"][0]
    shapes = {k: tuple(item[k].shape) for k in ("pos", "vel", "charge", "edge_index", "edge_attr", "y")}
    assert shapes == {"pos": (5, 3), "vel": (5, 3), "charge": (5, 1), "edge_index": (2, 20),
                      "edge_attr": (20, 1), "y": (5, 3)}
    src, dst = item.edge_index
    torch.testing.assert_close(item.edge_attr, item.charge[src] * item.charge[dst])
    raw = load_split(dm.split_file("train"))
    torch.testing.assert_close(item.pos, torch.from_numpy(raw["pos"][0, 5]))
    torch.testing.assert_close(item.y, torch.from_numpy(raw["pos"][0, 15]))
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == 4 and batch.pos.shape == (20, 3) and batch.edge_index.shape == (2, 80)
    assert len(dm.val_dataloader().dataset) == 4 and len(dm.test_dataloader().dataset) == 4
    base = dm.baselines("test")
    assert 0 < base["constant_velocity"] < base["no_motion"] and base["linear"] < base["no_motion"]
    assert set(base) == {"no_motion", "constant_velocity", "linear", "linear_time_scale"}


def test_bad_frames_rejected(tmp_path):
    with pytest.raises(ValueError, match="frame_in"):
        NBodyDataModule(str(tmp_path), frame_in=40, frame_out=30)
    with pytest.raises(ValueError, match="frame_in"):
        NBodyDataModule(str(tmp_path), frame_in=30, frame_out=51)
    arrays = {"pos": np.zeros((1, 3, 5, 3)), "vel": np.zeros((1, 3, 5, 3)), "charge": np.ones((1, 5))}
    with pytest.raises(ValueError):
        NBodyDataset(arrays, 0, 3)


def test_baseline_mse_exact_for_free_particles():
    pos, vel = torch.randn(10, 5, 3), torch.randn(10, 5, 3)
    y = pos + 2.0 * vel
    tau = fit_time_scale(pos, vel, y)
    assert tau == pytest.approx(2.0)
    base = baseline_mse(pos, vel, y, horizon=2.0, time_scale=tau)
    assert base["constant_velocity"] < 1e-10 and base["linear"] < 1e-10
    assert base["no_motion"] == pytest.approx(torch.mean((2.0 * vel) ** 2).item())


@pytest.mark.slow  # a subprocess; main()'s option errors are tested in process below
def test_cli_subprocess(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "steerable.data.nbody", f"out={tmp_path}", "n_train=4", "n_val=2",
           "n_test=2", "seed=3", "n_steps=200", "sample_every=10", "frame_in=2", "frame_out=12",
           "max_force=none", "progress=0"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in tmp_path.glob("nbody_*.npz"))
    assert [f.split("_")[1] for f in files] == ["test", "train", "val"]
    assert "constant_velocity" in result.stdout
    cfg = SimConfig(n_steps=200, sample_every=10, max_force=None)
    assert load_split(split_path(tmp_path, split_params(cfg, "val", 2, 3)))["pos"].shape == (2, 21, 5, 3)


def test_cli_rejects_unknown_keys():
    with pytest.raises(SystemExit, match="bogus"):
        nbody_main(["out=x", "bogus=1"])
    with pytest.raises(SystemExit, match="out=DIR"):
        nbody_main(["n_train=3"])
