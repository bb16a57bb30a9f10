"""escnn's numbers do not depend on the environment: numpy 1 or 2, lie_learn's wheel or our own build.

The irreps, lie_learn's Wigner-D matrices and the steerable kernel bases that the layers are built from
are compared with values stored from a reference install (Python 3.11, numpy 1.26, the lie_learn 0.0.2
wheel from PyPI). A numpy-2 environment (``make install`` on Python 3.13 builds lie_learn itself) must
give the same irreps and Wigner-D matrices to 1e-12, and kernel bases of the same span to 1e-12.

Regenerate the stored values (only when escnn itself is upgraded on purpose)::

    python tests/core/test_escnn_reference.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from steerable.groups import build_group

REFERENCE = Path(__file__).parent / "data" / "escnn_reference.npz"
GROUPS = ("so3", "o3", "ico", "cyl")
TOLERANCE = 1e-12


def _irrep_values(name: str) -> dict[str, np.ndarray]:
    """ρ_l^p(g) of the restricted O(3) irreps (l ≤ 3, both parities) at 6 seeded elements of G."""
    spec = build_group(name, maximum_frequency=3)
    elements = spec.sample(6, seed=0)
    values = {}
    for l in range(4):
        for parity in "eo":
            rep = spec.irrep(l, parity)
            matrices = [np.asarray(rep(g), dtype=np.float64) for g in elements]
            values[f"{name}/irrep/{l}{parity}"] = np.stack(matrices)
    values[f"{name}/std"] = np.stack([spec.std_matrix(g) for g in elements])
    return values


def _kernel_basis_values(name: str) -> dict[str, np.ndarray]:
    """escnn's steerable kernel basis Hom(ρ_in, ρ_out) of G on R³, sampled at 5 fixed points.

    Shapes: ``(points, basis, dim ρ_out, dim ρ_in)``, for (ρ_in, ρ_out) in {(0e, 1o), (1o, 1o), (1o, 2e)}.
    """
    spec = build_group(name, maximum_frequency=3)
    points = torch.tensor(
        [[0.3, -0.2, 0.9], [1.0, 0.0, 0.0], [-0.5, 0.7, 0.1], [0.2, 0.2, -0.6], [0.0, -1.1, 0.4]],
        dtype=torch.float64,
    )
    values = {}
    for rep_in, rep_out in (("0e", "1o"), ("1o", "1o"), ("1o", "2e")):
        basis = spec.gspace.build_kernel_basis(
            spec.irrep(int(rep_in[0]), rep_in[1]),
            spec.irrep(int(rep_out[0]), rep_out[1]),
            sigma=[0.6, 0.6],
            rings=[0.0, 1.0],
            maximum_frequency=3,
        )
        sampled = basis.double().sample(points)
        values[f"{name}/kernel/{rep_in}-{rep_out}"] = sampled.detach().numpy()
    return values


def _wigner_d_values() -> dict[str, np.ndarray]:
    """lie_learn's real Wigner-D matrices (escnn's convention) for l ≤ 4 at three ZYZ angle triples."""
    from lie_learn.representations.SO3.wigner_d import wigner_D_matrix

    angles = ((0.1, 0.7, -1.3), (2.0, 0.2, 0.5), (-0.4, 2.9, 3.0))
    return {
        f"lie_learn/wigner_D/{l}": np.stack(
            [wigner_D_matrix(l, *a, field="real", normalization="quantum", order="centered") for a in angles]
        )
        for l in range(5)
    }


def reference_values() -> dict[str, np.ndarray]:
    """Every stored value, computed by this environment's escnn and lie_learn."""
    values = _wigner_d_values()
    for name in GROUPS:
        values.update(_irrep_values(name))
        values.update(_kernel_basis_values(name))
    return values


@pytest.fixture(scope="module")
def stored() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return dict(data)


@pytest.fixture(scope="module")
def computed() -> dict[str, np.ndarray]:
    return reference_values()


def test_the_same_quantities_are_computed(stored, computed):
    assert sorted(computed) == sorted(stored)


def _span_residual(stored: np.ndarray, computed: np.ndarray) -> float:
    """Largest distance of a stored basis element from the span of the computed ones (relative).

    Bases ``(points, basis, o, i)``: element b is the vector of its samples over points and (o, i).
    """
    a = np.moveaxis(stored, 1, 0).reshape(stored.shape[1], -1)
    b = np.moveaxis(computed, 1, 0).reshape(computed.shape[1], -1)
    coefficients = np.linalg.lstsq(b.T, a.T, rcond=None)[0]
    return float(np.abs(b.T @ coefficients - a.T).max() / np.abs(a).max())


@pytest.mark.parametrize("prefix", ("lie_learn/",) + tuple(f"{name}/" for name in GROUPS))
def test_escnn_numbers_equal_the_reference_install(stored, computed, prefix):
    """Irreps, position matrices and Wigner-D to 1e-12; kernel bases span the same space to 1e-12.

    Within repeated irreps escnn's basis is fixed only up to mixing, which follows the LAPACK build
    (measured: cyl and ico differ by O(1) element-wise between numpy 1.26 and 2.5, with the same span);
    layers re-express checkpoints in the local basis (``test_portable_basis.py``).
    """
    keys = [key for key in stored if key.startswith(prefix)]
    assert keys
    for key in keys:
        assert computed[key].shape == stored[key].shape, key
        if "/kernel/" in key:
            assert _span_residual(stored[key], computed[key]) <= TOLERANCE, key
        else:
            np.testing.assert_allclose(computed[key], stored[key], rtol=0, atol=TOLERANCE, err_msg=key)


def test_a_kernel_basis_of_another_span_is_told_apart(stored):
    """A mixed basis (same span) passes; one element moved by 1e-9 out of the span fails."""
    basis = stored["cyl/kernel/1o-2e"]
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((basis.shape[1], basis.shape[1])) + 3 * np.eye(basis.shape[1])
    assert _span_residual(np.einsum("pboi,cb->pcoi", basis, mixing), basis) <= TOLERANCE
    moved = basis.copy()
    moved[:, 0] += 1e-9 * rng.standard_normal(moved[:, 0].shape)
    assert _span_residual(moved, basis) > TOLERANCE


def test_the_comparison_can_fail(stored, computed):
    """A change of 1e-10 in one Wigner-D entry, far below any visible effect, is caught."""
    key = "lie_learn/wigner_D/2"
    perturbed = computed[key].copy()
    perturbed[0, 1, 2] += 1e-10
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(perturbed, stored[key], rtol=0, atol=TOLERANCE)


if __name__ == "__main__":
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(REFERENCE, **reference_values())
    print(f"wrote {REFERENCE}")
