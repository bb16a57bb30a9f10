"""ModelNet-40 on disk: format detection and readers for the three layouts people have.

- ``hdf5``: ``ply_data_{train,test}*.h5`` with ``data (N, P, 3)``, ``label (N, 1)`` and optional
  ``normal (N, P, 3)``; optional ``train_files.txt``/``test_files.txt`` (entries resolved by
  basename, so foreign prefixes like ``data/modelnet40_ply_hdf5_2048/`` work), ``shape_names.txt``
  and ``*_id2file.json``. Any number of points per shape.
- ``off``: the official raw meshes ``<class>/{train,test}/<class>_XXXX.off`` (also PyG's ``raw/``);
  points are sampled on the surface (area-weighted, optionally thinned by farthest point sampling)
  and cached.
- ``normal_resampled``: ``modelnet40_normal_resampled`` text files ``<class>/<shape_id>.txt`` with
  ``x,y,z,nx,ny,nz`` per line, listed in ``modelnet40_{train,test}.txt``; parsed once and cached.

Every reader returns a :class:`CloudSet` of raw (un-normalised) points with the standard
alphabetical class numbering.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

from steerable.data.mesh import read_off, sample_surface
from steerable.data.modelnet_layout import (
    CLASS_NAMES,
    EXPECTED_LAYOUTS,
    SPLITS,
    CloudSet,
    find_layout,
    read_names,
)
from steerable.geometry import farthest_point_sampling
from steerable.io_utils import usual_permissions

__all__ = ["CLASS_NAMES", "CloudSet", "find_layout", "load_split", "read_hdf5", "read_normal_resampled",
           "read_off_dir", "sample_off"]

CACHE_VERSION = 2  # 2: strict readers (v1 caches may hold truncated or misparsed clouds)
OFF_SAMPLINGS = ("uniform", "fps")


def _shape_ids(h5_file: Path, rows: int) -> list[str]:
    """Shape ids from ``ply_data_train_0_id2file.json`` next to ``ply_data_train0.h5``, if any."""
    stem = h5_file.stem.rstrip("0123456789")
    id_file = h5_file.with_name(f"{stem}_{h5_file.stem[len(stem):]}_id2file.json")
    if id_file.is_file():
        ids = [Path(s).stem for s in json.loads(id_file.read_text())]
        if len(ids) == rows:
            return ids
    return [f"{h5_file.name}:{i}" for i in range(rows)]


def _nonfinite_rows(values: np.ndarray) -> np.ndarray:
    """Indices ``(K,)`` of the rows of ``values (N, ...)`` that hold NaN or inf."""
    return np.flatnonzero(~np.isfinite(values).all(axis=tuple(range(1, values.ndim))))


def _read_coordinates(h5, path: Path, key: str) -> torch.Tensor:
    """Float32 ``(N, P, 3)`` from dataset ``key`` (first three columns), which must be finite."""
    values = np.asarray(h5[key][..., :3], dtype=np.float32)
    bad = _nonfinite_rows(values)
    if bad.size:
        raise ValueError(f"{path}: dataset {key!r} has NaN/inf coordinates in rows {bad[:10].tolist()}")
    return torch.from_numpy(values)


def _read_labels(h5, path: Path, num_classes: int) -> torch.Tensor:
    """Long ``(N,)`` from dataset ``label (N[, 1])``: class indices in ``[0, num_classes)``, or fail."""
    values = np.asarray(h5["label"]).reshape(-1)
    bad = np.flatnonzero(~np.isin(values, np.arange(num_classes)))
    if bad.size:
        raise ValueError(f"{path}: dataset 'label' has values {values[bad[:10]].tolist()} in rows "
                         f"{bad[:10].tolist()}, not class indices in [0, {num_classes})")
    return torch.from_numpy(values.astype(np.int64))


def read_hdf5(directory: Path, split: str, use_normals: bool = False) -> CloudSet:
    """Read one split of an HDF5 point-cloud release (see module docstring)."""
    import h5py

    listing = directory / f"{split}_files.txt"
    if listing.is_file():
        files = [directory / Path(line.strip()).name for line in listing.read_text().splitlines()
                 if line.strip()]
    else:
        files = sorted(directory.glob(f"ply_data_{split}*.h5"),
                       key=lambda p: (len(p.name), p.name))
    missing = [str(f) for f in files if not f.is_file()]
    if listing.is_file() and not files:
        raise FileNotFoundError(f"{listing} lists no HDF5 files of split {split!r}")
    if missing:
        raise FileNotFoundError(f"{listing} lists {len(files)} HDF5 files of split {split!r}; "
                                f"{len(missing)} are missing, e.g. {missing[:3]}")
    if not files:
        raise FileNotFoundError(f"HDF5 files for split {split!r} not found in {directory}: "
                                f"no {split}_files.txt and no ply_data_{split}*.h5")
    names_file = directory / "shape_names.txt"
    names = read_names(names_file) if names_file.is_file() else CLASS_NAMES
    points, normals, labels, ids = [], [], [], []
    for f in files:
        try:
            h5 = h5py.File(f, "r")
        except OSError as err:
            raise ValueError(f"{f}: not a readable HDF5 file ({err})") from None
        with h5:
            for key in ("data", "label"):
                if key not in h5:
                    raise ValueError(f"{f}: missing dataset {key!r} (has {sorted(h5.keys())})")
            if use_normals and "normal" not in h5:
                raise ValueError(f"{f}: use_normals=True but the file has no 'normal' dataset")
            points.append(_read_coordinates(h5, f, "data"))
            labels.append(_read_labels(h5, f, len(names)))
            if len(labels[-1]) != len(points[-1]):
                raise ValueError(f"{f}: {len(labels[-1])} labels for {len(points[-1])} shapes in 'data'")
            if use_normals:
                normals.append(_read_coordinates(h5, f, "normal"))
        ids += _shape_ids(f, len(labels[-1]))
    size = min(p.shape[1] for p in points)  # files with different P: keep the common prefix
    return CloudSet(torch.cat([p[:, :size] for p in points]), torch.cat(labels),
                    torch.cat([n[:, :size] for n in normals]) if use_normals else None, ids, names)


def _fingerprint(files: list[Path], base: Path) -> str:
    h = hashlib.sha1()
    for f in files:
        stat = f.stat()  # an edit that keeps the size still changes the modification time
        h.update(f"{f.relative_to(base)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def _cached(path: Path | None, key: dict, build) -> dict:
    """Load ``path`` if it holds ``key``; else ``build()`` and write it atomically (temp + rename)."""
    if path is not None and path.is_file():
        blob = torch.load(path, weights_only=False)
        if blob.get("key") == key:
            return blob
    blob = build()
    blob["key"] = key
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            usual_permissions(fd)
            with os.fdopen(fd, "wb") as fh:
                torch.save(blob, fh)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return blob


def _shape_seed(seed: int, shape_id: str) -> list[int]:
    return [seed, zlib.crc32(shape_id.encode())]


def sample_off(path: Path, n: int, sampling: str, seed: int, oversample: int = 4,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``n`` surface points + face normals ``(n, 3)`` from one OFF file (deterministic).

    ``sampling="uniform"`` draws area-weighted points; ``"fps"`` draws ``oversample * n`` and keeps
    a farthest-point subset (more even coverage).
    """
    if sampling not in OFF_SAMPLINGS:
        raise ValueError(f"unknown OFF sampling {sampling!r}; valid: {', '.join(OFF_SAMPLINGS)}")
    verts, faces = read_off(path)
    rng = np.random.default_rng(_shape_seed(seed, path.stem))
    try:
        points, normals, _ = sample_surface(verts, faces, n if sampling == "uniform" else oversample * n, rng)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if sampling == "fps":
        keep = farthest_point_sampling(torch.from_numpy(points), n=n).numpy()
        points, normals = points[keep], normals[keep]
    return points.astype(np.float32), normals.astype(np.float32)


