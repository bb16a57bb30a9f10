"""Plain-torch graph construction against brute-force references."""

from __future__ import annotations

import math

import pytest
import torch

from steerable.geometry import (
    farthest_point_sampling,
    fully_connected_graph,
    knn_bipartite,
    knn_graph,
    radius_bipartite,
    radius_graph,
    random_sampling,
)
from steerable.transforms import random_orthogonal


def _clouds(sizes, dim=3, seed=0, shuffle=False, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(sum(sizes), dim, generator=g, dtype=dtype)
    batch = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    if shuffle:
        perm = torch.randperm(batch.numel(), generator=g)
        pos, batch = pos[perm], batch[perm]
    return pos, batch


def _ref_knn(pos_src, pos_dst, k, b_src, b_dst, exclude_self):
    edges = []
    for i in range(pos_dst.shape[0]):
        cands = [(float((pos_src[j] - pos_dst[i]).norm()), j) for j in range(pos_src.shape[0])
                 if b_src[j] == b_dst[i] and not (exclude_self and j == i)]
        edges += [(j, i) for _, j in sorted(cands)[:k]]
    return edges


def _ref_radius(pos_src, pos_dst, r, b_src, b_dst, exclude_self, max_nb=None):
    edges = []
    for i in range(pos_dst.shape[0]):
        cands = sorted((float((pos_src[j] - pos_dst[i]).norm()), j) for j in range(pos_src.shape[0])
                       if b_src[j] == b_dst[i] and not (exclude_self and j == i))
        cands = [c for c in cands if c[0] <= r][:max_nb]
        edges += [(j, i) for _, j in cands]
    return edges


def _pairs(edge_index):
    return list(zip(edge_index[0].tolist(), edge_index[1].tolist(), strict=True))


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("loop", [False, True])
def test_knn_graph_matches_brute_force(shuffle, loop):
    pos, batch = _clouds([7, 1, 20, 13], shuffle=shuffle)
    for k in (1, 5, 12):
        edges = knn_graph(pos, k, batch, loop=loop, chunk_elements=40)  # force many chunks
        assert _pairs(edges) == _ref_knn(pos, pos, k, batch, batch, not loop)
        assert (edges[1].diff() >= 0).all()


def test_knn_fixed_degree_and_small_graphs():
    pos, batch = _clouds([30, 25, 40])
    edges = knn_graph(pos, 8, batch)
    assert edges.shape == (2, 95 * 8)
    assert (edges[1].view(-1, 8) == torch.arange(95)[:, None]).all()
    assert (batch[edges[0]] == batch[edges[1]]).all()
    small = knn_graph(pos[:3], k=5)  # fewer points than k: all the others
    assert torch.bincount(small[1]).tolist() == [2, 2, 2]


def test_knn_ties_broken_by_index():
    grid = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
    pos = grid.reshape(-1, 2)
    batch = torch.tensor([0] * 8 + [1] * 8)
    for k in (1, 3, 4, 6):
        assert _pairs(knn_graph(pos, k, batch)) == _ref_knn(pos, pos, k, batch, batch, True)
    dup = torch.zeros(5, 3)  # all points coincide
    assert knn_graph(dup, 2)[0].tolist() == [1, 2, 0, 2, 0, 1, 0, 1, 0, 1]


def test_knn_bipartite_matches_brute_force():
    pos, batch = _clouds([15, 9, 22], shuffle=True, seed=1)
    idx = torch.tensor([0, 3, 5, 8, 13, 20, 31, 40, 45])
    edges = knn_bipartite(pos, pos[idx], 4, batch, batch[idx], chunk_elements=64)
    assert _pairs(edges) == _ref_knn(pos, pos[idx], 4, batch, batch[idx], False)
    assert (edges[0].view(-1, 4)[:, 0] == idx).all()  # each point is its own nearest


@pytest.mark.parametrize("max_nb", [None, 3])
def test_radius_matches_brute_force(max_nb):
    pos, batch = _clouds([10, 18, 5], shuffle=True, seed=2)
    for loop in (False, True):
        edges = radius_graph(pos, 1.2, batch, loop=loop, max_num_neighbors=max_nb, chunk_elements=50)
        ref = _ref_radius(pos, pos, 1.2, batch, batch, not loop, max_nb)
        if max_nb is None:  # within a target: by source index
            ref = sorted(ref, key=lambda e: (e[1], e[0]))
        assert _pairs(edges) == ref
    sub = torch.arange(0, 33, 4)
    edges = radius_bipartite(pos, pos[sub], 1.0, batch, batch[sub], max_num_neighbors=max_nb)
    ref = _ref_radius(pos, pos[sub], 1.0, batch, batch[sub], False, max_nb)
    assert sorted(_pairs(edges)) == sorted(ref)


def test_radius_is_inclusive_and_empty_ok():
    pos = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    assert _pairs(radius_graph(pos, 1.0)) == [(1, 0), (0, 1)]
    assert radius_graph(pos, 0.5).shape == (2, 0)


def test_fully_connected():
    batch = torch.tensor([1, 0, 1, 1, 0])
    ref = [(j, i) for i in range(5) for j in range(5) if batch[i] == batch[j] and i != j]
    assert _pairs(fully_connected_graph(batch)) == ref
    assert fully_connected_graph(batch, loop=True).shape == (2, 2 * 2 + 3 * 3)


def _ref_fps(pos, m):
    chosen, mind = [0], (pos - pos[0]).pow(2).sum(-1)
    while len(chosen) < m:
        nxt = int(mind.argmax())
        chosen.append(nxt)
        mind = torch.minimum(mind, (pos - pos[nxt]).pow(2).sum(-1))
    return chosen


def test_fps_matches_reference_per_graph():
    pos, batch = _clouds([50, 7, 33], shuffle=True, seed=3)
    idx = farthest_point_sampling(pos, batch, ratio=0.3)
    expect = []
    for b in range(3):
        members = (batch == b).nonzero().squeeze(1)
        m = math.ceil(0.3 * members.numel())
        expect += members[_ref_fps(pos[members], m)].tolist()
    assert idx.tolist() == expect
    idx = farthest_point_sampling(pos, batch, n=10)
    assert torch.bincount(batch[idx]).tolist() == [10, 7, 10]
    assert all(len(set(idx[batch[idx] == b].tolist())) == c for b, c in enumerate([10, 7, 10]))


def test_fps_never_returns_an_index_twice_on_coincident_points():
    pos = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 2.0], [2.0, 2.0]])
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    assert farthest_point_sampling(pos[:3], ratio=1.0).tolist() == [0, 2, 1]
    idx = farthest_point_sampling(pos, batch, ratio=1.0)
    assert sorted(idx.tolist()) == list(range(6))
    grid = torch.stack(torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij"), -1).reshape(-1, 2)
    doubled = torch.cat([grid, grid])  # every point twice
    assert farthest_point_sampling(doubled, n=18).unique().numel() == 18


def test_fps_random_start_and_random_sampling():
    pos, batch = _clouds([40, 12])
    g = torch.Generator().manual_seed(0)
    idx = farthest_point_sampling(pos, batch, n=5, random_start=True, generator=g)
    assert torch.bincount(batch[idx]).tolist() == [5, 5] and idx.unique().numel() == 10
    idx = random_sampling(pos, batch, ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.bincount(batch[idx]).tolist() == [20, 6] and idx.unique().numel() == 26
    again = random_sampling(pos, batch, ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)


@pytest.mark.parametrize("kind", ["so3", "o3"])
def test_knn_radius_fps_invariant_under_rotation(kind):
    pos, batch = _clouds([64, 40, 80], seed=4)
    rot = random_orthogonal(kind, 1, torch.Generator().manual_seed(5), dtype=torch.float64)[0]
    moved = pos @ rot.T + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    assert torch.equal(knn_graph(pos, 10, batch), knn_graph(moved, 10, batch))
    assert torch.equal(radius_graph(pos, 0.8, batch), radius_graph(moved, 0.8, batch))
    idx = farthest_point_sampling(pos, batch, ratio=0.25)
    assert torch.equal(idx, farthest_point_sampling(moved, batch, ratio=0.25))
    assert torch.equal(knn_bipartite(pos, pos[idx], 6, batch, batch[idx]),
                       knn_bipartite(moved, moved[idx], 6, batch, batch[idx]))


def test_float32_large_batch_chunked():
    pos, batch = _clouds([300] * 6, dtype=torch.float32, seed=6)
    full = knn_graph(pos, 16, batch)
    chunked = knn_graph(pos, 16, batch, chunk_elements=1000)
    assert torch.equal(full, chunked) and full.shape == (2, 1800 * 16)


def test_clear_errors():
    pos = torch.randn(5, 3)
    with pytest.raises(ValueError, match="NaN or inf"):
        knn_graph(torch.tensor([[0.0, math.nan, 0.0]]), 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        radius_graph(torch.tensor([[0.0, math.inf, 0.0]]), 1.0)
    with pytest.raises(ValueError, match="empty"):
        knn_graph(torch.zeros(0, 3), 2)
    with pytest.raises(ValueError, match="k must be"):
        knn_graph(pos, 0)
    with pytest.raises(ValueError, match="shape"):
        knn_graph(pos, 2, batch=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="r must be"):
        radius_graph(pos, -1.0)
    with pytest.raises(ValueError, match="exactly one"):
        farthest_point_sampling(pos)
    with pytest.raises(ValueError, match="ratio"):
        random_sampling(pos, ratio=1.5)


def test_graph_ids_with_gaps():
    pos, _ = _clouds([6, 9])
    batch = torch.tensor([0] * 6 + [3] * 9)  # graphs 1 and 2 are empty
    assert _pairs(knn_graph(pos, 3, batch)) == _ref_knn(pos, pos, 3, batch, batch, True)
    assert _pairs(radius_graph(pos, 1.5, batch)) == sorted(
        _ref_radius(pos, pos, 1.5, batch, batch, True), key=lambda e: (e[1], e[0]))
    idx = farthest_point_sampling(pos, batch, n=4, random_start=True)
    assert torch.bincount(batch[idx]).tolist() == [4, 0, 0, 4]
    assert fully_connected_graph(batch).shape == (2, 6 * 5 + 9 * 8)
