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
geometry's unique axis.

Exactly symmetric molecules follow their symmetry instead. 13 QM9 geometries are symmetric to within
1.4e-10 Å (a two-fold axis or a mirror plane maps every atom onto one of its kind); every other one
deviates by at least 1.4e-8 Å, however nearly symmetric. Apart from 5 linear ones (symmetric tops,
above), they are water (C2v) and 7 molecules with one mirror plane (Cs). Their tensors are in a frame
whose z is the symmetry axis (the two-fold axis, else the mirror normal), x the other principal axis
of smaller charge extent and y the larger. Checked against finite-field B3LYP polarizabilities in
the coordinate frame (cosine of the anisotropic parts; 6-31G(2df,p) for water, 6-31G* for the
others): water 0.999 with this rule (−0.47 with the general one, which put its largest component on
the C2 axis instead of H–H); the 7 Cs molecules 0.99–1.0 for five, 0.94 and 0.50 (−0.09 to −0.50
with the general rule). A mirror does not fix the in-plane axes, and the source's were 0–7° from
the charge axes, but 27.5° for ``CC(C)N=COCC#C`` (the 0.50), a frame the geometry does not
determine; those molecules are counted (``symmetric_in_plane_guessed``: z and the in-plane
eigenvalues are right, the in-plane directions a guess). Nearly symmetric molecules (formaldehyde,
acetone, ethylene oxide, pyrazine, cyclobutanone: 0.99–1.0) follow the general rule. Of the 130,831
molecules, 8 get a different tensor than under the general rule alone (water and the 7 Cs molecules).
"""

from __future__ import annotations

import numpy as np

DEGENERATE_RTOL = 1e-3  # relative gap of charge moments below which two axes are "equal"
SYMMETRY_ATOL = 1e-9  # Å: exactly symmetric (≤ 1.4e-10 in QM9) vs nearly (≥ 1.4e-8)
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
    axes = _PrincipalAxes(z, pos, atom_ptr)
    moments, frames, third_moments = axes.moments, axes.frames, axes.third_moments
    skews = [third_moments(k) for k in range(3)]
    mirror = _vanishing(skews)
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


class _PrincipalAxes:
    """Positions ``r`` (A, 3) about each molecule's charge centre; charge moments (M, 3) and their axes
    (M, 3, 3), in decreasing order."""

    def __init__(self, z: np.ndarray, pos: np.ndarray, atom_ptr: np.ndarray) -> None:
        n = np.diff(atom_ptr)
        self.mol, self.q, self.count = np.repeat(np.arange(len(n)), n), z.astype(np.float64), len(n)
        centre = np.stack([self.per_molecule(self.q * pos[:, a]) for a in range(3)], 1)
        self.r = pos - (centre / self.per_molecule(self.q)[:, None])[self.mol]
        q_tensor = np.zeros((len(n), 3, 3))
        for a in range(3):
            for b in range(a, 3):
                second = self.per_molecule(self.q * self.r[:, a] * self.r[:, b])
                q_tensor[:, a, b] = q_tensor[:, b, a] = second
        moments, frames = np.linalg.eigh(q_tensor)
        self.moments, self.frames = moments[:, ::-1], frames[:, :, ::-1].copy()

    def per_molecule(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.mol, values, minlength=self.count)

    def third_moments(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``Σ Z (r·e_k)³`` and ``Σ Z |r·e_k|³`` per molecule for the current axis k."""
        proj = np.einsum("na,na->n", self.r, self.frames[self.mol, :, k])
        return self.per_molecule(self.q * proj**3), self.per_molecule(self.q * np.abs(proj) ** 3)


    def non_degenerate(self) -> np.ndarray:
        scale = np.maximum(self.moments[:, 0], 1e-12)
        gaps = -np.diff(self.moments, axis=1) / scale[:, None]
        return (gaps >= DEGENERATE_RTOL).all(1)


