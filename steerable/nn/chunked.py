"""Node-wise contraction in chunks of target nodes, with φ recomputed in backward (activation checkpointing).

The plain node-wise path keeps every activation of the kernel MLP φ for backward: about
``(n_layers − 1)·(2H + gates)`` floats per edge, which sets the memory slope in E. Here the edges
(sorted by target) are cut into consecutive chunks of target nodes holding about ``max_edges`` edges;
each chunk's messages are computed under :func:`torch.utils.checkpoint.checkpoint`, which keeps only the
chunk's inputs (relative positions, attributes, indices: a few floats per edge) and recomputes φ for that
chunk during backward. Peak memory is then one chunk's activations plus O(E) inputs.

Batch norm inside φ needs statistics over *all* edges. They are gathered first, one checkpointed sweep
per normalised layer (each sweep sums per-chunk moments Σa, Σa²), and folded into the next layer's
weights (the last one into the Hom layer); autograd then differentiates through the statistics exactly as
in the unchunked path. The price is recomputation: with L hidden layers, all normalised, layer ℓ runs in
L − ℓ + 2 sweeps, each once more in backward. Measured (2 CPU threads, E = 65k, chunks of 4k edges):
≈1.1–1.6× the unchunked step without batch norm in φ, 1.9–4.9× with the default two normalised layers
(``make bench``: 1.9–4.9× for E ≥ 8k; the step's tensor memory stays at 13–28 MB up to E = 131k).
(Returning the per-node sums ``A_i = Σ w a ⊗ x`` from the message sweep would save a sweep but was
measured to keep ~1 kB/edge alive in backward.)
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from steerable.fields import norm_affine
from steerable.kernels.implicit import ImplicitKernel, LinearWeights, fold_affine
from steerable.nn.contraction import contract_messages, segment_layout


def node_chunks(deg: torch.Tensor, max_edges: int) -> list[tuple[int, int, int, int]]:
    """Consecutive target-node ranges holding about ``max_edges`` edges each (edges sorted by target).

    Returns ``(first_node, end_node, first_edge, end_edge)`` per chunk; a chunk exceeds ``max_edges`` by
    at most the degree of its last node (one node's neighbourhood is never split).
    """
    if max_edges < 1:
        raise ValueError(f"chunk_edges must be >= 1, got {max_edges}")
    offsets = torch.cumsum(deg, 0) - deg  # first edge of every node
    chunk_of_node = torch.div(offsets, max_edges, rounding_mode="floor")
    _, counts = torch.unique_consecutive(chunk_of_node, return_counts=True)
    node_bounds = [0, *torch.cumsum(counts, 0).tolist()]
    edge_bounds = [*offsets[node_bounds[:-1]].tolist(), int(deg.sum())]
    return [
        (node_bounds[i], node_bounds[i + 1], edge_bounds[i], edge_bounds[i + 1])
        for i in range(len(node_bounds) - 1)
    ]


def chunked_messages(
    kernel: ImplicitKernel,
    x: torch.Tensor,
    rel_pos: torch.Tensor,
    attr: torch.Tensor | None,
    src: torch.Tensor,
    dst: torch.Tensor,
    num_dst: int,
    max_edges: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed messages ``Σ_{e→i} k(x_e) x_{s(e)}`` per target node, φ recomputed chunk by chunk in backward.

    Shapes: ``x: (N_src, C_in)``, ``rel_pos: (E, d)``, ``attr: (E, A)`` or None, ``src, dst: (E,)``
    → ``(num_dst, C_out)`` and the in-degrees ``(num_dst,)``.
    """
    if not bool((dst[1:] >= dst[:-1]).all()):
        order = torch.argsort(dst, stable=True)
        rel_pos, src, dst = rel_pos[order], src[order], dst[order]
        attr = None if attr is None else attr[order]
    deg = torch.bincount(dst, minlength=num_dst)
    chunks = node_chunks(deg, max_edges)

    def inputs(e0: int, e1: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return rel_pos[e0:e1], None if attr is None else attr[e0:e1]

    weights: list[LinearWeights] = []
    affine = None
    for linear, _, norm in kernel.layers():
        weights.append(fold_affine(linear.weight_and_bias(), affine))
        moments = None
        if norm is not None and norm.uses_batch_statistics(rel_pos.shape[0]):
            moments = _total([
                checkpoint(_chunk_moments, kernel, *inputs(e0, e1), list(weights), use_reentrant=False)
                for _, _, e0, e1 in chunks
            ])
        affine = norm_affine(norm, rel_pos.shape[0], moments)
    weight, bias, sparsity = kernel.contraction_weights(affine)
    outs = [
        checkpoint(_chunk_messages, kernel, weights, weight, bias, sparsity, x, *inputs(e0, e1), src[e0:e1],
                   dst[e0:e1] - n0, n1 - n0, use_reentrant=False)
        for n0, n1, e0, e1 in chunks
    ]
    return torch.cat(outs), deg


def _total(moments: list) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.stack(parts).sum(0) for parts in zip(*moments))


def _chunk_moments(kernel, rel_pos, attr, weights):
    return kernel.hidden_given(rel_pos, attr, weights, with_moments=True)[2]


def _chunk_messages(kernel, weights, weight, bias, sparsity, x, rel_pos, attr, src, local_dst, num_nodes):
    """Messages ``(n, C_out)`` summed per target node of one chunk."""
    windowed, window, _ = kernel.hidden_given(rel_pos, attr, weights, windowed=True)
    return contract_messages(windowed, x[src], window, weight, bias, segment_layout(local_dst, num_nodes),
                             sparsity)
