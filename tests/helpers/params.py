"""Parameter lists that run one case per family in the fast suite and the rest under ``slow``.

Where several cases prove the same thing (one group per family of subgroups, one graph layout per
contraction mode), ``pytest -m "not slow"`` runs the representatives and ``pytest -m slow`` the
others, so the full matrix still runs (``make test-slow``) and every group is also in
``python -m steerable.check``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import pytest

#: One subgroup per family of the registry, reflections included where the family has them:
#: O(3) itself, the platonic groups, planar continuous and planar finite subgroups of O(3), the
#: two-element groups, and the 2-D groups (continuous and finite).
GROUP_REPRESENTATIVES: frozenset[tuple[str, int]] = frozenset({
    ("o3", 3), ("full_octa", 3), ("cone", 3), ("dn_inv", 3), ("mirror", 3), ("o2", 2), ("cn", 2),
})


def slow_except(cases: Iterable, fast: Collection, unpack: bool = False) -> list:
    """``cases`` as pytest parameters, each one not in ``fast`` marked ``slow``.

    Args:
        cases: the parameter values (tuples for a multi-name ``parametrize`` when ``unpack``).
        fast: the cases the fast suite runs.
        unpack: each case holds the values of several parameter names.
    """
    def param(case, *marks):
        return pytest.param(*(case if unpack else (case,)), marks=marks)

    return [param(case) if case in fast else param(case, pytest.mark.slow) for case in cases]
