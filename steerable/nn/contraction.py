"""Node-wise aggregation of per-edge outer products (DESIGN.md §2).

For edges e = (s(e) → t(e)) with kernel-MLP activations h_e ∈ R^H and source features x_{s(e)} ∈ R^C,
compute per target node i

.. math::  A_i = Σ_{e: t(e)=i} h_e ⊗ x_{s(e)} ∈ R^{H×C}, \\qquad S_i = Σ_{e: t(e)=i} w_e\\, x_{s(e)}

without materialising the (E, H, C) tensor when the degree structure allows:

* fixed degree with edges grouped by target (kNN graphs): one ``bmm`` on (N, d, H) × (N, d, C);
* variable degree: pad every neighbourhood to the maximal degree (no sort when the edges are
  already sorted by target), one ``bmm`` (memory N·d_max·(H + C));
* very skewed degrees (padding > 4× the edges): ``index_add`` of outer products (memory E·H·C).

The layout (which of the three, degrees, padding slots) depends only on the graph; compute it once
with :func:`segment_layout` and pass it to every aggregation over the same edges. Choosing it reads
the maximal degree on the host (a sync on an accelerator): :func:`cached_segment_layout` shares one
analysis between the layers of a network that convolve over the same ``edge_index``.

The contraction weight W̃ ``(C_out, H·C_in)`` is mostly zero by Schur's lemma; with the kernel's
:class:`~steerable.kernels.sparsity.BlockSparsity` the messages are a few dense matmuls over its
non-zero blocks instead of one over all of it.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import torch

from steerable.kernels.sparsity import BlockSparsity

PAD_LIMIT = 4.0  # pad only while N·d_max ≤ PAD_LIMIT·E


@dataclass
class SegmentLayout:
    """How E edges map onto N target nodes.

    Attributes:
        num_targets: N.
        deg: ``(N,)`` long in-degree of every target.
        mode: ``"fixed"`` (consecutive runs of ``width`` edges per target 0…N−1), ``"padded"``
            (scatter into an (N, width) grid, ``width`` = max degree) or ``"scatter"`` (index_add).
        width: the neighbourhood size of the blocks (``fixed``/``padded``), else 0.
        order: ``(E,)`` edge permutation sorting by target, or None when already sorted (``padded``).
        slot: ``(E,)`` flat slot in the (N·width) grid of every (sorted) edge (``padded``).
        target: ``(E,)`` target of every edge (``scatter``).
    """

    num_targets: int
    deg: torch.Tensor
    mode: str
    width: int = 0
    order: torch.Tensor | None = None
    slot: torch.Tensor | None = None
    target: torch.Tensor | None = None

    def blocks(self, values: torch.Tensor) -> torch.Tensor:
        """Per-edge ``(E, F)`` values laid out as ``(N, width, F)`` (zero padded); fixed/padded modes only."""
        n, features = self.num_targets, values.shape[1]
        if self.mode == "fixed":
            return values.view(n, self.width, features)
        if self.order is not None:
            values = values[self.order]
        grid = values.new_zeros(n * self.width, features).index_copy_(0, self.slot, values)
        return grid.view(n, self.width, features)

    def blocks_t(self, values_t: torch.Tensor) -> torch.Tensor:
        """Channels-first ``(F, E)`` values laid out as ``(N, F, width)`` (a strided view when fixed)."""
        n, features = self.num_targets, values_t.shape[0]
        if self.mode == "padded":
            if self.order is not None:
                values_t = values_t[:, self.order]
            values_t = values_t.new_zeros(features, n * self.width).index_copy_(1, self.slot, values_t)
        return values_t.reshape(features, n, self.width).transpose(0, 1)


def segment_layout(target: torch.Tensor, num_targets: int) -> SegmentLayout:
    """Choose the aggregation layout for edges with targets ``target (E,)`` onto ``num_targets`` nodes."""
    num_edges = target.numel()
    deg = torch.bincount(target, minlength=num_targets)
    if num_edges == 0 or num_targets == 0:
        return SegmentLayout(num_targets, deg, "scatter", target=target)
    degree = num_edges // num_targets
    if degree * num_targets == num_edges and _grouped_fixed_degree(target, num_targets, degree):
        return SegmentLayout(num_targets, deg, "fixed", width=degree)
    max_deg = int(deg.max())
    if num_targets * max_deg <= PAD_LIMIT * num_edges:
        order = None
        if not bool((target[1:] >= target[:-1]).all()):
            order = torch.argsort(target, stable=True)
            target = target[order]
        start = torch.cumsum(deg, 0) - deg
        slot = target * max_deg + (torch.arange(num_edges, device=target.device) - start[target])
        return SegmentLayout(num_targets, deg, "padded", width=max_deg, order=order, slot=slot)
    return SegmentLayout(num_targets, deg, "scatter", target=target)


_last_layout = threading.local()  # per thread: (weakref to edge_index, key, layout) of the latest call


def cached_segment_layout(edge_index: torch.Tensor, num_targets: int) -> SegmentLayout:
    """:func:`segment_layout` of the targets ``edge_index[1]``, reused while the same graph comes back.

    Remembers the latest graph only (per thread): the same ``edge_index`` tensor object, unmodified (its
    version counter; inference tensors have none), with the same ``num_targets`` and in the same
    inference mode gets the same layout, so the layers of one forward pass share one analysis (one host
    sync instead of one per layer).
    """
    version = None if edge_index.is_inference() else edge_index._version
    key = (version, num_targets, torch.is_inference_mode_enabled())
    last = getattr(_last_layout, "value", None)
    if last is not None and last[0]() is edge_index and last[1] == key:
        return last[2]
    layout = segment_layout(edge_index[1], num_targets)
    _last_layout.value = (weakref.ref(edge_index), key, layout)
    return layout


def aggregate_outer_and_sum(h_t: torch.Tensor, x_src: torch.Tensor, weight: torch.Tensor | None,
                            layout: SegmentLayout) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``A_i = Σ h_e ⊗ x_e`` ``(N, H, C)`` and, if ``weight (E,)`` is given, ``S_i = Σ w_e x_e`` ``(N, C)``.

    ``h_t`` is channels first, ``(H, E)`` (as the kernel MLP produces it); ``x_src`` is ``(E, C)``.
    Both sums share the blocked layout of ``x_src`` (one gather/pad, two ``bmm``).
    """
    n, hidden, channels = layout.num_targets, h_t.shape[0], x_src.shape[1]
    if layout.mode == "scatter":
        if h_t.shape[1] == 0:
            outer = h_t.new_zeros(n, hidden, channels)
        else:
            prod = (h_t.T[:, :, None] * x_src[:, None, :]).reshape(h_t.shape[1], hidden * channels)
            outer = h_t.new_zeros(n, hidden * channels).index_add_(0, layout.target, prod)
            outer = outer.view(n, hidden, channels)
        summed = None
        if weight is not None:
            summed = x_src.new_zeros(n, channels).index_add_(0, layout.target, x_src * weight[:, None])
        return outer, summed
    x_blocks = layout.blocks(x_src)
    outer = torch.bmm(layout.blocks_t(h_t), x_blocks)
    summed = None
    if weight is not None:
        summed = (layout.blocks(weight[:, None]) * x_blocks).sum(1)  # faster than N (1×d)·(d×C) bmms
    return outer, summed


