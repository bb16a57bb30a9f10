"""Group registry: a config name → the escnn objects a steerable layer needs.

Every group G is a subgroup of O(d) (d = 2 or 3) obtained by restricting escnn's O(d) gspace with a
subgroup id. Field types are written as restricted O(d) irreps (``"4x0e+2x1o"``), so the same spec
means the same thing for every G, exactly as in the paper.

Subgroup ids of O(3) (escnn conventions; z is the symmetry axis of the planar subgroups):

=========  ==========================  ========================  =============================
name       group                       paper name (ModelNet)      escnn id
=========  ==========================  ========================  =============================
trivial    {e}                                                    (False, False, 1)
inv        {±I} point reflection       Inv                        (True, False, 1)
mirror     {I, y → −y} plane xz        M                          ('cone', 1)
so2        rotations about z           SO(2)                      (False, False, -1)
cn         C_N about z                                            (False, False, N)
o2         SO(2)⋊F, π-flips ⟂ z        SO(2)⋊F                    (False, True, -1)
dn         D_N = C_N⋊F                                            (False, True, N)
cone       SO(2)⋊M, mirrors ∋ z        SO(2)⋊M                    ('cone', -1)
cone_n     C_N⋊M (pyramid)                                        ('cone', N)
cyl        SO(2)×{±I} = SO(2)×{z-mirror}  SO(2)⋊Inv              (True, False, -1)
so2_inv    alias of cyl                                           (True, False, -1)
cn_inv     C_N×{±I}                                               (True, False, N)
fullcyl    O(2)×{±I}                                              (True, True, -1)
dn_inv     D_N×{±I}                                               (True, True, N)
ico/octa   rotations of the icosahedron / octahedron              (False, 'ico'|'octa')
full_ico/full_octa  ... times {±I}                               (True, 'ico'|'octa')
so3        SO(3)                       SO(3)                      'so3'
o3         O(3)                        O(3)                       'o3'
=========  ==========================  ========================  =============================

Note SO(2)×{±I} and SO(2)×{z-mirror} are the same set of matrices (−R_z(θ) = R_z(θ+π)·diag(1,1,−1)),
so ``cyl`` and ``so2_inv`` are one group.  On R² (``dim: 2``): ``so2, o2, cn, dn, flip, trivial``.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from escnn import gspaces
from escnn.group import GroupElement, Representation
from escnn.nn import FieldType

import steerable.escnn_compat  # noqa: F401  (escnn's numerical solver: exact SVD on every machine)

SubgroupId = Callable[[int | None], object]

GROUPS_3D: dict[str, SubgroupId] = {
    "trivial": lambda n: (False, False, 1),
    "inv": lambda n: (True, False, 1),
    "mirror": lambda n: ("cone", 1),
    "so2": lambda n: (False, False, -1),
    "cn": lambda n: (False, False, n),
    "o2": lambda n: (False, True, -1),
    "dn": lambda n: (False, True, n),
    "cone": lambda n: ("cone", -1),
    "cone_n": lambda n: ("cone", n),
    "cyl": lambda n: (True, False, -1),
    "so2_inv": lambda n: (True, False, -1),
    "cn_inv": lambda n: (True, False, n),
    "fullcyl": lambda n: (True, True, -1),
    "dn_inv": lambda n: (True, True, n),
    "ico": lambda n: (False, "ico"),
    "octa": lambda n: (False, "octa"),
    "full_ico": lambda n: (True, "ico"),
    "full_octa": lambda n: (True, "octa"),
    "so3": lambda n: "so3",
    "o3": lambda n: "o3",
}
GROUPS_2D: dict[str, SubgroupId] = {
    "trivial": lambda n: (None, 1),
    "flip": lambda n: (0.0, 1),
    "so2": lambda n: (None, -1),
    "o2": lambda n: (0.0, -1),
    "cn": lambda n: (None, n),
    "dn": lambda n: (0.0, n),
}
NEEDS_N = {"cn", "dn", "cone_n", "cn_inv", "dn_inv"}
_REGISTRY = {2: GROUPS_2D, 3: GROUPS_3D}
_SPEC_TOKEN = re.compile(r"^\s*(?:(\d+)\s*x\s*)?(regular|std|\d+[eo]?)\s*$")


class GroupError(ValueError):
    """An unknown group name or a field type the group cannot carry."""


def valid_group_names(dim: int = 3) -> list[str]:
    """Registered names for subgroups of O(dim)."""
    return sorted(_REGISTRY[dim])


@dataclass
class GroupSpec:
    """A subgroup G ≤ O(d) with the escnn objects derived from it.

    Attributes:
        name: registry name (e.g. ``"cyl"``).
        dim: dimension d of the base space (2 or 3).
        sg_id: escnn subgroup id of G in O(d).
        gspace: escnn gspace of G acting on R^d (for grid and analytic convolutions).
        fiber: escnn ``no_base_space(G)`` (for MLPs on features with no spatial extent).
        std_rep: representation of G on R^d (how positions transform; restricted standard rep of O(d)).
    """

    name: str
    dim: int
    sg_id: object
    ambient: gspaces.GSpace
    gspace: gspaces.GSpace
    fiber: gspaces.GSpace
    std_rep: Representation
    _parents: dict = field(default_factory=dict, repr=False)
    _tensor_cache: dict = field(default_factory=dict, repr=False)

    @property
    def group(self):
        """The escnn group G."""
        return self.gspace.fibergroup

    @property
    def contains_reflections(self) -> bool:
        """Whether G contains an element with det(std_rep) = −1."""
        return any(np.linalg.det(self.std_matrix(g)) < 0 for g in self._probe_elements())

    def _probe_elements(self) -> list[GroupElement]:
        if self.group.continuous:
            return self.sample(64, seed=0)
        return list(self.group.elements)

    def irrep(self, l: int, parity: str = "e") -> Representation:
        """Restriction to G of the O(d) irrep of frequency ``l``.

        For d = 3, ``parity`` 'e'/'o' is the sign of the inversion (``1o`` is the vector irrep, in
        escnn's (y, z, x) basis; Cartesian xyz vectors are :attr:`std_rep`, spec token ``std``).
        For d = 2, frequency 0 has 'e' (trivial) or 'o' (sign of the flip); frequencies ≥ 1 ignore it.
        """
        o_group = self.ambient.fibergroup
        j = 0 if parity == "e" else 1
        parent = o_group.irrep(j, l) if self.dim == 3 else o_group.irrep(1 if l > 0 else j, l)
        rep = parent.restrict(self.sg_id)
        self._parents[rep.name] = parent
        return rep

    def tensor(self, rep_a: Representation, rep_b: Representation) -> Representation:
        """ρ_a ⊗ ρ_b as a representation of G (cached; uses O(d) Clebsch–Gordan when possible)."""
        key = (rep_a.name, rep_b.name)
        if key not in self._tensor_cache:
            pa, pb = self._parents.get(rep_a.name), self._parents.get(rep_b.name)
            if pa is not None and pb is not None:
                product = pa.tensor(pb).restrict(self.sg_id)
                self._parents[product.name] = pa.tensor(pb)
            else:
                product = rep_a.tensor(rep_b)
            self._tensor_cache[key] = product
        return self._tensor_cache[key]

    def reps(self, spec: str) -> list[Representation]:
        """Parse a field spec like ``"4x0e+2x1o+regular+std"`` into a list of representations of G.

        ``std`` is G's action on R^d, i.e. Cartesian (x, y, z) vectors, transforming like positions.
        In 3-D the irrep ``1o`` is equivalent but uses escnn's (y, z, x) basis: feed xyz vectors
        (velocities, normals, forces) as ``std``, not ``1o``.
        """
        if not isinstance(spec, str) or not spec.strip():
            raise GroupError(f"field spec must be a non-empty string like '4x0e+2x1o', got {spec!r}")
        reps: list[Representation] = []
        for token in spec.split("+"):
            match = _SPEC_TOKEN.match(token)
            if match is None:
                raise GroupError(
                    f"cannot parse field spec token {token!r} in {spec!r}; "
                    "expected '[mult x] l(e|o)', '[mult x] std' or '[mult x] regular'"
                )
            mult, irrep = int(match.group(1) or 1), match.group(2)
            if irrep == "std":
                rep = self.std_rep
            elif irrep == "regular":
                if self.group.continuous:
                    raise GroupError(f"group {self.name!r} is continuous and has no regular representation")
                rep = self.group.regular_representation
            else:
                l, parity = int(irrep.rstrip("eo")), irrep[-1] if irrep[-1] in "eo" else None
                if parity is None and (self.dim == 3 or l == 0):
                    raise GroupError(f"field spec token {token!r} needs a parity suffix 'e' or 'o'")
                rep = self.irrep(l, parity or "e")
            reps.extend([rep] * mult)
        if not reps:
            raise GroupError(f"field spec {spec!r} has no fields (every multiplicity is 0)")
        return reps

    def field_type(self, spec: str | FieldType, on: str = "space") -> FieldType:
        """A FieldType of G from a spec string (or an existing FieldType, re-homed).

        Args:
            spec: e.g. ``"8x0e+4x1o"``; or a FieldType whose representations belong to G.
            on: ``"space"`` (G acting on R^d: point/grid convs) or ``"fiber"`` (no base space: MLPs).
        """
        reps = list(spec.representations) if isinstance(spec, FieldType) else self.reps(spec)
        for rep in reps:
            if rep.group != self.group:
                raise GroupError(
                    f"field type over {rep.group} cannot be carried by group {self.name!r} ({self.group})"
                )
        gspace = self.gspace if on == "space" else self.fiber
        return gspace.type(*reps)

    def sample(self, n: int, seed: int | None = None) -> list[GroupElement]:
        """``n`` random elements of G (uniform over finite groups; escnn's sampler otherwise)."""
        rng = np.random.default_rng(seed)
        if not self.group.continuous:
            elements = list(self.group.elements)
            return [elements[i] for i in rng.integers(0, len(elements), size=n)]
        state = np.random.get_state()
        np.random.seed(int(rng.integers(0, 2**31)))
        try:
            return [self.group.sample() for _ in range(n)]
        finally:
            np.random.set_state(state)

    def std_matrix(self, g: GroupElement) -> np.ndarray:
        """The (d, d) orthogonal matrix by which ``g`` acts on positions."""
        return np.asarray(self.std_rep(g), dtype=np.float64)


@functools.lru_cache(maxsize=None)
def _build(name: str, dim: int, N: int | None, maximum_frequency: int) -> GroupSpec:
    registry = _REGISTRY[dim]
    sg_id = registry[name](N)
    if dim == 3:
        ambient = gspaces.flipRot3dOnR3(maximum_frequency=maximum_frequency)
    else:
        ambient = gspaces.flipRot2dOnR2(N=-1, maximum_frequency=maximum_frequency)
    space, _, _ = ambient.restrict(sg_id)
    if dim == 2:
        # escnn re-centres the flip axis of planar gspaces (id (0., N) → (π, N)); representations must
        # be restricted along the same embedding as the gspace's action on the plane.
        sg_id = space._sg_id
    _instantiate_irreps(space.fibergroup, 3 * maximum_frequency)
    spec = GroupSpec(
        name=name,
        dim=dim,
        sg_id=sg_id,
        ambient=ambient,
        gspace=space,
        fiber=gspaces.no_base_space(space.fibergroup),
        std_rep=space.basespace_action,
    )
    spec._parents[spec.std_rep.name] = ambient.basespace_action
    return spec


def _irrep_ids(group, band_limit: int) -> list:
    return list(group.bl_irreps(band_limit)) if group.continuous else [psi.id for psi in group.irreps()]


def _instantiate_irreps(group, band_limit: int) -> None:
    """Build the irreps of a continuous G up to ``band_limit`` ahead of use.

    escnn decomposes tensor products only into irreps that already exist; restricted planar groups start
    with few, so e.g. a 2e → 2e kernel (Hom frequency 4) on o2/cone/cyl raised InsufficientIrrepsException
    when the kernel MLP's hidden frequency-1 fields met it.
    """
    if not group.continuous:
        return
    if hasattr(group, "G1") and hasattr(group, "G2"):  # direct products, e.g. cyl = C2 × SO(2)
        for id1 in _irrep_ids(group.G1, band_limit):
            for id2 in _irrep_ids(group.G2, band_limit):
                group.irrep(id1, id2)
    else:
        for irrep_id in group.bl_irreps(band_limit):
            group.irrep(*irrep_id)


GROUP_KEYS = ("name", "dim", "N", "maximum_frequency")  # what a ``conf/group/*.yaml`` may set


def check_group_options(options: Mapping[str, object]) -> None:
    """Refuse what :func:`build_group` cannot honour, without building anything.

    Args:
        options: the keys of a ``conf/group/*.yaml`` (:data:`GROUP_KEYS`).

    Raises:
        GroupError: an unknown key (e.g. a misspelt ``maximum_frequency``), an unknown ``dim`` or
            name (the message lists the valid ones), or ``N`` set for a group without a rotation order.
    """
    unknown = sorted(set(options) - set(GROUP_KEYS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], GROUP_KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise GroupError(f"unknown group key 'group.{unknown[0]}'{hint}; valid keys: {', '.join(GROUP_KEYS)}")
    name, dim, n = options.get("name"), options.get("dim", 3), options.get("N")
    if dim not in _REGISTRY:
        raise GroupError(f"group dim must be 2 or 3, got {dim}")
    if name not in _REGISTRY[dim]:
        raise GroupError(f"unknown group {name!r} for dim={dim}; valid: {', '.join(valid_group_names(dim))}")
    if name not in NEEDS_N and n is not None:
        raise GroupError(f"group {name!r} has no rotation order N (only {', '.join(sorted(NEEDS_N))} do), "
                         f"got N={n}; drop group.N or pick one of those groups")


def build_group(
    name: str, dim: int = 3, N: int | None = None, maximum_frequency: int = 4, **unknown: object
) -> GroupSpec:
    """Build (cached) the :class:`GroupSpec` for a registry name.

    Takes the keys of a ``conf/group/*.yaml`` (:data:`GROUP_KEYS`) as keyword arguments.

    Args:
        name: registry name, see the module docstring and :func:`valid_group_names`.
        dim: 3 (subgroups of O(3)) or 2 (subgroups of O(2)).
        N: order of the rotation subgroup for the discrete families (:data:`NEEDS_N`: ``cn``, ``dn``,
            ...); ``None`` for every other group.
        maximum_frequency: band limit escnn uses for continuous groups' representations.

    Raises:
        GroupError: see :func:`check_group_options`; also a missing or invalid ``N`` for a family
            that needs one.
    """
    check_group_options({"name": name, "dim": dim, "N": N, **unknown})
    return _build(name, dim, _rotation_order(name, N) if name in NEEDS_N else None, int(maximum_frequency))


def _rotation_order(name: str, N) -> int:
    """``N`` as an int ≥ 2, or a GroupError (``N=2.5`` is refused, not truncated to C2)."""
    try:
        value = float(N)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(N, bool) or not value.is_integer() or value < 2:
        raise GroupError(f"group {name!r} needs an integer N >= 2 (the rotation order), got N={N}")
    return int(value)
