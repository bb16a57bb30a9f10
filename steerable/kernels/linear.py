"""G-equivariant linear maps on plain tensors, parametrised by escnn's equivariant basis."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from escnn import nn as enn
from escnn.nn import FieldType
from torch import nn


class EquivariantLinear(nn.Module):
    """``y = W x + b`` with W ∈ Hom_G(in_type, out_type) and b on the trivial subspace of out_type.

    The weights live in escnn's :class:`escnn.nn.Linear` (its basis expansion and generalised He
    initialisation); this wrapper exposes the expanded ``(W, b)`` and applies them to plain tensors.
    In eval mode the expanded matrices are cached until the module is put back in training mode.

    Args:
        in_type: FieldType over a ``no_base_space`` gspace of G.
        out_type: FieldType over the same gspace.
        bias: learn a bias on the trivial components of ``out_type``.

    Shapes: ``x: (N, in_type.size) → (N, out_type.size)``.
    """

    def __init__(self, in_type: FieldType, out_type: FieldType, bias: bool = True):
        super().__init__()
        if in_type.gspace != out_type.gspace:
            raise ValueError(f"in_type {in_type} and out_type {out_type} live on different gspaces")
        self.in_type, self.out_type = in_type, out_type
        # recompute=True: escnn otherwise shares sampled bases between layers, so casting one model
        # (e.g. to float64) would silently change the dtype of every other model's layers.
        self.linear = enn.Linear(in_type, out_type, bias=bias, recompute=True)
        self._cache: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Expanded ``W: (out.size, in.size)`` and ``b: (out.size,)`` or ``None``."""
        if self.training:
            self._cache = None
            return self.linear.expand_parameters()
        if self._cache is None:
            with torch.no_grad():
                self._cache = self.linear.expand_parameters()
        return self._cache

    def train(self, mode: bool = True):
        # Deliberately not recursing: escnn's Linear registers extra buffers in eval mode, which would
        # make checkpoints saved in one mode unloadable in the other.
        self.training = mode
        self._cache = None
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight_and_bias()
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"{self.in_type.size} -> {self.out_type.size}"
