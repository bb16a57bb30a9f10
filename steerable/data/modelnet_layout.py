"""ModelNet-40 on disk: class list, the in-memory split type, and layout detection.

Three layouts are recognised under a data root (itself or sub-directories up to depth 2), in this
priority: ``hdf5`` point clouds, ``normal_resampled`` text clouds, raw ``off`` meshes. See
:mod:`steerable.data.modelnet_io` for the readers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

CLASS_NAMES: tuple[str, ...] = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard",
    "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio",
    "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase",
    "wardrobe", "xbox",
)
FORMATS = ("hdf5", "normal_resampled", "off")  # auto-detection priority
SPLITS = ("train", "test")
EXPECTED_LAYOUTS = (
    "  hdf5:             ply_data_{train,test}*.h5 (datasets data, label[, normal]), optional "
    "train_files.txt/test_files.txt, shape_names.txt\n"
    "  normal_resampled: modelnet40_{train,test}.txt, modelnet40_shape_names.txt, "
    "<class>/<shape_id>.txt with lines x,y,z,nx,ny,nz\n"
    "  off:              <class>/{train,test}/<class>_XXXX.off (official raw ModelNet40 layout)"
)


@dataclass
class CloudSet:
    """One split in memory.

    Attributes:
        points: ``(S, P, 3)`` float32 raw coordinates.
        labels: ``(S,)`` long class indices into ``class_names``.
        normals: ``(S, P, 3)`` float32 unit normals, or ``None``.
        shape_ids: ``S`` identifiers such as ``airplane_0001``.
        class_names: names indexed by label.
    """

    points: torch.Tensor
    labels: torch.Tensor
    normals: torch.Tensor | None
    shape_ids: list[str]
    class_names: tuple[str, ...] = CLASS_NAMES

    def __len__(self) -> int:
        return self.points.shape[0]


def _is_hdf5(d: Path) -> bool:
    return any(d.glob("ply_data_*.h5")) or (
        (d / "train_files.txt").is_file() and any(d.glob("*.h5")))


def _is_normal_resampled(d: Path) -> bool:
    return (d / "modelnet40_train.txt").is_file() or (d / "modelnet40_shape_names.txt").is_file()


def _is_off(d: Path) -> bool:
    return any(any((d / c / s).glob("*.off")) for c in CLASS_NAMES for s in SPLITS if (d / c).is_dir())


_DETECT = {"hdf5": _is_hdf5, "normal_resampled": _is_normal_resampled, "off": _is_off}


def find_layout(root: str | Path, format: str = "auto") -> tuple[str, Path]:
    """Locate ModelNet-40 data under ``root`` (itself or sub-directories up to depth 2).

    Returns:
        ``(format, directory)``; with ``format="auto"`` the first found in :data:`FORMATS` order.

    Raises:
        FileNotFoundError: listing the expected layouts when nothing matches.
    """
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"unknown ModelNet format {format!r}; valid: auto, {', '.join(FORMATS)}")
    root = Path(root).expanduser()
    if root.is_dir():
        children = sorted(p for p in root.iterdir() if p.is_dir())
        grandchildren = sorted(q for p in children for q in p.iterdir() if q.is_dir())
        for fmt in FORMATS if format == "auto" else (format,):
            for d in (root, *children, *grandchildren):
                if _DETECT[fmt](d):
                    return fmt, d
    what = "does not exist" if not root.exists() else "contains no recognised ModelNet-40 data"
    wanted = "any format" if format == "auto" else f"format {format!r}"
    raise FileNotFoundError(
        f"ModelNet-40 root {str(root)!r} {what} ({wanted}; searched it and sub-directories up to "
        f"depth 2). Expected one of these layouts:\n{EXPECTED_LAYOUTS}")


def read_names(path: Path) -> tuple[str, ...]:
    """Non-empty stripped lines of a text file (class lists, shape-id lists)."""
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
