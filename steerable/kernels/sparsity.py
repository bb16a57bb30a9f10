"""Block structure of the node-wise contraction weight W̃ ``(C_out, H·C_in)`` (DESIGN.md §2).

W̃ is mostly zero by Schur's lemma: an output component is reached only from the (hidden, input)
pairs whose irreps couple to it. :class:`BlockSparsity` groups W̃'s rows by their set of non-zero
columns (few groups: for O(3) fields of frequencies ≤ 1, one per vector component and one for the
scalars; each group's block is dense), so ``outer @ W̃ᵀ`` becomes a few dense matmuls over those
columns: 17.5 % of the dense work for the N-body model's convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BlockSparsity:
    """The structural non-zeros of a contraction weight W̃ ``(C_out, K)`` (K = H·C_in): its rows in
    groups that share one set of columns, each group's (rows × columns) block dense.

    Attributes:
        rows: ``(C_out,)`` long, W̃'s rows group by group.
        rows_inverse: ``(C_out,)`` long, the position of every row in ``rows`` (undoes the grouping).
        columns: ``(Σ K_g,)`` long, the columns of every group, group by group.
        weight_index: ``(Σ |R_g|·K_g,)`` long, the flat index in W̃ of every block entry, block by block
            (each block row-major).
        row_counts, column_counts: the group sizes (|R_g|, K_g).
        num_columns: K.
    """

    rows: torch.Tensor
    rows_inverse: torch.Tensor
    columns: torch.Tensor
    weight_index: torch.Tensor
    row_counts: tuple[int, ...]
    column_counts: tuple[int, ...]
    num_columns: int

    @property
    def density(self) -> float:
        """Σ_g |R_g|·K_g over C_out·K: the share of the dense matmul's work the blocks do."""
        dense = self.rows.numel() * self.num_columns
        return sum(r * k for r, k in zip(self.row_counts, self.column_counts)) / max(dense, 1)

    def entries(self, w_flat: torch.Tensor) -> torch.Tensor:
        """The block entries ``(Σ_g |R_g|·K_g,)`` of a dense ``w_flat (C_out, K)``, block by block."""
        return w_flat.flatten().index_select(0, self.weight_index)

    def matmul(self, outer_flat: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
        """``outer_flat @ W̃ᵀ`` for ``outer_flat (N, K)`` and W̃ given by its block ``entries``: ``(N, C_out)``.

        One gather of the blocks' columns, split per block (so that backward concatenates gradients
        instead of zero-filling a full-size one per block), one matmul per block.
        """
        counts = list(zip(self.row_counts, self.column_counts))
        outer_parts = outer_flat.index_select(1, self.columns).split(self.column_counts, dim=1)
        w_parts = entries.split([r * k for r, k in counts])
        parts = [o @ w.view(r, k).T for o, w, (r, k) in zip(outer_parts, w_parts, counts)]
        return torch.cat(parts, 1).index_select(1, self.rows_inverse)


def block_sparsity(support: torch.Tensor) -> BlockSparsity:
    """Group the rows of a ``(C_out, K)`` bool ``support`` (True where W̃ may be non-zero) by their columns."""
    patterns, group_of_row = torch.unique(support, dim=0, return_inverse=True)
    rows = torch.argsort(group_of_row, stable=True)
    row_counts = torch.bincount(group_of_row, minlength=patterns.shape[0])
    columns = [pattern.nonzero().flatten() for pattern in patterns]
    width, block_rows = support.shape[1], rows.split(row_counts.tolist())
    entries = [(r[:, None] * width + c[None, :]).flatten() for r, c in zip(block_rows, columns)]
    return BlockSparsity(
        rows=rows, rows_inverse=torch.argsort(rows), columns=torch.cat(columns),
        weight_index=torch.cat(entries),
        row_counts=tuple(row_counts.tolist()), column_counts=tuple(c.numel() for c in columns),
        num_columns=support.shape[1],
    )
