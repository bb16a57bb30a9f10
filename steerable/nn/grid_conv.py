"""Implicit steerable convolution on pixel/voxel grids (R² and R³).

The implicit kernel φ is evaluated at the kernel-grid offsets and the result is used as the weight
of ``conv2d``/``conv3d``:

.. math::  W[:, :, p] = k(p), \\quad p ∈ \\{−r, …, r\\}^d

The layer is exactly equivariant for the group elements that map the grid onto itself (90° rotations,
axis flips, octahedral symmetries); for other elements of continuous groups it is equivariant up to
the discretisation of the grid, like escnn's ``R2Conv``/``R3Conv``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from escnn.nn import FieldType, GeometricTensor
from escnn.nn.modules.conv.rd_convolution import get_grid_coords
from escnn.nn.modules.equivariant_module import EquivariantModule

from steerable.groups import GroupSpec
from steerable.kernels.implicit import ImplicitKernel


class ImplicitGridConv(EquivariantModule):
    """G-steerable grid convolution with an implicit kernel (escnn-compatible module).

    Args:
        group: symmetry group (``dim`` 2 or 3).
        in_type, out_type: FieldTypes over ``group.gspace`` (or spec strings).
        kernel_size: odd number of grid points per axis.
        padding: zero padding (default ``kernel_size // 2``, shape preserving).
        **kernel_kwargs: forwarded to :class:`ImplicitKernel`; ``window_width`` defaults to
            ``kernel_size / 2`` grid units.

    Types: input ``in_type`` → output ``out_type`` (GeometricTensors).

    Shapes: ``(B, C_in, *S) → (B, C_out, *S)`` with ``S`` the d spatial sizes.
    """

    def __init__(self, group: GroupSpec, in_type: FieldType | str, out_type: FieldType | str,
                 kernel_size: int = 5, padding: int | None = None, **kernel_kwargs):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.group = group
        self.in_type, self.out_type = group.field_type(in_type), group.field_type(out_type)
        self.kernel_size, self.padding = kernel_size, kernel_size // 2 if padding is None else padding
        kernel_kwargs.setdefault("window_width", kernel_size / 2)
        kernel_kwargs.setdefault("rbf_max", kernel_size / 2 * group.dim ** 0.5)
        kernel_kwargs.setdefault("batch_norm", False)
        self.kernel = ImplicitKernel(group, self.in_type, self.out_type, **kernel_kwargs)
        # escnn's tap coordinates, in the row-major order of the filter's spatial axes (so the layer
        # transforms exactly like escnn's R2Conv/R3Conv under GeometricTensor.transform).
        taps = torch.tensor(get_grid_coords(group.dim, kernel_size), dtype=torch.float32)
        self.register_buffer("taps", taps, persistent=False)

    def forward(self, x: GeometricTensor) -> GeometricTensor:
        if x.type != self.in_type:
            raise ValueError(f"input type {x.type} does not match the layer's in_type {self.in_type}")
        k = self.kernel.kernel(self.taps.to(x.tensor.dtype))  # (K^d, C_out, C_in)
        size = (self.kernel_size,) * self.group.dim
        weight = k.permute(1, 2, 0).reshape(self.out_type.size, self.in_type.size, *size)
        conv = F.conv2d if self.group.dim == 2 else F.conv3d
        return GeometricTensor(conv(x.tensor, weight, padding=self.padding), self.out_type)

    def evaluate_output_shape(self, input_shape):
        return (input_shape[0], self.out_type.size, *input_shape[2:])
