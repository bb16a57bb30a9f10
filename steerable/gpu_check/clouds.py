"""Synthetic ModelNet-40 in the HDF5 release layout, for throughput runs on machines without the data.

:func:`write_hdf5_dataset` writes ``ply_data_train0.h5``, ``ply_data_test0.h5`` (datasets
``data (S, P, 3)`` float32 and ``label (S, 1)`` uint8, as in the ``modelnet40_ply_hdf5_2048`` release),
``train_files.txt``, ``test_files.txt`` and ``shape_names.txt``, which
:class:`steerable.data.modelnet.ModelNet40DataModule` reads with ``format=auto``.

Class ``c`` is a surface family (ellipsoid, box, cylinder, torus: ``c % 4``) with class-specific
axis ratios (``c // 4``), sampled uniformly in parameter space, with a random rotation about z and
Gaussian jitter; the classes are separable, so a short run learns above chance. Only throughput is
meant to be measured on it.

>>> # write_hdf5_dataset(Path("/tmp/mn40"), n_train=2048, n_test=512, points=1024)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from steerable.data.modelnet_layout import CLASS_NAMES

FAMILIES = ("ellipsoid", "box", "cylinder", "torus")


def class_axes(label: int) -> np.ndarray:
    """Axis lengths ``(3,)`` of class ``label``: ten aspect ratios per surface family."""
    step = label // len(FAMILIES)
    return np.array([1.0, 0.3 + 0.07 * step, 0.15 + 0.085 * ((3 * step) % 10)])


def sample_shape(label: int, points: int, rng: np.random.Generator) -> np.ndarray:
    """``(points, 3)`` float32 points on a random instance of class ``label``."""
    family = FAMILIES[label % len(FAMILIES)]
    u, v = rng.uniform(0, 2 * np.pi, points), rng.uniform(-1, 1, points)
    if family == "ellipsoid":
        s = np.sqrt(1 - v**2)
        unit = np.stack([s * np.cos(u), s * np.sin(u), v], axis=1)
    elif family == "box":
        unit = rng.uniform(-1, 1, (points, 3))
        face = rng.integers(0, 3, points)
        unit[np.arange(points), face] = np.sign(v)
    elif family == "cylinder":
        unit = np.stack([np.cos(u), np.sin(u), v], axis=1)
    else:
        tube = rng.uniform(0, 2 * np.pi, points)
        ring = 1 + 0.35 * np.cos(tube)
        unit = np.stack([ring * np.cos(u), ring * np.sin(u), 0.35 * np.sin(tube)], axis=1) / 1.35
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1]])
    cloud = (unit * class_axes(label) * rng.uniform(0.9, 1.1)) @ rot.T
    return (cloud + 0.01 * rng.standard_normal(cloud.shape)).astype(np.float32)


def write_hdf5_dataset(root: Path, n_train: int, n_test: int, points: int = 1024, seed: int = 0) -> Path:
    """Write a synthetic ModelNet-40 of ``n_train`` / ``n_test`` shapes (classes balanced) under ``root``.

    Returns:
        ``root``, for ``dataset.root=…``.
    """
    import h5py

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        labels = np.arange(count) % len(CLASS_NAMES)
        clouds = np.stack([sample_shape(int(c), points, rng) for c in labels])
        name = f"ply_data_{split}0.h5"
        tmp = root / f".{name}.tmp"
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("data", data=clouds)
            h5.create_dataset("label", data=labels.astype(np.uint8)[:, None])
        tmp.replace(root / name)
        (root / f"{split}_files.txt").write_text(f"data/modelnet40_ply_hdf5_2048/{name}\n")
    (root / "shape_names.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    return root
