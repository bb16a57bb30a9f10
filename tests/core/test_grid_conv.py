"""Implicit grid convolution: exact equivariance on the grid-preserving elements of G, in float32.

Measured errors are ~1e-7 (float32), so no float64 is needed. Elements come from
:func:`steerable.equivariance.grid_elements` (90° rotations, axis flips, octahedral symmetries).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from escnn.nn import GeometricTensor

from steerable.equivariance import grid_elements, grid_module_error
from steerable.groups import build_group
from steerable.nn.grid_conv import ImplicitGridConv
from steerable.testing import assert_equivariant_grid_module

# (name, dim, N, in spec, out spec): so2/o2/c8/d4 on R², so3/o3/octa on R³
CASES = [
    ("so2", 2, None, "1x0e+1x1+1x2", "1x0e+1x1"),
    ("o2", 2, None, "1x0e+1x0o+1x1", "1x0e+1x0o+1x1"),
    ("cn", 2, 8, "1x0e+1x1+1x2", "1x0e+1x1"),
    ("dn", 2, 4, "1x0e+1x0o+1x1", "1x0e+1x1+1xregular"),
    ("so3", 3, None, "1x0e+1x1o", "1x0e+1x1o"),
    ("o3", 3, None, "1x0e+1x0o+1x1o", "1x0e+1x1o+1x1e"),
    ("octa", 3, None, "1x0e+1x1o", "1x0e+1x1o+1x2e"),
]


def _case_id(case) -> str:
    return f"{case[0]}{case[2] or ''}-{case[1]}d"


def _conv_and_input(case, kernel_size: int = 5) -> tuple[ImplicitGridConv, GeometricTensor]:
    name, dim, n, spec_in, spec_out = case
    G = build_group(name, dim=dim, N=n)
    conv = ImplicitGridConv(G, spec_in, spec_out, kernel_size=kernel_size, channels=4)
    size = (11, 11) if dim == 2 else (7, 7, 7)
    x = torch.randn(2, conv.in_type.size, *size, generator=torch.Generator().manual_seed(0))
    return conv, GeometricTensor(x, conv.in_type)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_grid_conv_equivariance(case):
    conv, x = _conv_and_input(case, kernel_size=5 if case[1] == 2 else 3)
    elements = grid_elements(conv.group)
    non_identity = [g for g in elements if not np.allclose(conv.group.std_matrix(g), np.eye(case[1]))]
    assert non_identity, "no non-trivial grid-preserving elements to test"
    if conv.group.contains_reflections:
        assert any(np.linalg.det(conv.group.std_matrix(g)) < 0 for g in elements)
    out = conv(x)
    assert out.type == conv.out_type and out.tensor.shape == (2, conv.out_type.size, *x.tensor.shape[2:])
    assert_equivariant_grid_module(conv, x, elements, tol=1e-5)


def test_grid_conv_broken_kernel_fails():
    conv, x = _conv_and_input(CASES[4], kernel_size=3)
    clean = conv.kernel.weight_and_bias
    noise = 1e-2 * torch.randn_like(clean()[0])
    conv.kernel.weight_and_bias = lambda a=None: (clean(a)[0] + noise, clean(a)[1])
    assert grid_module_error(conv, x, grid_elements(conv.group)) > 1e-3


def test_grid_conv_rejects_wrong_input_and_even_kernels():
    conv, x = _conv_and_input(CASES[0], kernel_size=3)
    with pytest.raises(ValueError):
        conv(GeometricTensor(x.tensor[:, :1], conv.group.gspace.type(conv.group.gspace.trivial_repr)))
    with pytest.raises(ValueError):
        ImplicitGridConv(conv.group, "1x0e", "1x0e", kernel_size=4)
    assert conv.evaluate_output_shape((3, conv.in_type.size, 9, 9)) == (3, conv.out_type.size, 9, 9)


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[6]], ids=_case_id)
def test_analytic_grid_conv_equivariance(case):
    """The analytic baseline (escnn R2Conv/R3Conv) behind the same signature, same elements and tolerance."""
    from steerable.nn.analytic import AnalyticGridConv

    name, dim, n, spec_in, spec_out = case
    G = build_group(name, dim=dim, N=n)
    conv = AnalyticGridConv(G, spec_in, spec_out, kernel_size=5 if dim == 2 else 3)
    _, x = _conv_and_input(case, kernel_size=3)
    out = conv(x)
    assert out.tensor.shape == (2, conv.out_type.size, *x.tensor.shape[2:])
    assert_equivariant_grid_module(conv, x, grid_elements(G), tol=1e-5)
    conv.to("cpu").double()  # casts and moves like any module
    doubled = conv(GeometricTensor(x.tensor.double(), x.type))
    assert doubled.tensor.dtype == torch.float64
    torch.testing.assert_close(doubled.tensor.float(), out.tensor, rtol=1e-4, atol=1e-5)
