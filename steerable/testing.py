"""Reusable assertions and fixtures-in-functions for testing equivariant layers.

Built on :mod:`steerable.equivariance`; used by ``tests/core`` and by ``python -m steerable.check``, and meant
for any layer or model test that needs "transform the inputs by g, compare with the transformed output".

Conventions: a point module is called as ``module(x, pos, edge_index, edge_attr=..., node_attr=...)`` and
exposes ``group`` (:class:`~steerable.groups.GroupSpec`), ``in_type`` and ``out_type`` (escnn FieldTypes).
``pos`` and ``node_attr`` may be ``(source, target)`` pairs (bipartite convolutions).

>>> import torch
>>> from steerable.groups import build_group
>>> from steerable.nn.point_conv import ImplicitPointConv
>>> conv = ImplicitPointConv(build_group("so3"), "1x0e+1x1o", "1x1o", channels=2)
>>> x, pos, edge_index = random_point_inputs(conv.in_type, num_nodes=8, num_edges=20)
>>> assert_equivariant_point_module(conv, x, pos, edge_index) < 1e-5
True
"""

from __future__ import annotations

import warnings

import torch
from escnn.group import GroupElement
from escnn.nn import FieldType, GeometricTensor

from steerable.equivariance import elements, grid_module_error, relative_error, rep_matrix, std_matrix
from steerable.groups import NEEDS_N, GroupSpec, build_group, valid_group_names

Pair = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
PointInputs = tuple[torch.Tensor, Pair, torch.Tensor]  # (x, pos, edge_index)
N_DISCRETE = 4  # rotation order used for the cn/dn/... families in tests and in the check table


def registry_groups() -> list[tuple[str, int]]:
    """Every registry entry as ``(name, dim)``: subgroups of O(3) first, then subgroups of O(2)."""
    return [(name, 3) for name in valid_group_names(3)] + [(name, 2) for name in valid_group_names(2)]


