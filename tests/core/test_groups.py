"""Group registry: every name builds, means the subgroup it claims, and parses field specs consistently."""

from __future__ import annotations

import numpy as np
import pytest

from steerable.groups import GroupError, build_group, valid_group_names
from steerable.testing import N_DISCRETE, group, group_id, registry_groups

ALL_GROUPS = registry_groups()
# Groups containing an element with det = -1 (π-flips about an axis are rotations, so o2/dn are not here).
REFLECTING_3D = {"inv", "mirror", "cyl", "so2_inv", "fullcyl", "cone", "cone_n", "o3", "full_octa",
                 "full_ico", "cn_inv", "dn_inv"}
REFLECTING_2D = {"flip", "o2", "dn"}

# Orders of the finite groups (N = 4 for the families); None = continuous.
ORDERS_3D = {"trivial": 1, "inv": 2, "mirror": 2, "cn": 4, "dn": 8, "cone_n": 8, "cn_inv": 8, "dn_inv": 16,
             "octa": 24, "full_octa": 48, "ico": 60, "full_ico": 120}
ORDERS_2D = {"trivial": 1, "flip": 2, "cn": 4, "dn": 8}
# How the planar subgroups of O(3) act on the z axis: fixed, or fixed up to sign.
Z_AXIS = {"trivial": "fixed", "mirror": "fixed", "so2": "fixed", "cn": "fixed", "cone": "fixed",
          "cone_n": "fixed", "o2": "sign", "dn": "sign", "cyl": "sign", "so2_inv": "sign", "cn_inv": "sign",
          "fullcyl": "sign", "dn_inv": "sign", "inv": "sign"}


def _matrices(name: str, dim: int, n: int = 24) -> list[np.ndarray]:
    spec = group(name, dim)
    pool = list(spec.group.elements) if not spec.group.continuous else spec.sample(n, seed=3)
    return [spec.std_matrix(g) for g in pool]


@pytest.mark.parametrize("param", ALL_GROUPS, ids=group_id)
def test_every_name_builds_with_orthogonal_std_rep(param):
    name, dim = param
    spec = group(name, dim)
    assert spec.name == name and spec.dim == dim
    expected_order = (ORDERS_3D if dim == 3 else ORDERS_2D).get(name)
    if expected_order is None:
        assert spec.group.continuous
    else:
        assert spec.group.order() == expected_order
    for m in _matrices(name, dim):
        assert m.shape == (dim, dim)
        np.testing.assert_allclose(m @ m.T, np.eye(dim), atol=1e-9)


@pytest.mark.parametrize("param", ALL_GROUPS, ids=group_id)
def test_std_rep_is_a_homomorphism(param):
    spec = group(*param)
    a, b = spec.sample(2, seed=11)
    np.testing.assert_allclose(spec.std_matrix(a @ b), spec.std_matrix(a) @ spec.std_matrix(b), atol=1e-9)


@pytest.mark.parametrize("name", sorted(Z_AXIS))
def test_planar_subgroups_act_on_the_z_axis_as_named(name):
    e_z = np.array([0.0, 0.0, 1.0])
    images = [m @ e_z for m in _matrices(name, 3)]
    if Z_AXIS[name] == "fixed":
        assert all(np.allclose(v, e_z, atol=1e-9) for v in images)
    else:
        assert all(np.allclose(np.abs(v), e_z, atol=1e-9) for v in images)
        assert any(np.allclose(v, -e_z, atol=1e-9) for v in images)


def test_named_reflections_are_the_documented_matrices():
    mirror = [m for m in _matrices("mirror", 3) if np.linalg.det(m) < 0]
    np.testing.assert_allclose(mirror[0], np.diag([1.0, -1.0, 1.0]), atol=1e-9)
    inv = [m for m in _matrices("inv", 3) if np.linalg.det(m) < 0]
    np.testing.assert_allclose(inv[0], -np.eye(3), atol=1e-9)


@pytest.mark.parametrize("param", ALL_GROUPS, ids=group_id)
def test_contains_reflections(param):
    name, dim = param
    expected = name in (REFLECTING_3D if dim == 3 else REFLECTING_2D)
    assert group(name, dim).contains_reflections is expected
    # Cross-check against the determinant of the std rep on the elements themselves.
    assert any(np.linalg.det(m) < 0 for m in _matrices(name, dim, n=64)) is expected


