"""Rotate qm9pack's polarizability tensors into the frame of the molecule's coordinates.

``qm9_polarizability.csv`` does **not** give the tensor in the frame of ``XYZ_Ang``: its off-diagonal
entries are ~4 % of the diagonal (median) while the coordinate-frame shape tensor's are ~56 %, and
the commutator with that shape tensor is large. The tensors are in a principal-axes frame of the
nuclear charge distribution (Gaussian's "standard orientation"). Measured on the whole dataset,
that frame is, for every molecule whose charge inertia is not degenerate:

- origin at the centre of nuclear charge; axes the eigenvectors of ``Q = Σ_a Z_a r_a r_aᵀ``
  sorted by **decreasing** extent (x the longest axis). Evidence: for the 11,265 molecules with
  one mirror plane (two zero off-diagonals), the zero-off-diagonal axis is the mirror normal in
  this order in 99.9 % of cases; for asymmetric molecules, the off-diagonal magnitudes correlate
  with a bond-direction model pair by pair (r = 0.58, 0.71, 0.66; across pairs ≤ 0.23).
- signs: y and z point along the positive charge-weighted third moment ``Σ Z (r·e)³``, and
  x = y × z. Evidence: off-diagonal signs then agree with a bond-direction model in 69 / 78 / 70 %
  of cases (50 % for every other rule tried: first atom, largest component, det −1, …).

When y or z is a mirror axis (its third moment vanishes; ~4 % of molecules) the source's sign for
it was effectively a coin toss: no geometric rule tried beats 50 % there. Those signs are fixed by a
deterministic, rotation-equivariant rule and counted (``mirror_sign_guessed``): one off-diagonal
entry of such tensors may have the wrong sign.

For symmetric tops (two equal charge moments) the order of the unique axis differs (acetylene puts
its axis on z, acetonitrile on x), so there the tensor's own unique eigen-axis is matched to the
geometry's unique axis. Tensors of highly symmetric molecules with non-degenerate moments (C2v,
D2h: ~0.3 % of QM9) follow the rule above; that is the assumption least checked by this data.
"""

from __future__ import annotations

import numpy as np

DEGENERATE_RTOL = 1e-3  # relative gap of charge moments below which two axes are "equal"
EQUAL_ATOL = 5e-3  # bohr³: tensor entries are given with 3 decimals
SKEW_RTOL = 1e-4  # |Σ Z p³| / Σ Z |p|³ below which an axis counts as a mirror axis


def charge_frames(
    z: np.ndarray, pos: np.ndarray, atom_ptr: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-handed principal frames of the nuclear charge distribution, one per molecule.

    Args:
        z: (A,) atomic numbers. pos: (A, 3) Å. atom_ptr: (M+1,) molecule boundaries.

    Returns:
        frames: (M, 3, 3); column k is axis k in coordinate-frame components (see module doc).
        moments: (M, 3) ``Σ Z (r·e_k)²`` in decreasing order, Å².
        sign_fixed: (M,) bool, molecules where y or z is a mirror axis (no third moment), so the
            source's sign for it was arbitrary; here it is fixed by x's third moment being ≥ 0.
    """
    n = np.diff(atom_ptr)
    mol = np.repeat(np.arange(len(n)), n)
    q = z.astype(np.float64)

    def per_molecule(values: np.ndarray) -> np.ndarray:
        return np.bincount(mol, values, minlength=len(n))

    centre = np.stack([per_molecule(q * pos[:, a]) for a in range(3)], 1) / per_molecule(q)[:, None]
    r = pos - centre[mol]
    q_tensor = np.zeros((len(n), 3, 3))
    for a in range(3):
        for b in range(a, 3):
            q_tensor[:, a, b] = q_tensor[:, b, a] = per_molecule(q * r[:, a] * r[:, b])
    moments, frames = np.linalg.eigh(q_tensor)
    moments, frames = moments[:, ::-1], frames[:, :, ::-1].copy()

    def third_moments(k: int) -> tuple[np.ndarray, np.ndarray]:
        proj = np.einsum("na,na->n", r, frames[mol, :, k])
        return per_molecule(q * proj**3), per_molecule(q * np.abs(proj) ** 3)

    skews = [third_moments(k) for k in range(3)]
    mirror = [np.abs(s) <= SKEW_RTOL * np.maximum(size, 1e-12) for s, size in skews]
    for k in (1, 2):
        frames[:, :, k] *= np.where(skews[k][0] < 0, -1.0, 1.0)[:, None]
    frames[:, :, 0] = np.cross(frames[:, :, 1], frames[:, :, 2])
    x_skew = third_moments(0)[0]
    fixable = (mirror[1] | mirror[2]) & ~mirror[0]
    flip = fixable & (x_skew < 0)
    axis = np.where(mirror[1], 1, 2)
    frames[flip, :, axis[flip]] *= -1
    frames[flip, :, 0] *= -1
    return frames, moments, fixable


def _unique_axis(values: np.ndarray) -> np.ndarray:
    """For (M, 3) values with two (nearly) equal entries, the index of the other one; else -1."""
    out = np.full(len(values), -1)
    for k, (i, j) in enumerate(((1, 2), (0, 2), (0, 1))):
        equal = np.abs(values[:, i] - values[:, j]) <= EQUAL_ATOL
        out[equal & (out < 0)] = k
    return out


def to_coordinate_frame(
    tensors: np.ndarray, z: np.ndarray, pos: np.ndarray, atom_ptr: np.ndarray
) -> tuple[np.ndarray, dict[str, int]]:
    """Tensors (M, 3, 3) given in the charge frame → the frame of ``pos`` (``R A Rᵀ``).

    Returns the rotated tensors and counts for the dataset summary: ``symmetric_tops_rematched``
    and ``mirror_sign_guessed`` (molecules whose tensor has an off-diagonal entry whose sign the
    source left arbitrary; see :func:`charge_frames`).
    """
    frames, moments, sign_fixed = charge_frames(z, pos, atom_ptr)
    off_diagonal = np.abs(tensors[:, [0, 0, 1], [1, 2, 2]]).max(1) > EQUAL_ATOL
    scale = np.maximum(moments[:, :1], 1e-12)
    gap01 = (moments[:, 0] - moments[:, 1]) / scale[:, 0] < DEGENERATE_RTOL
    gap12 = (moments[:, 1] - moments[:, 2]) / scale[:, 0] < DEGENERATE_RTOL
    geometric_unique = np.where(gap12 & ~gap01, 0, np.where(gap01 & ~gap12, 2, -1))
    tensor_unique = _unique_axis(np.diagonal(tensors, axis1=1, axis2=2))
    remap = (geometric_unique >= 0) & (tensor_unique >= 0) & (geometric_unique != tensor_unique)
    for m in np.flatnonzero(remap):
        g, t = geometric_unique[m], tensor_unique[m]
        others_g = [k for k in range(3) if k != g]
        others_t = [k for k in range(3) if k != t]
        rotated = np.empty((3, 3))
        rotated[:, t] = frames[m][:, g]
        rotated[:, others_t] = frames[m][:, others_g]
        frames[m] = rotated
    counts = {
        "symmetric_tops_rematched": int(remap.sum()),
        "mirror_sign_guessed": int((sign_fixed & off_diagonal).sum()),
    }
    rotated = frames @ tensors @ frames.transpose(0, 2, 1)
    return 0.5 * (rotated + rotated.transpose(0, 2, 1)), counts  # symmetric to the last bit
