"""Graph construction for point clouds in plain torch (kNN, radius, fully connected, subsampling).

PyG's ``knn_graph``/``radius_graph``/``fps`` need ``pyg-lib``/``torch-cluster``; these replacements
work on any device with nothing but torch. Several clouds are processed at once, identified by a
``batch (N,)`` vector of graph ids (PyG convention; need not be sorted). Distances are computed
exactly (``torch.cdist`` without the matmul shortcut) in padded per-graph blocks whose size is
bounded by ``chunk_elements`` distances, so memory stays bounded for large batches.

Edge convention (as in PyG's ``flow="source_to_target"``): ``edge_index[0]`` is the source
(neighbour ``j``) and ``edge_index[1]`` the target (centre ``i``). Edges are sorted by target and,
for kNN, by distance within a target, ties broken by the lower source index; a kNN graph therefore
has exactly ``k`` edges per target whenever its cloud has enough points, so downstream code may
reshape sources to ``(N, k)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_CHUNK_ELEMENTS = 1 << 22  # distances held at once (~16 MB in float32)


def _check_pos(pos: Tensor, name: str) -> None:
    if pos.dim() != 2 or pos.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(pos.shape)}")
    if pos.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 points)")
    if not pos.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {pos.dtype}")
    if not torch.isfinite(pos).all():
        raise ValueError(f"{name} contains NaN or inf values")


def _check_batch(batch: Tensor | None, n: int, device: torch.device, name: str) -> Tensor:
    if batch is None:
        return torch.zeros(n, dtype=torch.long, device=device)
    if batch.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(batch.shape)}")
    if batch.dtype.is_floating_point or batch.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {batch.dtype}")
    if n and int(batch.min()) < 0:
        raise ValueError(f"{name} contains negative graph ids")
    return batch.long()


class _Blocks:
    """Points of each graph laid out in a padded ``(B, M, D)`` block (stable order within graphs)."""

    def __init__(self, pos: Tensor, batch: Tensor, num_graphs: int):
        self.perm = torch.argsort(batch, stable=True)  # sorted position -> original index
        self.count = torch.bincount(batch, minlength=num_graphs)
        self.ptr = torch.cumsum(self.count, 0) - self.count
        self.max = int(self.count.max()) if num_graphs else 0
        sorted_batch = batch[self.perm]
        self.local = torch.arange(batch.numel(), device=batch.device) - self.ptr[sorted_batch]
        self.pos = pos.new_zeros(num_graphs, self.max, pos.shape[1])
        self.pos[sorted_batch, self.local] = pos[self.perm]
        self.valid = torch.zeros(num_graphs, self.max, dtype=torch.bool, device=pos.device)
        self.valid[sorted_batch, self.local] = True
        self.index = torch.full((num_graphs, self.max), -1, dtype=torch.long, device=pos.device)
        self.index[sorted_batch, self.local] = self.perm


def _distance_blocks(src: _Blocks, dst: _Blocks, exclude_self: bool, chunk_elements: int):
    """Yield ``(g0, g1, r0, r1, dist)`` with ``dist (g1-g0, r1-r0, Ms)``; invalid pairs are inf."""
    num_graphs, ms = src.pos.shape[0], max(src.max, 1)
    rows = max(1, min(dst.max, chunk_elements // ms))
    graphs = max(1, chunk_elements // (ms * max(dst.max, 1)))
    for g0 in range(0, num_graphs, graphs):
        g1 = min(num_graphs, g0 + graphs)
        for r0 in range(0, dst.max, rows):
            r1 = min(dst.max, r0 + rows)
            dist = torch.cdist(dst.pos[g0:g1, r0:r1], src.pos[g0:g1],
                               compute_mode="donot_use_mm_for_euclid_dist")
            src_ok, dst_ok = src.valid[g0:g1], dst.valid[g0:g1, r0:r1]
            if not (bool(src_ok.all()) and bool(dst_ok.all())):  # padding present in this block
                dist = dist.masked_fill(~src_ok[:, None, :] | ~dst_ok[:, :, None], math.inf)
            if exclude_self:
                r = torch.arange(r0, r1, device=dist.device)
                keep = r < ms
                dist[:, keep.nonzero().squeeze(1), r[keep]] = math.inf
            yield g0, g1, r0, r1, dist


def _smallest_k(dist: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``k`` smallest entries along the last dim, sorted by (value, index) deterministically."""
    k = min(k, dist.shape[-1])
    extra = min(k + 1, dist.shape[-1])  # one more, to see ties at the boundary
    vals, idx = dist.topk(extra, dim=-1, largest=False, sorted=True)
    # topk may break ties arbitrarily: rows with a tie across the k-th value use a stable sort.
    ambiguous = vals[..., k - 1] == vals[..., extra - 1] if extra > k else None
    vals, idx = vals[..., :k], idx[..., :k]
    if ambiguous is not None and ambiguous.any():
        v2, i2 = dist[ambiguous].sort(dim=-1, stable=True)
        vals[ambiguous], idx[ambiguous] = v2[..., :k], i2[..., :k]
    idx, order = idx.sort(dim=-1)
    vals = vals.gather(-1, order)
    vals, order = vals.sort(dim=-1, stable=True)
    return vals, idx.gather(-1, order)


