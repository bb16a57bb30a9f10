"""Analytic (standard steerable basis) convolutions: escnn's own layers behind our signatures.

``model.kernel=analytic`` swaps :class:`steerable.nn.ImplicitPointConv` for
:class:`AnalyticPointConv` (escnn ``R3PointConv`` / ``R2PointConv``: a learned combination of the
analytically solved G-steerable kernel basis, restricted from O(d) to G), so every experiment can
compare implicit against standard kernels with one override.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager

import torch
from escnn import nn as enn
from escnn.kernels.wignereckart_solver import RestrictedWignerEckartBasis, WignerEckartBasis
from escnn.nn import FieldType, GeometricTensor
from torch import nn

from steerable.groups import GroupSpec


@contextmanager
def _private_kernel_bases(gspace):
    """Build escnn kernel bases that no other layer shares.

    escnn caches kernel bases (torch modules holding tensors) in the gspace and in the Wigner–Eckart
    solvers, even with ``recompute=True``. A layer built from the cache shares them, so casting it
    (``.double()``) casts every layer of the same types, and the next construction of those types fails
    (``Double did not match Float`` in escnn's cache lookup). Empty caches during construction, then restore.
    """
    solvers = (WignerEckartBasis, RestrictedWignerEckartBasis)
    saved = [cls._cached_instances for cls in solvers]
    memory = gspace._fields_intertwiners_basis_memory
    try:
        for cls in solvers:
            cls._cached_instances = {}
        gspace._fields_intertwiners_basis_memory = defaultdict(dict)
        yield
    finally:
        for cls, cache in zip(solvers, saved):
            cls._cached_instances = cache
        gspace._fields_intertwiners_basis_memory = memory


class AnalyticPointConv(nn.Module):
    """escnn's steerable point convolution (mean aggregation) with the :class:`ImplicitPointConv` signature.

    Args:
        group: symmetry group.
        in_type, out_type: FieldTypes or spec strings.
        width: radius of the kernel support (same unit as positions).
        n_rings: number of radial shells of the analytic basis.
        bias: bias on trivial output fields.
        aggr: must be ``"mean"`` (escnn's point convolution averages its messages).
        edge_attr_type, node_attr_type: must be ``None``: analytic kernels cannot be conditioned on
            attributes (that is the point of the implicit kernel).

    Shapes: as :class:`ImplicitPointConv`: ``x: (N_src, C_in)`` → ``(N_dst, C_out)``.
    """

    def __init__(
        self,
        group: GroupSpec,
        in_type: FieldType | str,
        out_type: FieldType | str,
        width: float = 2.0,
        n_rings: int = 3,
        bias: bool = True,
        aggr: str = "mean",
        edge_attr_type=None,
        node_attr_type=None,
        **_implicit_only,
    ):
        super().__init__()
        if aggr != "mean":
            raise ValueError(f"analytic kernels aggregate by mean (escnn's point convolution), got "
                             f"aggr={aggr!r}: set model.conv.aggr=mean to compare with model.kernel=analytic")
        if edge_attr_type is not None or node_attr_type is not None:
            raise ValueError(
                "analytic kernels cannot be conditioned on edge/node attributes; "
                "set model.edge_attrs=false and model.node_attrs=false with model.kernel=analytic"
            )
        self.group = group
        self.in_type, self.out_type = group.field_type(in_type), group.field_type(out_type)
        conv_cls = enn.R3PointConv if group.dim == 3 else enn.R2PointConv
        with _private_kernel_bases(group.gspace):
            self.conv = conv_cls(
                self.in_type, self.out_type, width=width, n_rings=n_rings, bias=bias, recompute=True
            )

    def _apply(self, fn, recurse: bool = True):
        return _apply_by_identity(self, fn, recurse)

    def train(self, mode: bool = True):
        # Not recursing into escnn's layer: in eval mode it registers an extra buffer, which would make
        # checkpoints saved in one mode unloadable in the other.
        self.training = mode
        return self

    def forward(
        self,
        x: torch.Tensor | GeometricTensor,
        pos,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor | None = None,
        node_attr=None,
    ):
        geometric = isinstance(x, GeometricTensor)
        tensor = x.tensor if geometric else x
        pos_src, pos_dst = pos if isinstance(pos, tuple) else (pos, pos)
        src, dst = edge_index
        out = self.conv.propagate(
            edge_index,
            x=(tensor, None),
            edge_delta=pos_src[src] - pos_dst[dst],
            size=(tensor.shape[0], pos_dst.shape[0]),
        )
        bias = self.conv.expand_bias()
        if bias is not None:
            out = out + bias
        return GeometricTensor(out, self.out_type, coords=pos_dst) if geometric else out


class AnalyticGridConv(nn.Module):
    """escnn's ``R2Conv``/``R3Conv`` (analytic steerable basis) with the :class:`ImplicitGridConv` signature.

    Args:
        group: symmetry group (``dim`` 2 or 3).
        in_type, out_type: FieldTypes or spec strings.
        kernel_size: odd number of taps per axis.
        padding: zero padding (default ``kernel_size // 2``).

    Types: ``in_type → out_type`` (GeometricTensors). Shapes: ``(B, C_in, *S) → (B, C_out, *S)``.
    """

    def __init__(
        self,
        group: GroupSpec,
        in_type: FieldType | str,
        out_type: FieldType | str,
        kernel_size: int = 5,
        padding: int | None = None,
        **_implicit_only,
    ):
        super().__init__()
        self.group = group
        self.in_type, self.out_type = group.field_type(in_type), group.field_type(out_type)
        conv_cls = enn.R3Conv if group.dim == 3 else enn.R2Conv
        with _private_kernel_bases(group.gspace):
            self.conv = conv_cls(
                self.in_type,
                self.out_type,
                kernel_size=kernel_size,
                padding=kernel_size // 2 if padding is None else padding,
                recompute=True,
            )

    def _apply(self, fn, recurse: bool = True):
        return _apply_by_identity(self, fn, recurse)

    train = AnalyticPointConv.train

    def forward(self, x: GeometricTensor) -> GeometricTensor:
        if x.type != self.in_type:
            raise ValueError(f"input type {x.type} does not match the layer's in_type {self.in_type}")
        filter_, bias = self.conv.expand_parameters()
        conv = torch.nn.functional.conv2d if self.group.dim == 2 else torch.nn.functional.conv3d
        return GeometricTensor(conv(x.tensor, filter_, bias, padding=self.conv.padding), self.out_type)


def _apply_by_identity(root: nn.Module, fn, recurse: bool) -> nn.Module:
    """``root._apply(fn)`` visiting submodules by identity.

    escnn's kernel-basis modules compare equal by value (``torch.allclose`` on their tensors), and torch's
    recursive ``_apply`` de-duplicates submodules by equality: once one basis is cast, comparing it with
    an equal one still in the old dtype raises.
    """
    nn.Module._apply(root, fn, recurse=False)
    if not recurse:
        return root
    stack, seen = list(root._modules.values()), {id(root)}
    while stack:
        module = stack.pop()
        if module is not None and id(module) not in seen:
            seen.add(id(module))
            module._apply(fn, recurse=False)
            stack.extend(module._modules.values())
    return root
