"""A linear layer with repeated irreps, and its checkpoint as another escnn install would save it."""

from __future__ import annotations

import torch

from steerable.groups import build_group
from steerable.kernels.linear import EquivariantLinear


def cyl_linear() -> EquivariantLinear:
    """A float64 cyl layer whose Hom bases have repeated irreps (escnn fixes them up to a mixing)."""
    spec = build_group("cyl", maximum_frequency=2)
    return EquivariantLinear(spec.field_type("2x0e+1x1o+1x2e", on="fiber"),
                             spec.field_type("1x0e+2x1o+1x2e", on="fiber")).double()


def mixed_checkpoint(layer: EquivariantLinear, seed: int = 0) -> dict[str, torch.Tensor]:
    """``layer``'s state (on the CPU) as another environment would save it: every basis mixed by a
    random S (B' = S B) and θ re-expressed for it (θ' = θ S⁻¹), so that W is unchanged."""
    g = torch.Generator().manual_seed(seed)
    state = {key: value.cpu() for key, value in layer.state_dict().items()}
    theta = state["linear.weights"].clone()
    for _, block in layer._basis_blocks:
        s = torch.randn(block.dim, block.dim, generator=g, dtype=torch.float64) + 3 * torch.eye(block.dim)
        state[block.key] = torch.einsum("de,eoi->doi", s, block.basis)
        view = theta[block.start:block.start + block.copies * block.dim].view(block.copies, block.dim)
        view.copy_(view @ torch.linalg.inv(s))
    state["linear.weights"] = theta
    return state
