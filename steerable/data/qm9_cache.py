"""Build, save and load the processed QM9 cache (bond perception is the expensive step).

The cache holds what does not depend on run knobs — geometry, perceived bonds, raw properties —
for a set of molecules (all of them, or the rows a ``subset`` run needs). Graph type, radius,
targets and atomization are applied when the dataset is read, so they never invalidate it. The file
name carries :data:`CACHE_VERSION`, the qm9pack version and the row set; the same keys are stored
inside and checked on load. Files are written to a temporary name unique across hosts and renamed,
so an interrupted write never leaves a file under the final name, and writers on several hosts of a
shared file system never remove each other's temporary files.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from steerable.data.qm9_bonds import METHODS, perceive_bonds
from steerable.data.qm9_polarizability import exact_symmetry_axes
from steerable.data.qm9_raw import QM9Raw, qm9pack_version
from steerable.io_utils import usual_permissions

log = logging.getLogger(__name__)

#: Bump when processing changes what the cache holds or how it is computed.
CACHE_VERSION = 3
#: A temporary file untouched this long (seconds) is a killed writer's leftover.
STALE_TEMP_AGE_S = 24 * 3600.0


def rows_key(rows: np.ndarray, total: int) -> str:
    """``"all"`` if ``rows`` holds every molecule (any order: the cache then stores them in QM9 order),
    else ``"<count>-<sha1 prefix of the row list>"``."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == total and np.array_equal(np.sort(rows), np.arange(total)):
        return "all"
    return f"{len(rows)}-{hashlib.sha1(rows.tobytes()).hexdigest()[:12]}"


def cache_meta(key: str) -> dict:
    return {"version": CACHE_VERSION, "qm9pack": qm9pack_version(), "rows": key}


def cache_path(data_dir: str | os.PathLike, key: str) -> Path:
    meta = cache_meta(key)
    return Path(data_dir) / "qm9" / f"processed_v{meta['version']}_qm9pack{meta['qm9pack']}_{key}.pt"


def _work(item: tuple[np.ndarray, np.ndarray, str]) -> tuple[np.ndarray, int, int]:
    return perceive_bonds(*item)


def process(raw: QM9Raw, rows: np.ndarray, workers: int = 2, progress: bool = True) -> dict:
    """Perceive bonds for ``raw`` rows ``rows`` and gather everything the dataset needs.

    Returns a dict of tensors (M = len(rows), A atoms, B bonds): ``row``, ``idx`` (M,),
    ``atom_ptr`` (M+1,), ``z`` (A,), ``pos`` (A, 3) float32 Å, ``bond_ptr`` (M+1,), ``bonds`` (B, 3)
    ``(i, j, type)`` local atom indices, ``method`` (M,) index into METHODS, ``smiles_match`` (M,)
    in {-1, 0, 1}, ``props`` (M, 12) float64, ``polarizability`` (M, 6) float64, ``symmetry_axis``
    (M,) int8 (:func:`~steerable.data.qm9_polarizability.exact_symmetry_axes`, from the float64
    positions: ``pos`` is float32); and lists ``name``, ``smiles``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts, ends = raw.atom_ptr[rows], raw.atom_ptr[rows + 1]
    items = [
        (raw.z[s:e], raw.pos[s:e], str(raw.smiles[r])) for r, s, e in zip(rows, starts, ends, strict=True)
    ]
    bar = dict(total=len(items), desc="QM9 bonds", disable=not progress, mininterval=2.0)
    if workers > 1 and len(items) > 256:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = list(tqdm(pool.imap(_work, items, chunksize=256), **bar))
    else:
        results = [_work(item) for item in tqdm(items, **bar)]
    bonds = [r[0] for r in results]
    n_atoms = ends - starts
    atom_index = (
        np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)]) if len(rows) else []
    )
    atom_ptr = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64)
    symmetry_axis = exact_symmetry_axes(raw.z[atom_index], raw.pos[atom_index], atom_ptr)
    return {
        "row": torch.from_numpy(rows),
        "idx": torch.from_numpy(raw.index[rows]),
        "atom_ptr": torch.from_numpy(atom_ptr),
        "z": torch.from_numpy(raw.z[atom_index]),
        "pos": torch.from_numpy(raw.pos[atom_index]).float(),
        "bond_ptr": torch.from_numpy(np.concatenate([[0], np.cumsum([len(b) for b in bonds])])).long(),
        "bonds": torch.from_numpy(np.concatenate(bonds) if bonds else np.zeros((0, 3), np.int64)),
        "method": torch.tensor([r[1] for r in results], dtype=torch.int8),
        "smiles_match": torch.tensor([r[2] for r in results], dtype=torch.int8),
        "props": torch.from_numpy(raw.props[rows]),
        "polarizability": torch.from_numpy(raw.polarizability[rows]),
        "symmetry_axis": torch.from_numpy(symmetry_axis).to(torch.int8),
        "name": raw.name[rows].tolist(),
        "smiles": raw.smiles[rows].tolist(),
    }


def temp_prefix(path: Path) -> str:
    """Name prefix of ``path``'s temporary siblings: ``.{name}.tmp-`` (then host, pid, random part)."""
    return f".{path.name}.tmp-"


