"""Random rigid transforms of point-cloud batches (data augmentation, rotation protocols, TTA).

The rotation protocols used by the experiments are ``none``, ``z`` (rotations about the z axis),
``so3`` (uniform rotations) and ``o3`` (uniform rotations, times a reflection with probability 1/2).
Vector-valued node attributes (normals, velocities) rotate together with the positions.
"""

from __future__ import annotations

import math

import torch

ROTATION_KINDS = ("none", "z", "so3", "o3")


def random_orthogonal(kind: str, n: int = 1, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sample ``n`` random 3x3 orthogonal matrices of the given protocol.

    Args:
        kind: one of ``none``, ``z``, ``so3``, ``o3``.
        n: number of matrices.
        generator: optional torch generator for reproducibility.

    Returns:
        Tensor of shape ``(n, 3, 3)``; ``so3`` samples are Haar-uniform.
    """
    if kind not in ROTATION_KINDS:
        raise ValueError(f"unknown rotation kind {kind!r}; valid: {', '.join(ROTATION_KINDS)}")
    if kind == "none":
        return torch.eye(3, dtype=dtype).expand(n, 3, 3).clone()
    if kind == "z":
        theta = torch.rand(n, generator=generator, dtype=torch.float64) * 2 * math.pi
        c, s = torch.cos(theta), torch.sin(theta)
        rot = torch.zeros(n, 3, 3, dtype=torch.float64)
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = c, -s, s, c
        rot[:, 2, 2] = 1.0
        return rot.to(dtype)
    # Haar-uniform rotation from a normalised random quaternion.
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    rot = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], dim=1).view(n, 3, 3)
    if kind == "o3":
        flip = torch.rand(n, generator=generator) < 0.5
        rot[flip] = -rot[flip]
    return rot.to(dtype)


def rotate_batch(batch, rotations: torch.Tensor, vector_keys: tuple[str, ...] = ("normal", "vel")):
    """Apply one orthogonal matrix per graph to ``pos`` and the vector attributes of a PyG batch.

    Args:
        batch: a ``torch_geometric`` ``Data``/``Batch`` with ``pos (N, 3)`` and optionally ``batch (N,)``.
        rotations: ``(B, 3, 3)`` matrices, one per graph (``B = 1`` for a single ``Data``).
        vector_keys: node attributes of shape ``(N, 3)`` that transform like positions.

    Returns:
        A shallow copy of ``batch`` whose positions/vectors are ``x @ R^T`` per graph.
    """
    out = batch.clone()
    index = getattr(batch, "batch", None)
    if index is None:
        index = torch.zeros(batch.pos.shape[0], dtype=torch.long, device=batch.pos.device)
    per_node = rotations.to(batch.pos)[index]  # (N, 3, 3)
    for key in ("pos", *vector_keys):
        value = getattr(batch, key, None)
        if value is not None:
            setattr(out, key, torch.einsum("nij,nj->ni", per_node, value))
    return out
