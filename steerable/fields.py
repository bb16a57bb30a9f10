"""Equivariant operations on plain ``(N, type.size)`` tensors that carry an escnn FieldType.

Working on plain tensors (instead of wrapping every intermediate in a GeometricTensor) keeps the hot
path of the kernel MLP and the point convolutions free of bookkeeping; the FieldType of every tensor
is stated in the docstrings and checked at module construction.

All representations escnn builds are orthogonal, so field norms are G-invariant and any function of
them, or any scalar gate applied to a whole field, is exactly G-equivariant.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
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
        self.runs = _field_runs(sizes, trivial)

    def field_sq_norms(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C) → (N, F)`` squared norm of every field (G-invariant)."""
        return torch.cat([run.view(x).square().sum(-1) for run in self.runs], dim=-1)


class FieldRun(NamedTuple):
    """Consecutive fields of one size and triviality: channels ``[start, stop)``, fields from ``first_field``.

    Non-trivial runs also own the gate slots ``[first_gate, first_gate + count)``. Working run by run
    replaces per-channel gathers (``x[:, index]`` and its scatter backward) by reshaped views. A plain
    tuple of ints, so ``torch.compile`` guards on its values (layers with equal types share one graph).
    """

    start: int
    stop: int
    first_field: int
    count: int
    dim: int
    trivial: bool
    first_gate: int

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C) → (N, count, dim)`` view of this run's channels."""
        return x[:, self.start : self.stop].view(x.shape[0], self.count, self.dim)


def _field_runs(sizes: list[int], trivial: list[bool]) -> tuple[FieldRun, ...]:
    runs: list[FieldRun] = []
    channel = gate = 0
    for field, (size, is_trivial) in enumerate(zip(sizes, trivial)):
        last = runs[-1] if runs else None
        if last is not None and last.dim == size and last.trivial == is_trivial:
            runs[-1] = last._replace(stop=last.stop + size, count=last.count + 1)
        else:
            runs.append(FieldRun(channel, channel + size, field, 1, size, is_trivial, gate))
        channel += size
        gate += 0 if is_trivial else 1
    return tuple(runs)


def runwise_nonlinearity(
    x: torch.Tensor,
    kind: str,
    runs: tuple[FieldRun, ...],
    norm_bias: torch.Tensor | None = None,
    channels_first: bool = False,
) -> torch.Tensor:
    """The gated (``kind="gated"``) or norm (``"norm"``) nonlinearity as a pure function, run by run.

    Trivial fields go through SiLU. ``gated``: the input ends with one gate channel per non-trivial
    field, and every non-trivial field is multiplied by ``2·sigmoid`` of its gate. ``norm``: every
    non-trivial field f is multiplied by ``2·sigmoid(‖x_f‖ − norm_bias_f)``. Both scale a field by an
    invariant, so they commute with ρ(g) for every G. Pure (tensors + tuples of ints), so the kernel
    MLP can ``torch.compile`` it once for all layers of equal type.

    Row layout ``(N, C_in)`` runs are column slices; channels-first ``(C_in, N)`` (``channels_first``)
    makes every run a contiguous block of rows, on which elementwise ops are ~4× faster on CPU.

    Shapes: ``x: (N, T.size + gates) → (N, T.size)`` (transposed when ``channels_first``).
    """
    dim = 0 if channels_first else 1
    size = runs[-1].stop
    pieces = x.split([*(run.stop - run.start for run in runs), x.shape[dim] - size], dim=dim)
    gates = 2 * torch.sigmoid(pieces[-1]) if kind == "gated" else None  # 2·sigmoid: gain ≈ 1 at init
    out = []
    for run, piece in zip(runs, pieces):
        if run.trivial:
            out.append(F.silu(piece))
            continue
        rows = piece.shape[1] if channels_first else piece.shape[0]
        shape = (run.count, run.dim, rows) if channels_first else (rows, run.count, run.dim)
        fields = piece.view(shape)
        if kind == "gated":
            first, last = run.first_gate, run.first_gate + run.count
            if channels_first:  # the gate broadcasts over the middle (dim) axis
                out.append((fields * gates[first:last, None, :]).view(piece.shape))
            else:
                out.append(scale_fields(fields, gates[:, first:last]).view(piece.shape))
            continue
        bias = norm_bias[run.first_field : run.first_field + run.count]
        axis, bias = (1, bias[:, None, None]) if channels_first else (-1, bias[:, None])
        norms = torch.sqrt(fields.square().sum(axis, keepdim=True) + 1e-12)
        out.append((fields * (2 * torch.sigmoid(norms - bias))).view(piece.shape))
    return torch.cat(out, dim=dim) if len(out) > 1 else out[0]


