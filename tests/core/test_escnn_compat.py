"""escnn's numerical intertwiner solver takes the exact SVD route on every machine.

Where scikit-learn ≥ 1.6 is installed and ``py3nj`` is not (GPU images), escnn's ``null`` would hand
an ``np.matrix`` to ``randomized_svd``, which refuses it; ``steerable.escnn_compat`` routes it to
``scipy.linalg.svd``. The stand-in below refuses ``np.matrix`` the way scikit-learn does.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
from escnn.group import _numerical, o3_group

import steerable.escnn_compat as escnn_compat


def _refuses_np_matrix(matrix, n_components, random_state=None):
    if isinstance(matrix, np.matrix):
        raise TypeError("np.matrix is not supported. Please convert to a numpy array with np.asarray.")
    raise AssertionError("the exact SVD route should be taken")


@pytest.mark.parametrize("modules", [("steerable.groups",), ("steerable.kernels.linear",)])
def test_modules_that_build_representations_apply_it(modules, monkeypatch):
    monkeypatch.setattr(_numerical, "randomized_svd", _refuses_np_matrix)
    monkeypatch.delitem(sys.modules, "steerable.escnn_compat")
    for name in modules:
        monkeypatch.delitem(sys.modules, name, raising=False)
        importlib.import_module(name)
    assert _numerical.randomized_svd is None


def test_intertwiner_basis_is_exact_with_a_strict_randomized_svd_installed(monkeypatch):
    monkeypatch.setattr(_numerical, "randomized_svd", _refuses_np_matrix)
    with pytest.raises(TypeError, match="np.matrix"):
        _numerical.null(np.matrix(np.eye(3)), use_sparse=False)
    escnn_compat.apply()
    G = o3_group(2)
    rho_in = G.irrep(1, 1).tensor(G.irrep(1, 1))  # vector ⊗ vector, 9-dim: 0e + 1e + 2e
    rho_out = G.irrep(0, 2)  # parity of a product of two vectors: even
    elements = [G.sample() for _ in range(6)]
    basis = _numerical.find_intertwiner_basis_sylvester([rho_out(g) for g in elements],
                                                        [rho_in(g) for g in elements])
    assert basis.shape == (rho_out.size * rho_in.size, 1)  # 2e occurs once in 1e ⊗ 1e
    B = basis[:, 0].reshape(rho_out.size, rho_in.size, order="F")  # escnn vectorises column-major
    for g in [G.sample() for _ in range(5)]:  # fresh elements: an intertwiner of the whole group
        np.testing.assert_allclose(rho_out(g) @ B, B @ rho_in(g), atol=1e-9)
