"""Generate N-body dataset splits and cache them on disk (atomic writes, parameter-keyed file names).

One ``.npz`` file per split holds

- ``pos``, ``vel``: ``(S, F, N, 3)`` float32 trajectories (``F = cfg.n_frames``, frame 0 = initial state),
- ``charge``: ``(S, N)`` float32 charges (±1),
- ``params``: the JSON of every generation parameter (simulation config, split, size, seed, format).

The file name contains a hash of ``params``: changing any parameter selects (and generates) a different
file, and a loaded file is checked against the requested parameters.

Seeds: trajectory ``i`` of split ``s`` is drawn from ``SeedSequence(seed, spawn_key=(SPLITS.index(s),))``'s
``i``-th child, so splits are independent and a smaller set is a prefix of a larger one with the same seed.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from steerable.data.nbody_sim import SimConfig, initial_state, simulate
from steerable.io_utils import usual_permissions

SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1


def split_params(cfg: SimConfig, split: str, n: int, seed: int) -> dict:
    """All parameters that determine a split's content (stored in, and hashed into, its file)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return {"format": FORMAT_VERSION, "split": split, "n": int(n), "seed": int(seed), "sim": cfg.to_dict()}


def split_path(data_dir: str | os.PathLike, params: dict) -> Path:
    """``<data_dir>/nbody_<split>_n<n>_s<seed>_<hash>.npz`` for the given :func:`split_params`."""
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return Path(data_dir) / f"nbody_{params['split']}_n{params['n']}_s{params['seed']}_{digest}.npz"


def _simulate_chunk(pos0: np.ndarray, vel0: np.ndarray, charge: np.ndarray,
                    cfg: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    """Worker job: one chunk of trajectories, returned as float32 ``(S, F, N, d)`` arrays."""
    pos, vel = simulate(pos0, vel0, charge, cfg)
    return pos.astype(np.float32), vel.astype(np.float32)


def generate_split(cfg: SimConfig, split: str, n: int, seed: int, chunk: int = 500,
                   progress: bool = True, workers: int = 1) -> dict[str, np.ndarray]:
    """Simulate ``n`` trajectories of ``split`` (float64 integration, float32 output).

    Args:
        cfg: simulation parameters.
        split: ``train``, ``val`` or ``test`` (selects the seed stream).
        n: number of trajectories.
        seed: base seed.
        chunk: trajectories integrated together (vectorised) in one job (default: 500).
        progress: show a tqdm bar (in integration steps × systems).
        workers: processes integrating chunks in parallel; 1 = in this process (default: 1). Every
            trajectory is integrated independently, so the result does not depend on ``chunk`` or
            ``workers``.

    Returns:
        ``{"pos": (n, F, N, 3), "vel": (n, F, N, 3), "charge": (n, N)}`` float32 arrays.
    """
    root = np.random.SeedSequence(seed, spawn_key=(SPLITS.index(split),))
    states = [initial_state(np.random.default_rng(child), cfg) for child in root.spawn(n)]
    if n:
        pos0, vel0, charge = (np.stack(a) for a in zip(*states, strict=True))
    else:
        pos0 = vel0 = np.zeros((0, cfg.n_particles, cfg.dim))
        charge = np.zeros((0, cfg.n_particles))
    out_pos = np.empty((n, cfg.n_frames, cfg.n_particles, cfg.dim), dtype=np.float32)
    out_vel = np.empty_like(out_pos)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n * cfg.n_steps, desc=f"nbody {split} ({n} systems)", unit="sim-step",
                   unit_scale=True)
    slices = [slice(start, min(start + chunk, n)) for start in range(0, n, chunk)]
    if workers > 1 and len(slices) > 1:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(min(workers, len(slices)), mp_context=context) as pool:
            jobs = {pool.submit(_simulate_chunk, pos0[sl], vel0[sl], charge[sl], cfg): sl for sl in slices}
            for job in as_completed(jobs):
                sl = jobs[job]
                out_pos[sl], out_vel[sl] = job.result()
                if bar is not None:
                    bar.update((sl.stop - sl.start) * cfg.n_steps)
    else:
        for sl in slices:
            size = sl.stop - sl.start
            on_frame = (lambda k, size=size: bar.update(k * size)) if bar is not None else None
            out_pos[sl], out_vel[sl] = simulate(pos0[sl], vel0[sl], charge[sl], cfg, on_frame=on_frame)
    if bar is not None:
        bar.close()
    return {"pos": out_pos, "vel": out_vel, "charge": charge.astype(np.float32)}


def save_atomic(path: Path, arrays: dict[str, np.ndarray], params: dict) -> None:
    """Write ``arrays`` and ``params`` to ``path`` via a temp file in the same folder + ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        usual_permissions(fd)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, params=np.array(json.dumps(params, sort_keys=True)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_split(path: Path, params: dict | None = None) -> dict[str, np.ndarray]:
    """Load a cached split; if ``params`` is given, raise ``ValueError`` unless the file's match."""
    with np.load(path, allow_pickle=False) as z:
        stored = json.loads(str(z["params"]))
        if params is not None and stored != json.loads(json.dumps(params, sort_keys=True)):
            raise ValueError(f"{path} was generated with {stored}, not {params}")
        return {k: z[k] for k in ("pos", "vel", "charge")}


def ensure_split(data_dir: str | os.PathLike, cfg: SimConfig, split: str, n: int, seed: int,
                 progress: bool = True, workers: int = 1) -> Path:
    """Return the cache file of a split, generating and writing it first if it is missing."""
    params = split_params(cfg, split, n, seed)
    path = split_path(data_dir, params)
    if not path.exists():
        save_atomic(path, generate_split(cfg, split, n, seed, progress=progress, workers=workers), params)
    return path
