"""Charged-particle N-body simulator (the "charged" system of NRI / EGNN), vectorised over simulations.

Physics (unit masses, unit coupling):

.. math::

    F_i = \\sum_{j \\ne i} c_i c_j \\frac{x_i - x_j}{(|x_i - x_j|^2 + \\varepsilon^2)^{3/2}},
    \\qquad
    U = \\sum_{i < j} \\frac{c_i c_j}{(|x_i - x_j|^2 + \\varepsilon^2)^{1/2}},
    \\qquad
    E = \\tfrac12 \\sum_i |v_i|^2 + U

so like charges repel and opposite charges attract; ``F = -∇U`` exactly, also with softening ε > 0.
Optionally the total force on each particle is clipped to a maximum *norm* ``max_force`` (NRI/EGNN clip
each Cartesian component to ``0.1 / dt = 100``; clipping the norm instead keeps the dynamics
O(3)-equivariant). Clipping makes the force non-conservative, so energy is conserved only with
``max_force=None``.

Integration is velocity Verlet (kick ½dt – drift dt – kick ½dt), which is symplectic, second order and
time-reversible, and gives positions and velocities at the same instants. (NRI/EGNN use a
kick-drift leapfrog whose stored velocities lag the positions by half a step.)

Initial conditions (EGNN ``ChargedParticlesSim`` defaults): charges ±1 with probability ½ each;
positions ``x_i ~ N(0, loc_std² I)`` with ``loc_std = 1``; velocities of fixed speed ``vel_norm = 0.5``
in a uniformly random direction.

Arrays are float64 NumPy: positions/velocities ``(S, N, 3)``, charges ``(S, N)``, where ``S`` is the
number of simulations and ``N`` the number of particles. Time unit: one ``dt`` step is 0.001.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class SimConfig:
    """Generation parameters of the charged N-body system (all stored with every cached dataset).

    Args:
        n_particles: particles per system (default: 5).
        dim: spatial dimension (default: 3).
        n_steps: integration steps per trajectory (default: 5000).
        dt: integration time step (default: 0.001).
        sample_every: store one frame every this many steps; frame ``k`` is the state after
            ``k * sample_every`` steps, ``k = 0 .. n_steps // sample_every`` (default: 100 → 51 frames,
            frame 0 = initial state).
        loc_std: standard deviation of the initial positions (default: 1.0).
        vel_norm: speed of every particle at t = 0 (default: 0.5).
        softening: Plummer softening length ε; 0 disables (default: 0.0).
        max_force: maximum norm of the total force on a particle; ``None`` disables (default: 100.0,
            i.e. ``0.1 / dt`` as in NRI/EGNN).
    """

    n_particles: int = 5
    dim: int = 3
    n_steps: int = 5000
    dt: float = 0.001
    sample_every: int = 100
    loc_std: float = 1.0
    vel_norm: float = 0.5
    softening: float = 0.0
    max_force: float | None = 100.0

    def __post_init__(self) -> None:
        if self.n_steps % self.sample_every:
            raise ValueError(f"n_steps={self.n_steps} is not a multiple of sample_every={self.sample_every}")
        if self.max_force is not None and self.max_force <= 0:
            raise ValueError(f"max_force must be positive or None, got {self.max_force}")
        if self.softening < 0:
            raise ValueError(f"softening must be >= 0, got {self.softening}")

    @property
    def n_frames(self) -> int:
        """Number of stored frames (initial state included)."""
        return self.n_steps // self.sample_every + 1

    @property
    def frame_dt(self) -> float:
        """Time between consecutive stored frames."""
        return self.sample_every * self.dt

    def to_dict(self) -> dict:
        return asdict(self)


def forces(pos: np.ndarray, charge: np.ndarray, softening: float = 0.0,
           max_force: float | None = None) -> np.ndarray:
    """Coulomb-like forces ``F_i = Σ_j c_i c_j (x_i − x_j) / (r_ij² + ε²)^{3/2}``.

    Args:
        pos: positions ``(S, N, d)``.
        charge: charges ``(S, N)``.
        softening: ε (default: 0, unsoftened).
        max_force: clip each particle's total force to this norm (default: ``None``, no clipping).

    Returns:
        forces ``(S, N, d)`` (unit masses, so also accelerations).
    """
    diff = pos[:, :, None, :] - pos[:, None, :, :]                      # (S, N, N, d): x_i - x_j
    r2 = np.einsum("sijd,sijd->sij", diff, diff) + softening**2
    n = pos.shape[1]
    r2[:, np.arange(n), np.arange(n)] = np.inf                          # no self-interaction
    coef = charge[:, :, None] * charge[:, None, :] * r2**-1.5
    f = np.einsum("sij,sijd->sid", coef, diff)
    if max_force is not None:
        norm = np.sqrt(np.einsum("sid,sid->si", f, f))
        f *= np.minimum(1.0, max_force / np.maximum(norm, 1e-300))[..., None]
    return f


def energy(pos: np.ndarray, vel: np.ndarray, charge: np.ndarray, softening: float = 0.0) -> np.ndarray:
    """Total energy ``½Σ|v|² + Σ_{i<j} c_i c_j / (r_ij² + ε²)^{1/2}``.

    Shapes: ``pos, vel (..., N, d)``, ``charge (..., N)`` → ``(...)``.
    """
    kinetic = 0.5 * (vel**2).sum(axis=(-1, -2))
    diff = pos[..., :, None, :] - pos[..., None, :, :]
    r = np.sqrt((diff**2).sum(-1) + softening**2)
    iu = np.triu_indices(pos.shape[-2], k=1)
    cc = charge[..., :, None] * charge[..., None, :]
    potential = (cc[..., iu[0], iu[1]] / r[..., iu[0], iu[1]]).sum(-1)
    return kinetic + potential


def verlet(pos: np.ndarray, vel: np.ndarray, charge: np.ndarray, n_steps: int, dt: float,
           softening: float = 0.0, max_force: float | None = None,
           sample_every: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Velocity-Verlet integration; yields ``(pos, vel)`` copies every ``sample_every`` steps.

    The first yield is the initial state (step 0), the last is the state after ``n_steps`` steps
    (``n_steps // sample_every + 1`` yields in total). Inputs are not modified.

    Shapes: ``pos, vel (S, N, d)``, ``charge (S, N)``.
    """
    pos, vel = pos.astype(np.float64, copy=True), vel.astype(np.float64, copy=True)
    charge = np.asarray(charge, dtype=np.float64)
    acc = forces(pos, charge, softening, max_force)
    yield pos.copy(), vel.copy()
    for step in range(1, n_steps + 1):
        vel += 0.5 * dt * acc
        pos += dt * vel
        acc = forces(pos, charge, softening, max_force)
        vel += 0.5 * dt * acc
        if step % sample_every == 0:
            yield pos.copy(), vel.copy()