def _sample_one(args: tuple) -> tuple[np.ndarray, np.ndarray]:
    torch.set_num_threads(1)
    return sample_off(*args)


def _sample_all(files: list[Path], n: int, sampling: str, seed: int, processes: int) -> list:
    """:func:`sample_off` over ``files``, in ``processes`` worker processes when > 1."""
    jobs = [(f, n, sampling, seed) for f in files]
    if processes <= 1 or len(jobs) < 2:
        return [sample_off(*job) for job in jobs]
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(processes) as pool:
        return pool.map(_sample_one, jobs, chunksize=max(1, len(jobs) // (8 * processes)))


def read_off_dir(directory: Path, split: str, points_per_shape: int = 2048,
                 sampling: str = "uniform", seed: int = 0, cache_dir: Path | None = None,
                 processes: int = 1) -> CloudSet:
    """Sample every mesh of ``<class>/<split>/*.off`` under ``directory`` (cached in ``cache_dir``).

    Surface samples are a deterministic function of ``(seed, shape id)``; ``processes > 1``
    samples meshes in parallel (same result).
    """
    if sampling not in OFF_SAMPLINGS:
        raise ValueError(f"unknown OFF sampling {sampling!r}; valid: {', '.join(OFF_SAMPLINGS)}")
    unknown = sorted(p.name for p in directory.iterdir()
                     if p.is_dir() and (p / split).is_dir() and p.name not in CLASS_NAMES)
    if unknown:
        raise ValueError(f"{directory}: class directories {unknown} are not ModelNet-40 classes")
    files = sorted(itertools.chain.from_iterable(
        (directory / c / split).glob("*.off") for c in CLASS_NAMES))
    key = {"version": CACHE_VERSION, "format": "off", "split": split, "n": points_per_shape,
           "sampling": sampling, "seed": seed, "files": _fingerprint(files, directory)}
    name = f"off_{split}_{points_per_shape}_{sampling}_s{seed}_v{CACHE_VERSION}_{key['files']}.pt"

    def build() -> dict:
        clouds = _sample_all(files, points_per_shape, sampling, seed, processes)
        return {"points": torch.from_numpy(np.stack([c[0] for c in clouds])) if clouds
                else torch.zeros(0, points_per_shape, 3),
                "normals": torch.from_numpy(np.stack([c[1] for c in clouds])) if clouds
                else torch.zeros(0, points_per_shape, 3),
                "labels": torch.tensor([CLASS_NAMES.index(f.parent.parent.name) for f in files],
                                       dtype=torch.long),
                "shape_ids": [f.stem for f in files]}

    blob = _cached(cache_dir / name if cache_dir else None, key, build)
    return CloudSet(blob["points"], blob["labels"], blob["normals"], blob["shape_ids"])


def _parse_text_lines(path: Path, lines: list[tuple[int, str]]) -> np.ndarray:
    """Careful path of :func:`_read_text_cloud`: ``(len(lines), 6)``, failing at the first bad line."""
    values = np.empty((len(lines), 6), dtype=np.float32)
    for i, (lineno, line) in enumerate(lines):
        row = line.replace(",", " ").split()
        if len(row) != 6:
            raise ValueError(f"{path}:{lineno}: expected 'x,y,z,nx,ny,nz', got {line.strip()!r}")
        try:
            values[i] = np.asarray(row, dtype=np.float32)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: non-numeric values in {line.strip()!r}") from None
    return values


def _read_text_cloud(path: Path, n: int | None) -> np.ndarray:
    """The first ``n`` points (all if ``None``) of a text cloud as ``(n, 6)`` float32 ``x,y,z,nx,ny,nz``.

    Fails naming the file and line of a malformed or non-finite point, or the file if it has fewer
    than ``n`` points.
    """
    with path.open() as fh:
        lines = list(itertools.islice(((i, line) for i, line in enumerate(fh, 1) if line.strip()), n))
    try:  # fast path: six numbers on every line (ragged or non-numeric lines raise)
        values = np.asarray([line.replace(",", " ").split() for _, line in lines],
                            dtype=np.float32).reshape(len(lines), 6)
    except ValueError:
        values = _parse_text_lines(path, lines)
    bad = _nonfinite_rows(values)
    if bad.size:
        lineno, line = lines[bad[0]]
        raise ValueError(f"{path}:{lineno}: NaN/inf values in {line.strip()!r}")
    if n is not None and len(values) < n:
        raise ValueError(f"{path}: {len(values)} points, fewer than points_per_shape={n}")
    return values


def _stack_clouds(files: list[Path], clouds: list[np.ndarray]) -> torch.Tensor:
    """``(S, P, 6)`` from the clouds ``(P, 6)`` read from ``files``; fails unless all have ``P`` points."""
    sizes = [len(c) for c in clouds]
    if len(set(sizes)) > 1:  # only with points_per_shape=None
        short = int(np.argmin(sizes))
        raise ValueError(f"{files[short]}: {sizes[short]} points, but {files[int(np.argmax(sizes))]} has "
                         f"{max(sizes)}; set points_per_shape <= {sizes[short]} to read as many from each")
    return torch.from_numpy(np.stack(clouds)) if clouds else torch.zeros(0, 0, 6)


def read_normal_resampled(directory: Path, split: str, points_per_shape: int | None = 2048,
                          cache_dir: Path | None = None) -> CloudSet:
    """Read the first ``points_per_shape`` points (all if ``None``) of each listed text cloud."""
    names = read_names(directory / "modelnet40_shape_names.txt")
    listing = directory / f"modelnet40_{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} not found (expected layout:\n{EXPECTED_LAYOUTS})")
    ids = list(read_names(listing))
    classes = [sid.rsplit("_", 1)[0] for sid in ids]
    bad = sorted({c for c in classes if c not in names})
    if bad:
        raise ValueError(f"{listing}: classes {bad} are not in modelnet40_shape_names.txt")
    files = [directory / c / f"{sid}.txt" for c, sid in zip(classes, ids, strict=True)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{listing}: {len(missing)} of its {len(files)} listed files are missing, "
                                f"e.g. {missing[:3]}")
    key = {"version": CACHE_VERSION, "format": "normal_resampled", "split": split,
           "n": points_per_shape, "files": _fingerprint(files, directory)}
    name = f"normal_resampled_{split}_{points_per_shape}_v{CACHE_VERSION}_{key['files']}.pt"

    def build() -> dict:
        data = _stack_clouds(files, [_read_text_cloud(f, points_per_shape) for f in files])
        return {"points": data[..., :3].contiguous(), "normals": data[..., 3:].contiguous(),
                "labels": torch.tensor([names.index(c) for c in classes], dtype=torch.long),
                "shape_ids": ids}

    blob = _cached(cache_dir / name if cache_dir else None, key, build)
    return CloudSet(blob["points"], blob["labels"], blob["normals"], blob["shape_ids"], names)


def load_split(root: str | Path, split: str, format: str = "auto", use_normals: bool = False,
               points_per_shape: int = 2048, off_sampling: str = "uniform", seed: int = 0,
               cache_dir: str | Path | None = None, processes: int = 1) -> CloudSet:
    """Detect the layout under ``root`` and read ``split`` (``train`` or ``test``).

    ``points_per_shape`` applies to the sampled/text formats (HDF5 keeps what the file has);
    ``seed`` fixes the OFF surface samples; ``cache_dir`` (``None``: no cache) stores processed
    OFF/text clouds; ``processes`` parallelises OFF sampling.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    fmt, directory = find_layout(root, format)
    cache = Path(cache_dir) if cache_dir is not None else None
    if fmt == "hdf5":
        clouds = read_hdf5(directory, split, use_normals)
    elif fmt == "off":
        clouds = read_off_dir(directory, split, points_per_shape, off_sampling, seed, cache, processes)
    else:
        clouds = read_normal_resampled(directory, split, points_per_shape, cache)
    if not use_normals:
        clouds.normals = None
    return clouds
