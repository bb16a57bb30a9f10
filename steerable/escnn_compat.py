"""escnn's numerical intertwiner solver, made independent of whether scikit-learn is installed.

Where ``py3nj`` is absent (no Fortran compiler), escnn solves Clebsch-Gordan coefficients and other
intertwiner bases numerically: ``escnn.group._numerical.null`` takes the null space of a dense
constraint matrix with scikit-learn's ``randomized_svd`` when scikit-learn is importable, else with
``scipy.linalg.svd``. Two problems with the first route: scikit-learn ≥ 1.6 refuses the
``np.matrix`` escnn passes (``TypeError: np.matrix is not supported``), so building an O(3) or SO(3)
model fails on any machine with both a recent scikit-learn and no ``py3nj`` (typical GPU images);
and ``randomized_svd(random_state=None)`` gives a different basis on every call. :func:`apply` routes
escnn to the exact, deterministic SVD, the route it already takes without scikit-learn, so a model
builds the same way on every machine. Imported for its effect by the modules that build escnn groups
and representations.
"""

from __future__ import annotations

from escnn.group import _numerical


def apply() -> None:
    """Make escnn's ``null`` use ``scipy.linalg.svd`` (idempotent; a no-op without scikit-learn)."""
    _numerical.randomized_svd = None


apply()
