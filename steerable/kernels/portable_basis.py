"""Weights that mean the same in every environment: re-expressing θ in this environment's escnn basis.

escnn builds the basis of Hom_G(ρ_in, ρ_out) numerically (LAPACK). Where an irrep of G occurs more than
once in a representation (e.g. O(3) irreps restricted to the cylinder group), the basis is unique only
up to an invertible mixing of its elements, and that mixing depends on the numpy/LAPACK build: measured,
the span agrees to 1e-15 between numpy 1.26 (Python 3.11) and numpy 2.5 (Python 3.13), but a cyl
layer's basis elements differ by O(1), so weights θ trained in one environment and loaded in the other
would compute another (still equivariant) function.

A layer therefore saves its basis next to θ, per pair of field types: ``B (dim, o, i)``. On load, where
the saved ``B_old`` differs from this environment's ``B_new``, the mixing ``S`` with ``B_old = S B_new``
is solved for, and each block of weights becomes ``θ_new = θ_old S`` (then ``Σ θ_new B_new = Σ θ_old
B_old``: the same W). A basis whose span differs (other field types, other band limits) is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SPAN_TOLERANCE = 1e-8  # relative residual of B_old in span(B_new): float64 bases agree to ~1e-15
SAME_TOLERANCE = 1e-12  # bases closer than this are the same: θ is kept as it is


@dataclass(frozen=True)
class BasisBlock:
    """One pair of field types of a linear layer: its basis and where its weights sit in θ.

    Attributes:
        key: state-dict key suffix (``basis.<k>``).
        basis: ``(dim, o, i)`` float64, the basis sampled for one pair of fields.
        start: first index of the block's weights in θ.
        copies: number of (output field, input field) pairs sharing this basis; their weights are
            ``θ[start : start + copies·dim]`` viewed as ``(copies, dim)``.
    """

    key: str
    basis: torch.Tensor
    start: int
    copies: int

    @property
    def dim(self) -> int:
        return self.basis.shape[0]


class BasisMismatch(ValueError):
    """A saved basis that this environment's layer cannot express (another span)."""


def mixing(saved: torch.Tensor, current: torch.Tensor, where: str) -> torch.Tensor | None:
    """``S (dim, dim)`` with ``saved = S current`` (bases ``(dim, o, i)``), or None where they are the same.

    Raises :class:`BasisMismatch` if ``saved`` is not in the span of ``current``.
    """
    if saved.shape != current.shape:
        raise BasisMismatch(f"{where}: saved basis has shape {tuple(saved.shape)}, this layer's "
                            f"{tuple(current.shape)} (other field types or band limits?)")
    saved = saved.to(device=current.device, dtype=torch.float64).reshape(saved.shape[0], -1)
    current = current.to(torch.float64).reshape(current.shape[0], -1)
    scale = float(current.abs().max().clamp(min=1e-300))
    if float((saved - current).abs().max()) <= SAME_TOLERANCE * scale:
        return None
    # saved^T = current^T S^T: least squares in the (o·i)-dimensional sample space
    solution = torch.linalg.lstsq(current.T, saved.T).solution.T
    residual = float((solution @ current - saved).abs().max())
    if residual > SPAN_TOLERANCE * scale:
        raise BasisMismatch(f"{where}: the saved basis spans another space than this layer's "
                            f"(residual {residual:.1e}): the checkpoint was built for other field types")
    return solution


def reexpress(theta: torch.Tensor, block: BasisBlock, saved: torch.Tensor, where: str) -> bool:
    """Rewrite ``θ``'s weights of ``block`` (in place) from the ``saved`` basis into ``block.basis``.

    Returns whether anything changed.
    """
    s = mixing(saved, block.basis, where)
    if s is None:
        return False
    with torch.no_grad():
        view = theta[block.start:block.start + block.copies * block.dim].view(block.copies, block.dim)
        view.copy_((view.to(torch.float64) @ s.to(view.device)).to(theta.dtype))
    return True