def remove_stale_temp_files(path: Path, max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Delete temporary siblings of ``path`` last modified more than ``max_age_s`` ago.

    Only age tells a killed writer's leftover from a live one: on a shared file system the writer
    may run on another host, where its pid means nothing here.
    """
    removed, now = [], time.time()
    for tmp in path.parent.glob(f"{temp_prefix(path)}*"):
        try:
            if now - tmp.stat().st_mtime > max_age_s:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:  # renamed or removed meanwhile by its writer
            continue
    return removed


def save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` to a temporary sibling, fsync, then ``os.replace`` onto ``path``.

    The temporary name is unique across hosts (``.{name}.tmp-<host>-<pid>-<random>``, from
    ``mkstemp``) and the file gets the usual ``0o666 & ~umask`` permissions. Leftovers of writers
    killed more than a day ago (SIGKILL skips the cleanup below) are removed first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    prefix = f"{temp_prefix(path)}{socket.gethostname()}-{os.getpid()}-"
    descriptor, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            usual_permissions(handle.fileno())
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checked(path: Path, key: str) -> dict | None:
    """The cache at ``path`` if it exists, reads cleanly and its metadata matches; else None."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, weights_only=True)
    except Exception as err:  # truncated / corrupt file: rebuild rather than trust it
        log.warning("QM9 cache %s is unreadable (%s); rebuilding", path, err)
        return None
    if not isinstance(obj, dict) or obj.get("meta") != cache_meta(key):
        log.warning("QM9 cache %s has stale metadata; rebuilding", path)
        return None
    return obj


def select(cache: dict, positions: np.ndarray) -> dict:
    """Sub-cache of the molecules at ``positions`` (indices into ``cache``'s molecule axis)."""
    atom_ptr, bond_ptr = cache["atom_ptr"].numpy(), cache["bond_ptr"].numpy()
    atoms = np.concatenate([np.arange(atom_ptr[p], atom_ptr[p + 1]) for p in positions])
    bonds = np.concatenate([np.arange(bond_ptr[p], bond_ptr[p + 1]) for p in positions])
    pos_t = torch.from_numpy(np.asarray(positions, dtype=np.int64))
    per_molecule = ("row", "idx", "method", "smiles_match", "props", "polarizability", "symmetry_axis")
    out = {k: cache[k][pos_t] for k in per_molecule}
    out["atom_ptr"] = torch.from_numpy(np.concatenate([[0], np.cumsum(np.diff(atom_ptr)[positions])]))
    out["bond_ptr"] = torch.from_numpy(np.concatenate([[0], np.cumsum(np.diff(bond_ptr)[positions])]))
    out["z"], out["pos"] = cache["z"][atoms], cache["pos"][atoms]
    out["bonds"] = cache["bonds"][bonds]
    out["name"] = [cache["name"][p] for p in positions]
    out["smiles"] = [cache["smiles"][p] for p in positions]
    out["meta"] = cache["meta"]
    return out


def load_or_build(
    data_dir: str | os.PathLike,
    rows: np.ndarray,
    total: int,
    read_raw: Callable[[], QM9Raw],
    workers: int = 2,
    progress: bool = True,
) -> dict:
    """Processed molecules for ``rows`` (in that order), from the full cache, a subset cache, or
    built now (and then saved). ``read_raw`` is called only when something must be built."""
    rows = np.asarray(rows, dtype=np.int64)
    key = rows_key(rows, total)
    full = load_checked(cache_path(data_dir, "all"), "all")
    if full is None and key == "all":
        full = _build(data_dir, np.arange(total), "all", read_raw, workers, progress)
    if full is not None:
        return full if np.array_equal(rows, np.arange(total)) else select(full, rows)
    cached = load_checked(cache_path(data_dir, key), key)
    return cached if cached is not None else _build(data_dir, rows, key, read_raw, workers, progress)


def _build(
    data_dir: str | os.PathLike,
    rows: np.ndarray,
    key: str,
    read_raw: Callable[[], QM9Raw],
    workers: int,
    progress: bool,
) -> dict:
    path = cache_path(data_dir, key)
    log.info("building QM9 cache %s (%d molecules, %d workers)", path, len(rows), workers)
    built = process(read_raw(), rows, workers=workers, progress=progress)
    built["meta"] = cache_meta(key)
    save_atomic(built, path)
    return built


def summarize(cache: dict) -> dict[str, int]:
    """Counts for the dataset summary: molecules, atoms, bonds, per-method and SMILES checks."""
    method = cache["method"].long()
    summary = {"molecules": len(method), "atoms": len(cache["z"]), "bonds": len(cache["bonds"])}
    for k, name in enumerate(METHODS):
        summary[f"bonds_by_{name}"] = int((method == k).sum())
    summary["smiles_mismatch"] = int((cache["smiles_match"] == 0).sum())
    return summary