def group(name: str, dim: int = 3, N: int = N_DISCRETE) -> GroupSpec:
    """:func:`~steerable.groups.build_group` (cached) with ``N`` set for the discrete families."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_group(name, dim=dim, N=N if name in NEEDS_N else None)


def group_id(param: tuple[str, int]) -> str:
    """Readable pytest id ``o3-3d`` for a ``(name, dim)`` pair."""
    return f"{param[0]}-{param[1]}d"


def vector_spec(mult: int = 1) -> str:
    """Spec of ``mult`` Cartesian vector fields (G's std rep: they transform like positions)."""
    return f"{mult}xstd"


def random_graph(num_nodes: int = 20, num_edges: int = 60, dim: int = 3, num_targets: int | None = None,
                 dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[Pair, torch.Tensor]:
    """Random positions and a random (multi-)graph.

    Args:
        num_nodes: number of (source) nodes.
        num_edges: number of edges, endpoints drawn uniformly (repeats and self-loops allowed).
        dim: dimension of the positions.
        num_targets: if given, a bipartite graph: targets are ``num_targets`` random points and the
            returned ``pos`` is ``(pos_src, pos_dst)``.
        dtype: dtype of the positions.
        seed: seed of a private generator (the global RNG is untouched).

    Shapes: ``pos: (num_nodes, dim)`` or a pair; ``edge_index: (2, num_edges)`` with row 0 = source.
    """
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(num_nodes, dim, generator=gen, dtype=torch.float64).to(dtype)
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    dst = torch.randint(0, num_targets or num_nodes, (num_edges,), generator=gen)
    if num_targets is not None:
        pos_dst = torch.randn(num_targets, dim, generator=gen, dtype=torch.float64).to(dtype)
        return (pos, pos_dst), torch.stack([src, dst])
    return pos, torch.stack([src, dst])


def random_point_inputs(in_type: FieldType, num_nodes: int = 20, num_edges: int = 60,
                        dtype: torch.dtype = torch.float32, seed: int = 0) -> PointInputs:
    """``(x, pos, edge_index)`` for a point module with input type ``in_type`` (unit-variance features)."""
    dim = in_type.gspace.dimensionality
    pos, edge_index = random_graph(num_nodes, num_edges, dim, dtype=dtype, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(num_nodes, in_type.size, generator=gen, dtype=torch.float64).to(dtype)
    return x, pos, edge_index


def act(field_type: FieldType | None, g: GroupElement, value: Pair | None) -> Pair | None:
    """``value @ ρ(g)ᵀ`` for a plain tensor or a (src, dst) pair; ``None`` type means invariant."""
    if value is None or field_type is None:
        return value
    if isinstance(value, tuple):
        return tuple(act(field_type, g, v) for v in value)
    return value @ rep_matrix(field_type, g, value).T


def move(group: GroupSpec, g: GroupElement, pos: Pair) -> Pair:
    """Positions (or a (src, dst) pair of positions) multiplied by the std matrix of ``g``."""
    if isinstance(pos, tuple):
        return tuple(move(group, g, p) for p in pos)
    return pos @ std_matrix(group, g, pos).T


def point_module_errors(module: torch.nn.Module, x: torch.Tensor, pos: Pair, edge_index: torch.Tensor,
                        edge_attr: torch.Tensor | None = None, node_attr: Pair | None = None,
                        edge_attr_type: FieldType | None = None, node_attr_type: FieldType | None = None,
                        group_elements: list[GroupElement] | None = None, n_elements: int = 4,
                        seed: int = 0) -> list[float]:
    """Relative equivariance error ``‖f(g·in) − g·f(in)‖/‖f(in)‖`` of a point module for each element.

    Args:
        module: point module (see the module docstring for the contract).
        x, pos, edge_index, edge_attr, node_attr: its inputs.
        edge_attr_type, node_attr_type: fiber FieldTypes of the attributes; ``None`` = invariant
            (not transformed). Typed attributes are transformed together with the positions.
        group_elements: elements to test; default :func:`steerable.equivariance.elements`, which includes
            a reflection when the group has one.
        n_elements, seed: used for the default elements.
    """
    group = module.group
    kwargs = {}
    if edge_attr is not None:
        kwargs["edge_attr"] = edge_attr
    if node_attr is not None:
        kwargs["node_attr"] = node_attr
    elements_ = group_elements if group_elements is not None else elements(group, n_elements, seed)
    with torch.no_grad():
        reference = module(x, pos, edge_index, **kwargs)
        errors = []
        for g in elements_:
            moved = dict(kwargs)
            if edge_attr is not None:
                moved["edge_attr"] = act(edge_attr_type, g, edge_attr)
            if node_attr is not None:
                moved["node_attr"] = act(node_attr_type, g, node_attr)
            out = module(act(module.in_type, g, x), move(group, g, pos), edge_index, **moved)
            errors.append(relative_error(out, act(module.out_type, g, reference)))
    return errors


def assert_equivariant_point_module(module: torch.nn.Module, x: torch.Tensor, pos: Pair,
                                    edge_index: torch.Tensor, tol: float = 1e-5, **kwargs) -> float:
    """Assert the max relative equivariance error of a point module is ≤ ``tol``; return it.

    Also asserts the output is not (numerically) zero, so a dead layer cannot pass vacuously.
    ``kwargs`` are those of :func:`point_module_errors`.
    """
    with torch.no_grad():
        call_kwargs = {k: kwargs[k] for k in ("edge_attr", "node_attr") if kwargs.get(k) is not None}
        out = module(x, pos, edge_index, **call_kwargs)
    assert torch.isfinite(out).all(), "module output is not finite"
    assert out.norm() > 1e-6 * max(1.0, out.numel() ** 0.5), "output is ~0: the test would be vacuous"
    error = max(point_module_errors(module, x, pos, edge_index, **kwargs))
    assert error <= tol, f"relative equivariance error {error:.3e} > {tol:.1e} for {module.group.name}"
    return error


def assert_equivariant_grid_module(module: torch.nn.Module, x: GeometricTensor,
                                   group_elements: list[GroupElement], tol: float = 1e-5) -> float:
    """Assert a grid module (GeometricTensor in/out) commutes with ``group_elements`` up to ``tol``."""
    assert group_elements, "no group elements to test"
    with torch.no_grad():
        out = module(x).tensor
    assert out.norm() > 0, "module output is zero: equivariance test is vacuous"
    error = grid_module_error(module, x, group_elements)
    assert error <= tol, f"relative equivariance error {error:.3e} > {tol:.1e}"
    return error


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖actual − expected‖ / ‖expected‖ (for comparing two implementations)."""
    return relative_error(actual.detach(), expected.detach())


def outputs_and_gradients_by_path(conv: torch.nn.Module, x: torch.Tensor, pos: Pair, edge_index: torch.Tensor,
                                  weights: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Run a point conv on its ``reference`` (per-edge) and ``nodewise`` paths; loss ``Σ out·weights``.

    ``x`` must require gradients. Returns, per path, ``[out, ∂loss/∂x, ∂loss/∂θ]`` with the parameters'
    gradients as one vector. The conv is left on its ``nodewise`` path.
    """
    results = {}
    for path in ("reference", "nodewise"):
        conv.path = path
        conv.zero_grad(set_to_none=True)
        x.grad = None
        out = conv(x, pos, edge_index)
        (out * weights).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in conv.parameters() if p.grad is not None])
        results[path] = [out.detach(), x.grad.clone(), grads]
    return results
