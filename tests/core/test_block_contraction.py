"""``contraction="blocks"``: the node-wise contraction multiplies by W̃ only over its structural non-zeros.

The blocks must give the dense contraction's outputs and gradients for every group, find every entry
that Hom weights can make non-zero (whatever the weights), and stay out of the state dict.
"""

from __future__ import annotations

import pytest
import torch
from helpers.params import GROUP_REPRESENTATIVES, slow_except

from steerable.kernels.sparsity import block_sparsity
from steerable.nn.point_conv import ImplicitPointConv
from steerable.testing import group, group_id, random_point_inputs, registry_groups

SMALL = dict(channels=2, n_layers=2)


def _types(dim: int) -> tuple[str, str]:
    if dim == 3:
        return "1x0e+1x0o+2x1o+1x2e", "2x0e+1x0o+2x1o"
    return "1x0e+1x0o+2x1+1x2", "2x0e+1x0o+2x1"


def _pair(G, spec_in: str, spec_out: str, **kwargs) -> tuple[ImplicitPointConv, ImplicitPointConv]:
    """The same convolution (same weights) with block and dense contraction."""
    blocks = ImplicitPointConv(G, spec_in, spec_out, contraction="blocks", **SMALL, **kwargs)
    dense = ImplicitPointConv(G, spec_in, spec_out, contraction="dense", **SMALL, **kwargs)
    dense.load_state_dict(blocks.state_dict())
    for conv in (blocks, dense):
        with torch.no_grad():
            conv.bias.normal_()  # the invariant part B too
    dense.bias.data.copy_(blocks.bias.data)
    return blocks, dense


def _outputs_and_grads(conv, x, pos, edge_index) -> list[torch.Tensor]:
    x, pos = x.clone().requires_grad_(), pos.clone().requires_grad_()
    out = conv(x, pos, edge_index)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    params = [p for p in conv.parameters() if p.requires_grad]
    grads = torch.autograd.grad((out * weights).sum(), [x, pos, *params])
    return [out.detach(), *grads]


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor], rel: float = 1e-5) -> None:
    for left, right in zip(a, b, strict=True):
        scale = right.abs().max().clamp(min=1e-12)
        assert float((left - right).abs().max() / scale) <= rel


@pytest.mark.parametrize("param", slow_except(registry_groups(), GROUP_REPRESENTATIVES), ids=group_id)
def test_blocks_give_the_dense_outputs_and_gradients(param):
    G = group(*param)
    blocks, dense = _pair(G, *_types(param[1]))
    x, pos, edge_index = random_point_inputs(blocks.in_type)
    _assert_same(*(_outputs_and_grads(conv, x, pos, edge_index) for conv in (blocks, dense)))


def test_o3_uses_few_blocks_and_a_fraction_of_the_work():
    blocks, dense = _pair(group("o3"), "2x0e+2x1o", "2x0e+2x1o")
    sparsity = blocks.kernel.block_sparsity()
    assert dense.kernel.block_sparsity() is None
    # scalar outputs and each of the three vector components have their own columns
    assert sorted(sparsity.row_counts) == [2, 2, 2, 2]
    assert sparsity.density <= 0.25


@pytest.mark.parametrize("name", ["o3", "so3", "cone", "dn"])
def test_blocks_hold_every_entry_any_weights_can_reach(name):
    """Fresh Hom weights (not the draws the blocks were read from) are zero off the blocks."""
    conv = ImplicitPointConv(group(name), "1x0e+1x1o+1x2e", "1x0e+2x1o", **SMALL)
    sparsity = conv.kernel.block_sparsity()
    assert sparsity is not None
    on_blocks = torch.zeros(sparsity.rows.numel(), sparsity.num_columns, dtype=torch.bool)
    r0, c0 = 0, 0
    for r, k in zip(sparsity.row_counts, sparsity.column_counts):
        rows, cols = sparsity.rows[r0:r0 + r], sparsity.columns[c0:c0 + k]
        on_blocks[rows[:, None], cols[None, :]] = True
        r0, c0 = r0 + r, c0 + k
    linear = conv.kernel.hom.linear
    with torch.no_grad():
        for seed in range(3):
            gen = torch.Generator().manual_seed(seed)
            linear.weights.copy_(torch.randn(linear.weights.shape, generator=gen))
            w_flat = conv.kernel.weight_and_bias()[0].flatten(1)
            assert float(w_flat[~on_blocks].abs().max()) <= 1e-6 * float(w_flat.abs().max())
            # and the blocks are dense: no block column is zero in all its rows
            assert bool((w_flat[on_blocks] != 0).float().mean() > 0.99)
            # the kernel gathers the block entries from the Hom weights, not from a dense W̃
            entries = conv.kernel.contraction_weights()[0]
            torch.testing.assert_close(entries, sparsity.entries(w_flat))


def test_block_matmul_on_a_hand_made_pattern():
    support = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    sparsity = block_sparsity(support)
    assert sorted(zip(sparsity.row_counts, sparsity.column_counts)) == [(1, 0), (1, 1), (2, 2)]
    w = torch.randn(4, 4) * support
    outer = torch.randn(5, 4)
    torch.testing.assert_close(sparsity.matmul(outer, sparsity.entries(w)), outer @ w.T)


def test_blocks_follow_dtype_and_device_and_stay_out_of_the_state_dict():
    conv = ImplicitPointConv(group("o3"), "2x0e+1x1o", "1x0e+1x1o", **SMALL)
    assert not any(key.startswith("kernel.block_") for key in conv.state_dict())
    dense = ImplicitPointConv(group("o3"), "2x0e+1x1o", "1x0e+1x1o", contraction="dense", **SMALL)
    dense.load_state_dict(conv.state_dict())
    conv, dense = conv.double(), dense.double()
    assert conv.kernel.block_sparsity().rows.dtype == torch.long
    x, pos, edge_index = random_point_inputs(conv.in_type)
    x, pos = x.double(), pos.double()
    _assert_same(*(_outputs_and_grads(c, x, pos, edge_index) for c in (conv, dense)), rel=1e-12)


def test_chunked_path_uses_the_blocks_too():
    blocks, dense = _pair(group("o3"), "2x0e+1x1o", "1x0e+1x1o", chunk_edges=16)
    x, pos, edge_index = random_point_inputs(blocks.in_type)
    assert edge_index.shape[1] > 16
    _assert_same(*(_outputs_and_grads(conv, x, pos, edge_index) for conv in (blocks, dense)))


def test_dense_when_blocks_do_not_pay():
    """The trivial group couples everything to everything: W̃ is dense, so no blocks."""
    conv = ImplicitPointConv(group("trivial"), "2x0e", "2x0e", **SMALL)
    assert conv.kernel.block_sparsity() is None


def test_unknown_contraction_is_refused():
    with pytest.raises(ValueError, match="contraction must be 'blocks' or 'dense', got 'sparse'"):
        ImplicitPointConv(group("o3"), "1x0e", "1x0e", contraction="sparse", **SMALL)