def _prepare(pos_src, pos_dst, batch_src, batch_dst):
    _check_pos(pos_src, "pos_src")
    _check_pos(pos_dst, "pos_dst")
    if pos_src.shape[1] != pos_dst.shape[1]:
        raise ValueError(f"pos_src and pos_dst dimensions differ: {pos_src.shape[1]} vs {pos_dst.shape[1]}")
    batch_src = _check_batch(batch_src, pos_src.shape[0], pos_src.device, "batch_src")
    batch_dst = _check_batch(batch_dst, pos_dst.shape[0], pos_dst.device, "batch_dst")
    num_graphs = int(max(batch_src.max(), batch_dst.max())) + 1
    return _Blocks(pos_src, batch_src, num_graphs), _Blocks(pos_dst, batch_dst, num_graphs)


def _knn(pos_src, pos_dst, k, batch_src, batch_dst, exclude_self, chunk_elements) -> Tensor:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    src, dst = _prepare(pos_src, pos_dst, batch_src, batch_dst)
    nbr = torch.full((pos_dst.shape[0], k), -1, dtype=torch.long, device=pos_dst.device)
    for g0, g1, r0, r1, dist in _distance_blocks(src, dst, exclude_self, chunk_elements):
        vals, idx = _smallest_k(dist, k)
        source = src.index[g0:g1].gather(1, idx.flatten(1)).view_as(idx)
        source = source.masked_fill(~torch.isfinite(vals), -1)
        target = dst.index[g0:g1, r0:r1]
        ok = target >= 0
        nbr[target[ok], : idx.shape[-1]] = source[ok]
    target = torch.arange(pos_dst.shape[0], device=nbr.device).repeat_interleave(k)
    source = nbr.flatten()
    keep = source >= 0
    return torch.stack([source[keep], target[keep]])


