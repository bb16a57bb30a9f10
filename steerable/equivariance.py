"""Check any layer or whole model against random group elements.

For a group element g, inputs are transformed (positions by ``group.std_rep``, features by their
field types) and the output is compared with the transformed output. The relative error
``‖f(g·x) − g·f(x)‖ / ‖f(x)‖`` is reported (max over the sampled elements).

Model contract (used by :func:`model_error`): a model exposes ``group`` (GroupSpec),
``vector_inputs`` (names of batch attributes of shape (N, d) that rotate with the positions, e.g.
``("vel",)``) and ``output_type`` (escnn FieldType of its output rows).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from escnn.group import GroupElement
from escnn.nn import FieldType, GeometricTensor

from steerable.groups import GroupSpec


def rep_matrix(field_type: FieldType, g: GroupElement, like: torch.Tensor) -> torch.Tensor:
    """``ρ(g)`` of a FieldType as a tensor with the dtype/device of ``like``."""
    return torch.as_tensor(np.asarray(field_type.representation(g)), dtype=like.dtype, device=like.device)


def std_matrix(group: GroupSpec, g: GroupElement, like: torch.Tensor) -> torch.Tensor:
    """The (d, d) matrix acting on positions, with the dtype/device of ``like``."""
    return torch.as_tensor(group.std_matrix(g), dtype=like.dtype, device=like.device)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖actual − expected‖ / max(‖expected‖, tiny)."""
    return float((actual - expected).norm() / expected.norm().clamp(min=1e-30))


def elements(group: GroupSpec, n: int, seed: int = 0, include_reflection: bool = True) -> list[GroupElement]:
    """``n`` random elements; when G has reflections, at least one sampled element is one."""
    sampled = group.sample(n, seed=seed)
    if include_reflection and group.contains_reflections:
        if not any(np.linalg.det(group.std_matrix(g)) < 0 for g in sampled):
            candidates = group.sample(64, seed=seed + 1)
            sampled[-1] = next(g for g in candidates if np.linalg.det(group.std_matrix(g)) < 0)
    return sampled


def grid_elements(group: GroupSpec) -> list[GroupElement]:
    """Elements of G that map the integer grid onto itself (their std matrix is a signed permutation)."""
    pool = list(group.group.elements) if not group.group.continuous else list(group.group.testing_elements())
    return [g for g in pool if np.allclose(np.round(group.std_matrix(g)), group.std_matrix(g), atol=1e-9)]


def point_module_error(
    module: torch.nn.Module,
    x: torch.Tensor,
    pos: torch.Tensor,
    edge_index: torch.Tensor,
    n_elements: int = 5,
    seed: int = 0,
    **kwargs,
) -> float:
    """Max relative equivariance error of a point convolution ``module(x, pos, edge_index, **kwargs)``.

    ``module`` exposes ``group``, ``in_type``, ``out_type``. ``pos`` may be a ``(pos_src, pos_dst)`` pair
    (bipartite graphs). Keyword inputs (edge/node attributes) are treated as invariant.
    """
    group = module.group
    with torch.no_grad():
        reference = module(x, pos, edge_index, **kwargs)
        errors = []
        for g in elements(group, n_elements, seed):
            moved = tuple(p @ std_matrix(group, g, p).T for p in (pos if isinstance(pos, tuple) else (pos,)))
            out = module(
                x @ rep_matrix(module.in_type, g, x).T,
                moved if isinstance(pos, tuple) else moved[0],
                edge_index,
                **kwargs,
            )
            errors.append(relative_error(out, reference @ rep_matrix(module.out_type, g, reference).T))
    return max(errors)


def grid_module_error(
    module: torch.nn.Module, x: GeometricTensor, group_elements: list[GroupElement]
) -> float:
    """Max relative equivariance error of a grid module on GeometricTensors (escnn's ``transform``)."""
    with torch.no_grad():
        reference = module(x)
        return max(
            relative_error(module(x.transform(g)).tensor, reference.transform(g).tensor)
            for g in group_elements
        )


def transform_batch(batch, group: GroupSpec, g: GroupElement, vector_inputs: tuple[str, ...]):
    """Copy of a PyG batch with ``pos`` and ``vector_inputs`` multiplied by the std matrix of ``g``."""
    out = batch.clone()
    for key in ("pos", *vector_inputs):
        value = getattr(batch, key, None)
        if value is not None:
            setattr(out, key, value @ std_matrix(group, g, value).T)
    return out


def model_error(
    model: torch.nn.Module, batch, n_elements: int = 5, seed: int = 0, forward: Callable | None = None
) -> float:
    """Max relative equivariance error of a whole model on a PyG batch (see the module docstring)."""
    forward = forward or model
    group = model.group
    with torch.no_grad():
        reference = forward(batch)
        errors = []
        for g in elements(group, n_elements, seed):
            out = forward(transform_batch(batch, group, g, tuple(model.vector_inputs)))
            expected = reference @ rep_matrix(model.output_type, g, reference).T
            errors.append(relative_error(out, expected))
    return max(errors)