@pytest.mark.parametrize("param", ALL_GROUPS, ids=group_id)
def test_vector_and_pseudoscalar_specs_match_the_std_rep(param):
    """``1o`` (3-D) / ``1`` (2-D) has the character of the std rep; ``0o`` is the determinant."""
    name, dim = param
    spec = group(name, dim)
    vector = spec.field_type("1x1o" if dim == 3 else "1x1")
    pseudo = spec.field_type("1x0o")
    for g in spec.sample(8, seed=5) + ([spec.group.identity]):
        m = spec.std_matrix(g)
        assert np.trace(vector.representation(g)) == pytest.approx(np.trace(m), abs=1e-7)
        assert float(pseudo.representation(g)[0, 0]) == pytest.approx(np.linalg.det(m), abs=1e-7)


def test_unknown_name_lists_valid_names():
    with pytest.raises(GroupError) as info:
        build_group("so4")
    for name in valid_group_names(3):
        assert name in str(info.value)
    with pytest.raises(GroupError, match="flip"):
        build_group("octa", dim=2)


@pytest.mark.parametrize("bad", [dict(name="cn"), dict(name="dn", N=1), dict(name="so3", dim=4)])
def test_bad_arguments_raise_group_error(bad):
    with pytest.raises(GroupError):
        build_group(**bad)


def test_registry_is_cached():
    assert build_group("cn", N=N_DISCRETE) is build_group("cn", N=N_DISCRETE)
    assert build_group("so3", N=None) is build_group("so3")


@pytest.mark.parametrize(("options", "message"), [
    (dict(name="so3", maximum_frequncy=6),
     r"unknown group key 'group\.maximum_frequncy' \(did you mean 'maximum_frequency'\?\); "
     r"valid keys: name, dim, N, maximum_frequency"),
    (dict(name="cn", N=4, order=6), r"unknown group key 'group\.order'"),
    (dict(name="so3", N=7),
     r"group 'so3' has no rotation order N \(only cn, cn_inv, cone_n, dn, dn_inv do\), got N=7"),
    (dict(name="o2", dim=2, N=8), r"group 'o2' has no rotation order N"),
])
def test_unknown_group_keys_and_stray_N_are_refused(options, message):
    with pytest.raises(GroupError, match=message):
        build_group(**options)


def test_spec_parsing_sizes():
    o3 = group("o3")
    assert o3.field_type("4x0e+2x1o").size == 4 + 2 * 3
    assert len(o3.reps("2x0e + 3x1o + 1x2e")) == 6
    assert o3.field_type("1x3o").size == 7
    assert group("so2", 2).field_type("2x0e+1x0o+1x1+1x2").size == 2 + 1 + 2 + 2
    assert group("octa").field_type("2xregular").size == 48
    assert group("dn", 2).field_type("regular").size == 8
    assert o3.field_type("2xstd").size == 6 and o3.reps("std")[0] is o3.std_rep  # Cartesian vectors
    assert group("so2", 2).field_type("std+1x0e").size == 3


@pytest.mark.parametrize("param, spec", [
    (("o3", 3), "1x1"),           # 3-D irreps need a parity
    (("so2", 2), "1x0"),          # frequency 0 in 2-D needs a parity (trivial or sign)
    (("o3", 3), "regular"),       # continuous groups have no regular representation
    (("so2", 2), "2xregular"),
    (("o3", 3), "3y1o"),
    (("o3", 3), ""),
    (("o3", 3), "1x0e++1x1o"),
])
def test_spec_parsing_errors(param, spec):
    with pytest.raises(GroupError):
        group(*param).field_type(spec)


def test_field_type_of_another_group_is_rejected():
    with pytest.raises(GroupError):
        group("so3").field_type(group("o3").field_type("1x1o"))


@pytest.mark.parametrize("param", [("so3", 3), ("octa", 3), ("o2", 2)], ids=group_id)
def test_sample_is_deterministic_with_seed(param):
    spec = group(*param)
    state = np.random.get_state()
    first = [spec.std_matrix(g) for g in spec.sample(6, seed=42)]
    again = [spec.std_matrix(g) for g in spec.sample(6, seed=42)]
    other = [spec.std_matrix(g) for g in spec.sample(6, seed=43)]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert not np.allclose(np.stack(first), np.stack(other))
    assert all(np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
               for a, b in zip(state, np.random.get_state())), "sample() must not touch the global RNG"