def knn_graph(pos: Tensor, k: int, batch: Tensor | None = None, loop: bool = False,
              chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> Tensor:
    """Edges from each point's ``k`` nearest neighbours (same graph) to the point.

    Args:
        pos (Tensor): positions ``(N, D)``.
        k (int): neighbours per point (``>= 1``).
        batch (Tensor, optional): graph id per point ``(N,)`` (default: one graph).
        loop (bool): count the point itself as a neighbour (default: ``False``).
        chunk_elements (int): bound on distances held in memory at once.

    Returns:
        ``edge_index (2, E)``: row 0 sources (neighbours), row 1 targets, sorted by target then
        distance; ``E = N * k`` when every graph has more than ``k`` points (``>= k`` with loops).

    >>> knn_graph(torch.tensor([[0.0], [1.0], [3.0]]), k=1)
    tensor([[1, 0, 1],
            [0, 1, 2]])
    """
    return _knn(pos, pos, k, batch, batch, not loop, chunk_elements)


def knn_bipartite(pos_src: Tensor, pos_dst: Tensor, k: int, batch_src: Tensor | None = None,
                  batch_dst: Tensor | None = None,
                  chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> Tensor:
    """Edges from the ``k`` nearest source points (same graph) to each destination point.

    Used between levels of a point hierarchy: sources are the dense level, destinations the
    subsampled points (a destination that is also a source gets itself as nearest neighbour).

    Shapes: ``pos_src (N_src, D)``, ``pos_dst (N_dst, D)``, ``batch_src (N_src,)``,
    ``batch_dst (N_dst,)``; returns ``edge_index (2, E)`` with row 0 indexing ``pos_src`` and row
    1 indexing ``pos_dst``, sorted by destination then distance.
    """
    return _knn(pos_src, pos_dst, k, batch_src, batch_dst, False, chunk_elements)


def _radius(pos_src, pos_dst, r, batch_src, batch_dst, exclude_self, max_num_neighbors,
            chunk_elements) -> Tensor:
    if not (r > 0 and math.isfinite(r)):
        raise ValueError(f"r must be a positive finite number, got {r!r}")
    if max_num_neighbors is not None and max_num_neighbors < 1:
        raise ValueError(f"max_num_neighbors must be >= 1 or None, got {max_num_neighbors!r}")
    src, dst = _prepare(pos_src, pos_dst, batch_src, batch_dst)
    sources, targets = [], []
    for g0, g1, r0, r1, dist in _distance_blocks(src, dst, exclude_self, chunk_elements):
        if max_num_neighbors is not None:
            dist, idx = _smallest_k(dist, max_num_neighbors)
        else:
            idx = torch.arange(dist.shape[-1], device=dist.device).expand_as(dist)
        g, row, col = (dist <= r).nonzero(as_tuple=True)
        targets.append(dst.index[g0:g1, r0:r1][g, row])
        sources.append(src.index[g0:g1][g, idx[g, row, col]])
    source, target = torch.cat(sources), torch.cat(targets)
    order = torch.argsort(target, stable=True)
    return torch.stack([source[order], target[order]])


def radius_graph(pos: Tensor, r: float, batch: Tensor | None = None, loop: bool = False,
                 max_num_neighbors: int | None = None,
                 chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> Tensor:
    """Edges between points of the same graph at distance ``<= r``.

    Args:
        pos (Tensor): positions ``(N, D)``.
        r (float): cutoff radius (inclusive).
        batch (Tensor, optional): graph id per point ``(N,)``.
        loop (bool): include self-loops (default: ``False``).
        max_num_neighbors (int, optional): keep only the nearest this many per target
            (default: ``None``, unlimited; PyG silently defaults to 32).
        chunk_elements (int): bound on distances held in memory at once.

    Returns:
        ``edge_index (2, E)``: row 0 sources, row 1 targets, sorted by target (then by source
        index, or by distance when ``max_num_neighbors`` is set).
    """
    return _radius(pos, pos, r, batch, batch, not loop, max_num_neighbors, chunk_elements)


def radius_bipartite(pos_src: Tensor, pos_dst: Tensor, r: float, batch_src: Tensor | None = None,
                     batch_dst: Tensor | None = None, max_num_neighbors: int | None = None,
                     chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> Tensor:
    """Edges from source points within ``r`` of each destination point (same graph).

    Shapes as in :func:`knn_bipartite`; sorted by destination.
    """
    return _radius(pos_src, pos_dst, r, batch_src, batch_dst, False, max_num_neighbors,
                   chunk_elements)


def fully_connected_graph(batch: Tensor, loop: bool = False) -> Tensor:
    """All ordered pairs of points in the same graph.

    Args:
        batch (Tensor): graph id per point ``(N,)``.
        loop (bool): include self-loops (default: ``False``).

    Returns:
        ``edge_index (2, E)`` with ``E = sum_b n_b (n_b - 1)`` (``n_b^2`` with loops), sorted by
        target then source.
    """
    if batch.dim() != 1 or batch.numel() == 0:
        raise ValueError(f"batch must be a non-empty (N,) tensor, got shape {tuple(batch.shape)}")
    batch = _check_batch(batch, batch.numel(), batch.device, "batch")
    perm = torch.argsort(batch, stable=True)
    count = torch.bincount(batch)
    ptr = torch.cumsum(count, 0) - count
    degree = count[batch]
    target = torch.arange(batch.numel(), device=batch.device).repeat_interleave(degree)
    offset = torch.arange(target.numel(), device=batch.device) - (
        torch.cumsum(degree, 0) - degree).repeat_interleave(degree)
    source = perm[ptr[batch[target]] + offset]
    if not loop:
        keep = source != target
        source, target = source[keep], target[keep]
    return torch.stack([source, target])


def _device_of(generator: torch.Generator | None) -> torch.device | None:
    return generator.device if generator is not None else None


def _sample_sizes(count: Tensor, ratio: float | None, n: int | None) -> Tensor:
    if (ratio is None) == (n is None):
        raise ValueError("give exactly one of ratio or n")
    if ratio is not None:
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
        return torch.ceil(count.double() * ratio).long()
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    return count.clamp(max=n)


def farthest_point_sampling(pos: Tensor, batch: Tensor | None = None, ratio: float | None = None,
                            n: int | None = None, random_start: bool = False,
                            generator: torch.Generator | None = None) -> Tensor:
    """Farthest point sampling per graph.

    Each graph keeps ``ceil(ratio * n_b)`` points (or ``min(n, n_b)``), starting from its first
    point (or a random one with ``random_start``) and repeatedly adding the point farthest from
    those chosen (ties: lowest index). Coincident points are distinct choices: no index is returned
    twice. With a fixed start the result is invariant under rotations and translations of the cloud.

    Args:
        pos (Tensor): positions ``(N, D)``.
        batch (Tensor, optional): graph id per point ``(N,)``.
        ratio (float, optional): fraction of points to keep per graph, in ``(0, 1]``.
        n (int, optional): number of points to keep per graph (exclusive with ``ratio``).
        random_start (bool): start from a random point of each graph (default: ``False``).
        generator (torch.Generator, optional): RNG for the random start.

    Returns:
        ``index (M,)`` into ``pos``, grouped by graph in increasing graph id, in selection order.
    """
    _check_pos(pos, "pos")
    batch = _check_batch(batch, pos.shape[0], pos.device, "batch")
    blocks = _Blocks(pos, batch, int(batch.max()) + 1)
    sizes = _sample_sizes(blocks.count, ratio, n)
    num_graphs, steps = blocks.count.numel(), int(sizes.max())
    graphs = torch.arange(num_graphs, device=pos.device)
    if random_start:
        rand = torch.rand(num_graphs, generator=generator, device=_device_of(generator))
        current = (rand.to(pos.device) * blocks.count).long().clamp(max=blocks.max - 1)
    else:
        current = torch.zeros(num_graphs, dtype=torch.long, device=pos.device)
    mind = torch.full((num_graphs, blocks.max), math.inf, dtype=pos.dtype, device=pos.device)
    mind = mind.masked_fill(~blocks.valid, -1.0)  # padding stays at -1: never the farthest
    chosen = torch.empty(num_graphs, steps, dtype=torch.long, device=pos.device)
    for step in range(steps):
        chosen[:, step] = current
        dist = (blocks.pos - blocks.pos[graphs, current].unsqueeze(1)).square_().sum(-1)
        torch.minimum(mind, dist, out=mind)
        mind[graphs, current] = -0.5  # chosen: never again, even when every distance left is 0
        current = mind.argmax(dim=1)
    keep = torch.arange(steps, device=pos.device) < sizes[:, None]
    return blocks.index.gather(1, chosen)[keep]


def random_sampling(pos: Tensor, batch: Tensor | None = None, ratio: float | None = None,
                    n: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Uniformly random subset per graph, without replacement (same sizes as FPS).

    Shapes: ``pos (N, D)``, ``batch (N,)``; returns ``index (M,)`` grouped by graph id.
    """
    _check_pos(pos, "pos")
    batch = _check_batch(batch, pos.shape[0], pos.device, "batch")
    count = torch.bincount(batch)
    sizes = _sample_sizes(count, ratio, n)
    key = torch.rand(pos.shape[0], generator=generator, device=_device_of(generator)).to(pos.device)
    order = torch.argsort(key)
    order = order[torch.argsort(batch[order], stable=True)]
    ptr = torch.cumsum(count, 0) - count
    rank = torch.arange(order.numel(), device=pos.device) - ptr[batch[order]]
    return order[rank < sizes[batch[order]]]
