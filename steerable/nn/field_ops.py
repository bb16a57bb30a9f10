"""Equivariant operations on plain ``(N, type.size)`` tensors that carry an escnn FieldType.

Working on plain tensors (instead of wrapping every intermediate in a GeometricTensor) keeps the hot
path of the kernel MLP and the point convolutions free of bookkeeping; the FieldType of every tensor
is stated in the docstrings and checked at module construction.

All representations escnn builds are orthogonal, so field norms are G-invariant and any function of
them, or any scalar gate applied to a whole field, is exactly G-equivariant.
"""

from __future__ import annotations

import torch
from escnn.nn import FieldType
from torch import nn


class FieldLayout(nn.Module):
    """Index bookkeeping for a FieldType: which channel belongs to which field, which fields are trivial.

    Buffers:
        field_of_channel: ``(C,)`` long, field index of each channel.
        trivial_channel: ``(C,)`` bool, channel belongs to a field on which G acts trivially.
        field_dim: ``(F,)`` float, size of each field.
    """

    def __init__(self, field_type: FieldType):
        super().__init__()
        sizes = [rep.size for rep in field_type.representations]
        trivial = [rep.is_trivial() for rep in field_type.representations]
        self.num_fields = len(sizes)
        self.size = field_type.size
        self.register_buffer(
            "field_of_channel",
            torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
            persistent=False,
        )
        self.register_buffer(
            "trivial_channel",
            torch.repeat_interleave(torch.tensor(trivial), torch.tensor(sizes)),
            persistent=False,
        )
        self.register_buffer("trivial_field", torch.tensor(trivial), persistent=False)
        self.register_buffer("field_dim", torch.tensor(sizes, dtype=torch.float32), persistent=False)
        self.num_nontrivial = int((~self.trivial_field).sum())
        gate_index = torch.cumsum(~self.trivial_field, 0) - 1  # gate slot of each non-trivial field
        self.register_buffer(
            "gate_of_channel", gate_index.clamp(min=0)[self.field_of_channel], persistent=False
        )

    def field_sq_norms(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C) → (N, F)`` squared norm of every field (G-invariant)."""
        out = x.new_zeros(x.shape[0], self.num_fields)
        return out.index_add_(1, self.field_of_channel, x * x)


class GatedNonlinearity(nn.Module):
    """Exactly equivariant nonlinearity for any FieldType.

    Input type ``T ⊕ k×trivial`` (``k`` = number of non-trivial fields of T, the gates, last);
    output type ``T``. Trivial fields of T go through ``activation``; every non-trivial field is
    multiplied by ``sigmoid`` of its own gate, which is invariant, so ρ(g) commutes with the gating.

    Shapes: ``x: (N, T.size + k) → (N, T.size)``.
    """

    def __init__(self, field_type: FieldType, activation: nn.Module | None = None):
        super().__init__()
        self.layout = FieldLayout(field_type)
        self.activation = activation or nn.SiLU()
        self.num_gates = self.layout.num_nontrivial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, gates = x[:, : self.layout.size], x[:, self.layout.size :]
        act = self.activation(features)
        if self.num_gates == 0:
            return act
        # 2·sigmoid keeps the expected gain of the gate ≈ 1 at initialisation.
        gated = features * (2 * torch.sigmoid(gates))[:, self.layout.gate_of_channel]
        return torch.where(self.layout.trivial_channel, act, gated)


class FieldBatchNorm(nn.Module):
    """Equivariant batch norm: standard BN on trivial channels, RMS-of-norm scaling on the other fields.

    Trivial channels are centred and scaled per channel (with an affine map). Each non-trivial field f
    is divided by sqrt(E‖x_f‖²/dim f) (running estimate in eval mode) and scaled by a learnable
    per-field weight; no centring, which would break equivariance.

    Shapes: ``x: (N, C) → (N, C)`` with ``C = field_type.size``.
    """

    def __init__(self, field_type: FieldType, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.layout = FieldLayout(field_type)
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(self.layout.num_fields))
        self.bias = nn.Parameter(torch.zeros(self.layout.size))
        self.register_buffer("running_mean", torch.zeros(self.layout.size))
        self.register_buffer("running_var", torch.ones(self.layout.num_fields))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        if self.training and x.shape[0] > 1:
            mean = torch.where(lay.trivial_channel, x.mean(0), torch.zeros_like(x[0]))
            var = lay.field_sq_norms(x - mean).mean(0) / lay.field_dim
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = (self.weight * torch.rsqrt(var + self.eps))[lay.field_of_channel]
        bias = torch.where(lay.trivial_channel, self.bias, torch.zeros_like(self.bias))
        return (x - mean) * scale + bias


class NormNonlinearity(nn.Module):
    """Exactly equivariant norm nonlinearity: ``x_f ↦ x_f · sigmoid(‖x_f‖ − b_f)`` on non-trivial fields.

    Trivial fields go through ``activation``. Needs no gate channels (input type = output type).

    Shapes: ``x: (N, C) → (N, C)``.
    """

    num_gates = 0

    def __init__(self, field_type: FieldType, activation: nn.Module | None = None):
        super().__init__()
        self.layout = FieldLayout(field_type)
        self.activation = activation or nn.SiLU()
        self.bias = nn.Parameter(torch.zeros(self.layout.num_fields))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        norms = torch.sqrt(lay.field_sq_norms(x) + 1e-12)
        gated = x * (2 * torch.sigmoid(norms - self.bias))[:, lay.field_of_channel]
        return torch.where(lay.trivial_channel, self.activation(x), gated)


NONLINEARITIES = {"gated": GatedNonlinearity, "norm": NormNonlinearity}


def build_nonlinearity(kind: str, field_type: FieldType) -> GatedNonlinearity | NormNonlinearity:
    """``"gated"`` or ``"norm"`` nonlinearity for ``field_type`` (both exactly equivariant)."""
    if kind not in NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {kind!r}; valid: {', '.join(NONLINEARITIES)}")
    return NONLINEARITIES[kind](field_type)