def initial_state(rng: np.random.Generator, cfg: SimConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one system's initial ``pos (N, d)``, ``vel (N, d)`` and ``charge (N,)`` (see module doc)."""
    n, d = cfg.n_particles, cfg.dim
    charge = rng.choice(np.array([-1.0, 1.0]), size=n)
    pos = rng.standard_normal((n, d)) * cfg.loc_std
    direction = rng.standard_normal((n, d))
    vel = direction / np.linalg.norm(direction, axis=-1, keepdims=True) * cfg.vel_norm
    return pos, vel, charge


def simulate(pos: np.ndarray, vel: np.ndarray, charge: np.ndarray, cfg: SimConfig,
             on_frame: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Integrate a batch of systems with ``cfg`` and return the stored frames.

    Args:
        pos: initial positions ``(S, N, d)``.
        vel: initial velocities ``(S, N, d)``.
        charge: charges ``(S, N)``.
        cfg: simulation parameters.
        on_frame: optional callback, called with ``cfg.sample_every`` after each stored frame but the
            first (e.g. to advance a progress bar by integration steps).

    Returns:
        ``(pos, vel)`` trajectories, each ``(S, cfg.n_frames, N, d)`` float64.
    """
    frames = verlet(pos, vel, charge, cfg.n_steps, cfg.dt, cfg.softening, cfg.max_force, cfg.sample_every)
    out_pos = np.empty((pos.shape[0], cfg.n_frames) + pos.shape[1:])
    out_vel = np.empty_like(out_pos)
    for k, (p, v) in enumerate(frames):
        out_pos[:, k], out_vel[:, k] = p, v
        if on_frame is not None and k:
            on_frame(cfg.sample_every)
    return out_pos, out_vel