def _vanishing(skews: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Per axis, (M,) bool: no third moment (a mirror normal, or an axis ⟂ a two-fold axis)."""
    return [np.abs(s) <= SKEW_RTOL * np.maximum(size, 1e-12) for s, size in skews]


def exact_symmetry_axes(z: np.ndarray, pos: np.ndarray, atom_ptr: np.ndarray) -> np.ndarray:
    """For each molecule the principal axis along which it is exactly symmetric, or −1.

    The axis is an index into the decreasing order of :func:`charge_frames`: the molecule's two-fold
    rotation axis, or when it has none the normal of its mirror plane, each mapping every atom onto an
    atom of the same element to within :data:`SYMMETRY_ATOL`. −1: no such axis, degenerate charge
    moments (symmetric tops), or several two-fold axes or mirrors without one (D2, D2h: none in QM9).
    Needs positions as QM9 writes them (float64; float32 rounding is ~1e-7 Å).

    Args:
        z: (A,) atomic numbers. pos: (A, 3) Å. atom_ptr: (M+1,) molecule boundaries.

    Returns:
        (M,) int in {−1, 0, 1, 2}.
    """
    axes = _PrincipalAxes(z, pos, atom_ptr)
    out = np.full(axes.count, -1)
    # a two-fold axis or mirror normal along e_k leaves some principal axis without a third moment
    vanishing = _vanishing([axes.third_moments(k) for k in range(3)])
    candidates = axes.non_degenerate() & np.any(vanishing, axis=0)
    for m in np.flatnonzero(candidates):
        atoms = slice(atom_ptr[m], atom_ptr[m + 1])
        r, elements = axes.r[atoms], z[atoms]
        rotations, mirrors = [], []
        for k in range(3):
            along = np.outer(r @ axes.frames[m, :, k], axes.frames[m, :, k])
            rotations.append(_maps_onto_itself(r, elements, 2 * along - r))
            mirrors.append(_maps_onto_itself(r, elements, r - 2 * along))
        if sum(rotations) == 1:
            out[m] = rotations.index(True)
        elif sum(rotations) == 0 and sum(mirrors) == 1:
            out[m] = mirrors.index(True)
    return out


def _maps_onto_itself(r: np.ndarray, elements: np.ndarray, image: np.ndarray) -> bool:
    """Whether every image atom lies within :data:`SYMMETRY_ATOL` of an atom of the same element."""
    distance = np.linalg.norm(image[:, None] - r[None], axis=-1)
    distance[elements[:, None] != elements[None]] = np.inf
    return bool(distance.min(1).max() <= SYMMETRY_ATOL)


def symmetric_frames(frames: np.ndarray, symmetry_axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames of exactly symmetric molecules: z the symmetry axis, x the other axis of smaller charge
    extent, y the larger (right-handed; see the module doc).

    Args:
        frames: (M, 3, 3) from :func:`charge_frames` (columns in decreasing charge extent).
        symmetry_axis: (M,) from :func:`exact_symmetry_axes`; −1 leaves a frame as it is.

    Returns:
        The frames, and (M,) bool: changed frames.
    """
    frames = frames.copy()
    changed = symmetry_axis >= 0
    for m in np.flatnonzero(changed):
        larger, smaller = (k for k in range(3) if k != symmetry_axis[m])
        x, y = frames[m, :, smaller].copy(), frames[m, :, larger].copy()
        frames[m] = np.stack([x, y, np.cross(x, y)], 1)
    return frames, changed


def _unique_axis(values: np.ndarray) -> np.ndarray:
    """For (M, 3) values with two (nearly) equal entries, the index of the other one; else -1."""
    out = np.full(len(values), -1)
    for k, (i, j) in enumerate(((1, 2), (0, 2), (0, 1))):
        equal = np.abs(values[:, i] - values[:, j]) <= EQUAL_ATOL
        out[equal & (out < 0)] = k
    return out


def to_coordinate_frame(
    tensors: np.ndarray, z: np.ndarray, pos: np.ndarray, atom_ptr: np.ndarray,
    symmetry_axis: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Tensors (M, 3, 3) given in the source's frame → the frame of ``pos`` (``R A Rᵀ``).

    Args:
        tensors: (M, 3, 3) bohr³ as qm9pack gives them. z: (A,). pos: (A, 3) Å. atom_ptr: (M+1,).
        symmetry_axis: (M,) from :func:`exact_symmetry_axes` on QM9's float64 positions; default:
            computed from ``pos`` (which must then be those positions, or a rotation of them).

    Returns the rotated tensors and counts for the dataset summary: ``symmetric_tops_rematched``,
    ``mirror_sign_guessed`` (molecules whose tensor has an off-diagonal entry whose sign the source
    left arbitrary; see :func:`charge_frames`), ``symmetric_frames`` (exactly symmetric molecules) and
    ``symmetric_in_plane_guessed`` (those of them whose in-plane axes their symmetry does not fix).
    """
    if symmetry_axis is None:
        symmetry_axis = exact_symmetry_axes(z, pos, atom_ptr)
    frames, moments, sign_fixed = charge_frames(z, pos, atom_ptr)
    frames, symmetric = symmetric_frames(frames, symmetry_axis)
    sign_fixed = sign_fixed & ~symmetric
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
        "symmetric_frames": int(symmetric.sum()),
        "symmetric_in_plane_guessed": int((symmetric & (np.abs(tensors[:, 0, 1]) > EQUAL_ATOL)).sum()),
    }
    rotated = frames @ tensors @ frames.transpose(0, 2, 1)
    return 0.5 * (rotated + rotated.transpose(0, 2, 1)), counts  # symmetric to the last bit
