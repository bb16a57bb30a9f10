"""Implicit kernels: equivariant MLPs φ producing steerable kernel matrices."""

from steerable.kernels.implicit import ImplicitKernel, RadialWindow, band_limited_spec
from steerable.kernels.linear import EquivariantLinear

__all__ = ["EquivariantLinear", "ImplicitKernel", "RadialWindow", "band_limited_spec"]
