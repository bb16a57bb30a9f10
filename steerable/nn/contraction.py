"""Node-wise aggregation of per-edge outer products (DESIGN.md §2).

For edges e = (s(e) → t(e)) with kernel-MLP activations h_e ∈ R^H and source features x_{s(e)} ∈ R^C,
compute per target node i

.. math::  A_i = Σ_{e: t(e)=i} h_e ⊗ x_{s(e)} ∈ R^{H×C}

without materialising the (E, H, C) tensor when the degree structure allows:

* fixed degree with edges grouped by target (kNN graphs): one ``bmm`` on (N, d, H) × (N, d, C);
* variable degree: sort by target, pad every neighbourhood to the maximal degree, one ``bmm``
  (memory N·d_max·(H + C));
* very skewed degrees (padding > 4× the edges): ``index_add`` of outer products (memory E·H·C).
"""

from __future__ import annotations

import torch

PAD_LIMIT = 4.0  # pad only while N·d_max ≤ PAD_LIMIT·E


def aggregate_outer(h: torch.Tensor, x_src: torch.Tensor, target: torch.Tensor,
                    num_targets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum outer products per target node.

    Args:
        h: ``(E, H)`` per-edge activations.
        x_src: ``(E, C)`` source features gathered per edge.
        target: ``(E,)`` long, target node of each edge.
        num_targets: number of target nodes N.

    Returns:
        ``A: (N, H, C)`` and the in-degree ``deg: (N,)`` (long).
    """
    num_edges, hidden = h.shape
    channels = x_src.shape[1]
    deg = torch.bincount(target, minlength=num_targets)
    if num_edges == 0:
        return h.new_zeros(num_targets, hidden, channels), deg
    degree = num_edges // num_targets if num_targets else 0
    if degree * num_targets == num_edges and _grouped_fixed_degree(target, num_targets, degree):
        return torch.bmm(h.view(num_targets, degree, hidden).transpose(1, 2),
                         x_src.view(num_targets, degree, channels)), deg
    max_deg = int(deg.max())
    if num_targets * max_deg <= PAD_LIMIT * num_edges:
        order = torch.argsort(target, stable=True)
        sorted_target = target[order]
        start = torch.cumsum(deg, 0) - deg
        slot = sorted_target * max_deg + (torch.arange(num_edges, device=h.device) - start[sorted_target])
        h_pad = h.new_zeros(num_targets * max_deg, hidden).index_copy_(0, slot, h[order])
        x_pad = x_src.new_zeros(num_targets * max_deg, channels).index_copy_(0, slot, x_src[order])
        return torch.bmm(h_pad.view(num_targets, max_deg, hidden).transpose(1, 2),
                         x_pad.view(num_targets, max_deg, channels)), deg
    outer = (h[:, :, None] * x_src[:, None, :]).view(num_edges, hidden * channels)
    out = h.new_zeros(num_targets, hidden * channels).index_add_(0, target, outer)
    return out.view(num_targets, hidden, channels), deg


def _grouped_fixed_degree(target: torch.Tensor, num_targets: int, degree: int) -> bool:
    """True when edges come in consecutive runs of ``degree`` edges per target 0, 1, …, N−1."""
    if degree == 0:
        return False
    expected = torch.arange(num_targets, device=target.device).repeat_interleave(degree)
    return bool(torch.equal(target, expected))
