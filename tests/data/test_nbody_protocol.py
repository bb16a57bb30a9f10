"""The default N-body run follows the EGNN/SEGNN/CGENN protocol (3,000 / 2,000 / 2,000 trajectories,
5 charged particles, 1,000 integration steps between input and target)."""

from __future__ import annotations

import numpy as np

from steerable.data.nbody import NBodyDataModule, NBodyDataset
from steerable.data.nbody_sim import SimConfig, simulate


def test_default_experiment_uses_the_standard_protocol(compose_cfg):
    cfg = compose_cfg(["experiment=nbody", "logger=none"])
    data = cfg.dataset
    assert (data.n_train, data.n_val, data.n_test) == (3000, 2000, 2000)
    assert data.n_particles == 5 and data.limit is None
    assert (data.frame_out - data.frame_in) * data.sample_every == 1000  # integration steps
    assert NBodyDataModule.__init__.__defaults__[0] == 3000  # the class default agrees


def test_default_experiment_is_the_60_minute_recipe(compose_cfg):
    """`python -m steerable.train experiment=nbody` trains for 60 min, AdamW 4e-3 on batches of 50, the
    learning rate decayed by a cosine over the time budget, every step (experiments/peers/README.md)."""
    cfg = compose_cfg(["experiment=nbody", "logger=none", "trainer.max_time=00:00:30:00"])
    assert cfg.task.optimizer.lr == 4.0e-3 and cfg.dataset.batch_size == 50
    assert cfg.task.scheduler._target_ == "steerable.schedules.BudgetCosineLR"
    assert cfg.task.scheduler.budget == "00:00:30:00" and cfg.task.scheduler_interval == "step"
    assert cfg.trainer.max_epochs >= 10_000  # the budget, not the epochs, ends the run
    assert compose_cfg(["experiment=nbody", "logger=none"]).trainer.max_time == "00:01:00:00"
    assert cfg.model.conv.live_hidden_only is True and cfg.model.shared_phi is False
    assert cfg.model.position_updates is True


def test_frame_k_is_the_state_after_k_times_sample_every_steps():
    """Frame 0 is the initial state and frame k the state after ``k * sample_every`` steps (EGNN's
    frame k is ours k + 1), so ``frame_in → frame_out`` spans ``(out - in) * sample_every`` steps."""
    rng = np.random.default_rng(0)
    pos0, vel0 = rng.standard_normal((2, 5, 3)), 0.5 * rng.standard_normal((2, 5, 3))
    charge = np.array([[1.0, -1, 1, -1, 1], [1.0, 1, -1, -1, -1]])
    coarse, _ = simulate(pos0, vel0, charge, SimConfig(n_steps=40, sample_every=10))
    fine, _ = simulate(pos0, vel0, charge, SimConfig(n_steps=40, sample_every=1))
    np.testing.assert_allclose(coarse[:, 0], pos0)
    np.testing.assert_allclose(coarse[:, 3], fine[:, 30])
    arrays = {"pos": coarse.astype(np.float32), "vel": coarse.astype(np.float32),
              "charge": charge.astype(np.float32)}
    item = NBodyDataset(arrays, frame_in=1, frame_out=3)[1]
    np.testing.assert_allclose(item.pos.numpy(), fine[1, 10], rtol=1e-6)
    np.testing.assert_allclose(item.y.numpy(), fine[1, 30], rtol=1e-6)