class _RunwiseNonlinearity(nn.Module):
    """Module form of :func:`runwise_nonlinearity` for one FieldType (see :class:`FieldRun`)."""

    kind = ""
    num_gates = 0

    def __init__(self, field_type: FieldType):
        super().__init__()
        self.layout = FieldLayout(field_type)

    @property
    def norm_bias(self) -> torch.Tensor | None:
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (N, in size) → (N, T.size)``."""
        return runwise_nonlinearity(x, self.kind, self.layout.runs, self.norm_bias)


class GatedNonlinearity(_RunwiseNonlinearity):
    """Exactly equivariant nonlinearity for any FieldType.

    Input type ``T ⊕ k×trivial`` (``k`` = number of non-trivial fields of T, the gates, last);
    output type ``T``. Trivial fields of T go through SiLU; every non-trivial field is multiplied by
    ``2·sigmoid`` of its own gate, which is invariant, so ρ(g) commutes with the gating.

    Shapes: ``x: (N, T.size + k) → (N, T.size)``.
    """

    kind = "gated"

    def __init__(self, field_type: FieldType):
        super().__init__(field_type)
        self.num_gates = self.layout.num_nontrivial


class FieldBatchNorm(nn.Module):
    """Equivariant batch norm: standard BN on trivial channels, RMS-of-norm scaling on the other fields.

    Trivial channels are centred and scaled per channel (with an affine map). Each non-trivial field f
    is divided by sqrt(E‖x_f‖²/dim f) (running estimate in eval mode) and scaled by a learnable
    per-field weight; no centring, which would break equivariance.

    With ``sync`` set (Lightning's ``sync_batchnorm``, see :class:`steerable.callbacks.SyncFieldBatchNorm`)
    and a distributed process group of several ranks, training-mode statistics are those of the batches
    of all ranks together: the moments ``(Σ x, Σ x², count)`` are summed over the ranks (gradients too),
    so normalised outputs and running statistics equal a single process's over the concatenated batch.

    Shapes: ``x: (N, C) → (N, C)`` with ``C = field_type.size``.
    """

    def __init__(self, field_type: FieldType, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.layout = FieldLayout(field_type)
        self.momentum, self.eps = momentum, eps
        self.sync = False
        self.weight = nn.Parameter(torch.ones(self.layout.num_fields))
        self.bias = nn.Parameter(torch.zeros(self.layout.size))
        self.register_buffer("running_mean", torch.zeros(self.layout.size))
        self.register_buffer("running_var", torch.ones(self.layout.num_fields))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.affine(x)
        return torch.addcmul(shift, x, scale)

    def affine(self, x: torch.Tensor | None = None, batch_dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalisation as ``y = x·scale + shift``, both ``(C,)``; batch statistics of ``x`` in training.

        Updates the running statistics in training mode. ``x`` may be None in eval mode. Returning the
        affine map (instead of applying it) lets a following linear layer absorb it for free.
        """
        if x is not None and self.uses_batch_statistics(x.shape[batch_dim]):
            return self.affine_from_moments(*moments(x, batch_dim), x.shape[batch_dim])
        return self._affine(self.running_mean, self.running_var)

    def uses_batch_statistics(self, batch_size: int) -> bool:
        """Whether the caller gathers the batch's moments for :meth:`affine_from_moments` (training mode,
        batch > 1). Synchronised over ranks: always in training mode, as every rank must take part in
        the reduction (whose total count then decides between batch and running statistics)."""
        return self.training and (batch_size > 1 or self.synchronised)

    @property
    def synchronised(self) -> bool:
        """Whether statistics are summed over the ranks of a distributed run (``sync`` and > 1 rank)."""
        return self.sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def affine_from_moments(
        self, total: torch.Tensor, total_sq: torch.Tensor, count: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-mode affine map from the moments of ``count`` rows; updates the running statistics.

        Synchronised (:attr:`synchronised`), the moments and counts of all ranks are summed first; with
        one row over all ranks the running statistics normalise, as for a single row without ``sync``.
        """
        if self.synchronised:
            total, total_sq = _SumOverRanks.apply(total, total_sq)
            count_tensor = torch.tensor([count], dtype=torch.long, device=total.device)
            dist.all_reduce(count_tensor)
            count = int(count_tensor.item())
            if count <= 1:
                return self._affine(self.running_mean, self.running_var)
        lay = self.layout
        channel_mean = total / count
        mean = torch.where(lay.trivial_channel, channel_mean, torch.zeros_like(channel_mean))
        # Σ_c∈f E[(x_c − mean_c)²] = Σ_c∈f (E[x_c²] − mean_c²); mean is zero on non-trivial channels.
        centred_sq = (total_sq / count - mean.square()).clamp(min=0)
        var = torch.cat([run.view(centred_sq[None]).sum(-1)[0] for run in lay.runs]) / lay.field_dim
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach(), self.momentum)
        return self._affine(mean, var)

    def _affine(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lay = self.layout
        scale = (self.weight * torch.rsqrt(var + self.eps))[lay.field_of_channel]
        bias = torch.where(lay.trivial_channel, self.bias, torch.zeros_like(self.bias))
        return scale, bias - mean * scale


class _SumOverRanks(torch.autograd.Function):
    """``(Σ x, Σ x²)`` of this rank → sums over all ranks; backward sums the gradients over the ranks
    too, since every rank's loss depends on every rank's rows through the shared statistics."""

    @staticmethod
    def forward(ctx, total: torch.Tensor, total_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        packed = torch.cat([total, total_sq])
        dist.all_reduce(packed)
        return packed[: total.shape[0]], packed[total.shape[0]:]

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor, grad_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        packed = torch.cat([grad_total, grad_sq])
        dist.all_reduce(packed)
        return packed[: grad_total.shape[0]], packed[grad_total.shape[0]:]


def norm_affine(norm: FieldBatchNorm | None, count: int,
                batch_moments: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The pending affine map of an optional batch norm over ``count`` rows (None without a norm).

    From ``batch_moments = (Σ x, Σ x²)`` when given (gathered where
    :meth:`FieldBatchNorm.uses_batch_statistics` said so; updates the running statistics), else from
    the running statistics.
    """
    if norm is None:
        return None
    return norm.affine() if batch_moments is None else norm.affine_from_moments(*batch_moments, count)


class NormNonlinearity(_RunwiseNonlinearity):
    """Exactly equivariant norm nonlinearity: ``x_f ↦ x_f · 2·sigmoid(‖x_f‖ − b_f)`` on non-trivial fields.

    Trivial fields go through SiLU. Needs no gate channels (input type = output type).

    Shapes: ``x: (N, C) → (N, C)``.
    """

    kind = "norm"

    def __init__(self, field_type: FieldType):
        super().__init__(field_type)
        self.bias = nn.Parameter(torch.zeros(self.layout.num_fields))

    @property
    def norm_bias(self) -> torch.Tensor:
        return self.bias


def scale_fields(fields: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``fields (N, k, d) · scale (N, k)[..., None]``: every field times its own invariant scalar.

    Same as the broadcast product, but its backward reduces ``grad·fields`` over d by adding d slices:
    autograd's broadcast reduction over a short last axis was the slowest op of the kernel MLP (measured
    4 ms vs 0.6 ms for (65536, 16, 3) on 2 CPU threads). Twice differentiable.
    """
    return _ScaleFields.apply(fields, scale)


class _ScaleFields(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fields: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(fields, scale)
        return fields * scale[..., None]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        fields, scale = ctx.saved_tensors
        grad_fields = grad * scale[..., None] if ctx.needs_input_grad[0] else None
        grad_scale = _sum_last(grad * fields) if ctx.needs_input_grad[1] else None
        return grad_fields, grad_scale


def moments(x: torch.Tensor, batch_dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(Σ x, Σ x²)`` over ``batch_dim`` of a 2-D ``x`` (addable across chunks of a batch;
    backward: one fused pass)."""
    return _Moments.apply(x, batch_dim)


class _Moments(torch.autograd.Function):
    """``x ↦ (Σ x, Σ x²)`` over ``batch_dim`` of a 2-D ``x``; backward is one fused pass ``g₁ + 2x·g₂``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, batch_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(x)
        ctx.batch_dim = batch_dim
        return x.sum(batch_dim), (x * x).sum(batch_dim)

    @staticmethod
    def backward(ctx, grad_sum: torch.Tensor, grad_sq: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        g1, g2 = grad_sum.unsqueeze(ctx.batch_dim), grad_sq.unsqueeze(ctx.batch_dim)
        return torch.addcmul(g1.expand_as(x), x, 2 * g2), None


def _sum_last(x: torch.Tensor) -> torch.Tensor:
    """``x.sum(-1)`` as a sum of slices when the last axis is short (much faster on CPU)."""
    if x.shape[-1] > 8:
        return x.sum(-1)
    total = x[..., 0]
    for k in range(1, x.shape[-1]):
        total = total + x[..., k]
    return total


NONLINEARITIES = {"gated": GatedNonlinearity, "norm": NormNonlinearity}


def build_nonlinearity(kind: str, field_type: FieldType) -> GatedNonlinearity | NormNonlinearity:
    """``"gated"`` or ``"norm"`` nonlinearity for ``field_type`` (both exactly equivariant)."""
    if kind not in NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {kind!r}; valid: {', '.join(NONLINEARITIES)}")
    return NONLINEARITIES[kind](field_type)