def contract_messages(h_t: torch.Tensor, x_src: torch.Tensor, window: torch.Tensor | None,
                      weight: torch.Tensor, bias: torch.Tensor | None, layout: SegmentLayout,
                      sparsity: BlockSparsity | None = None) -> torch.Tensor:
    """Summed messages ``Σ_{e→i} (W̃·h_e + w_e B) x_e`` per target node (DESIGN.md §2): ``(N, C_out)``.

    ``h_t (H, E)`` is φ's windowed hidden activation (channels first); ``weight`` the Hom layer W̃
    flattened, ``(C_out, H·C_in)``, or, with ``sparsity``, only its block entries (see
    :meth:`BlockSparsity.matmul`); ``bias (C_out, C_in)`` or None its invariant part B, scaled per edge by
    ``window (E,)`` (needed only with a bias).
    """
    outer, windowed_sum = aggregate_outer_and_sum(h_t, x_src, None if bias is None else window, layout)
    outer_flat = outer.flatten(1)  # (N, H·C_in); flatten, not reshape(N, -1): N may be 0
    out = outer_flat @ weight.T if sparsity is None else sparsity.matmul(outer_flat, weight)
    return out if bias is None else torch.addmm(out, windowed_sum, bias.T)


def _grouped_fixed_degree(target: torch.Tensor, num_targets: int, degree: int) -> bool:
    """True when edges come in consecutive runs of ``degree`` edges per target 0, 1, …, N−1."""
    if degree == 0:
        return False
    runs = target.view(num_targets, degree)
    return bool((runs == torch.arange(num_targets, device=target.device)[:, None]).all())
