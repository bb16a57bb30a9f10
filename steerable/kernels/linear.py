"""G-equivariant linear maps on plain tensors, parametrised by escnn's equivariant basis."""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
import torch.nn.functional as F
from escnn import nn as enn
from escnn.nn import FieldType
from escnn.nn.modules.basismanager.basisexpansion_singleblock import normalize_basis
from torch import nn

import steerable.escnn_compat  # noqa: F401  (escnn's numerical solver: exact SVD on every machine)
from steerable.kernels.portable_basis import BasisBlock, BasisMismatch, reexpress

log = logging.getLogger(__name__)


class EquivariantLinear(nn.Module):
    """``y = W x + b`` with W ∈ Hom_G(in_type, out_type) and b on the trivial subspace of out_type.

    The weights live in escnn's :class:`escnn.nn.Linear` (its equivariant basis and generalised He
    initialisation); this wrapper exposes the expanded ``(W, b)`` and applies them to plain tensors.

    The expansion ``vec(W) = M θ`` is linear in escnn's weights θ with a sparse ``M`` (each weight
    feeds one block of one pair of fields). ``M`` is read once from escnn's basis and checked against
    escnn's own expansion; W is then one gather–multiply–``index_add`` (measured 13× faster than
    escnn's per-block loop for the 27 layers of the QM9 model, forward + backward: 6 vs 79 ms per
    step on 2 CPU threads). Should the check fail (another escnn version), escnn's expansion is used.
    When no gradient is needed (``torch.no_grad``, inference mode, or frozen parameters) and the
    parameters are on the CPU, the expanded matrices are cached together with a copy of θ and the bias
    they came from, and reused only while the parameters still equal that copy (same dtype, device and
    values: ``load_state_dict``, optimiser steps, ``.data`` writes such as EMA updates, and casts all
    invalidate it; the comparison costs microseconds against ~0.2 ms per expansion). On an accelerator
    the comparison would be a host sync per layer and step, so there the matrices are expanded every
    call (a few kernels). A call that needs gradients always expands afresh (in eval mode too:
    fine-tuning with frozen batch norms trains these weights). ``.to()`` and casts drop the cache.

    Args:
        in_type: FieldType over a ``no_base_space`` gspace of G.
        out_type: FieldType over the same gspace.
        bias: learn a bias on the trivial components of ``out_type``.

    Shapes: ``x: (N, in_type.size) → (N, out_type.size)``.
    """

    def __init__(self, in_type: FieldType, out_type: FieldType, bias: bool = True):
        super().__init__()
        if in_type.gspace != out_type.gspace:
            raise ValueError(f"in_type {in_type} and out_type {out_type} live on different gspaces")
        self.in_type, self.out_type = in_type, out_type
        # recompute=True: escnn otherwise shares sampled bases between layers, so casting one model
        # (e.g. to float64) would silently change the dtype of every other model's layers.
        self.linear = enn.Linear(in_type, out_type, bias=bias, recompute=True)
        self._cache: tuple[list[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]] | None = None
        self._basis_blocks = _readable_basis_blocks(self.linear)
        self._saved_bases: dict[str, torch.Tensor] = {}
        self.register_load_state_dict_post_hook(_reexpress_loaded_weights)
        table = _checked_expansion_table(self.linear, self._basis_blocks)
        self.sparse_expansion = table is not None
        if table is not None:
            rows, cols, values = table
            self.register_buffer("expansion_rows", rows, persistent=False)
            self.register_buffer("expansion_cols", cols, persistent=False)
            # float64 master copy on the host: every cast or move re-derives the buffer from it (_apply)
            self._exact_values = values.double().numpy()
            self.register_buffer("expansion_values", values.to(self.linear.weights.dtype), persistent=False)
        for name in ("bias_rows", "bias_cols", "bias_values"):
            self.register_buffer(name, None, persistent=False)
        self._refresh_bias_table()
        self.register_load_state_dict_post_hook(lambda layer, _: layer._refresh_bias_table())

    def _refresh_bias_table(self) -> None:
        """The bias expansion ``b = M_b β`` as a COO table (buffers) of escnn's dense ``bias_expansion``
        (out.size × trivials, each column non-zero only on its own field): one gather–``index_add``
        instead of a dense matrix-vector product. Rebuilt on construction and after loading a checkpoint
        (which carries its own ``bias_expansion``)."""
        expansion = getattr(self.linear, "bias_expansion", None) if self.linear.bias is not None else None
        if expansion is None or expansion.device.type == "meta":
            return
        self.bias_rows, self.bias_cols = expansion.nonzero().unbind(1)
        self.bias_values = expansion[self.bias_rows, self.bias_cols]

    def weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Expanded ``W: (out.size, in.size)`` and ``b: (out.size,)`` or ``None``."""
        sources = [t for t in (self.linear.weights, self.linear.bias) if t is not None]
        if torch.is_grad_enabled() and any(t.requires_grad for t in sources):
            self._cache = None  # parameters are being trained: a cached copy would soon be stale
            return self._expand()
        if sources[0].device.type != "cpu":  # checking a cache would stall the device (see the class doc)
            self._cache = None
            return self._expand()
        if self._cache is None or not _same_values(self._cache[0], sources):
            # normal tensors even under inference mode (Lightning's validation): an inference tensor
            # in the cache could not be saved for a later backward (e.g. w.r.t. the input)
            with torch.no_grad(), torch.inference_mode(False):
                self._cache = ([t.detach().clone() for t in sources], self._expand())
        return self._cache[1]

    def _expand(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.sparse_expansion:
            return self.linear.expand_parameters()
        table = (self.expansion_rows, self.expansion_cols, self.expansion_values)
        weight = apply_expansion_table(self.linear.weights, table, self.out_type.size * self.in_type.size)
        bias = None
        if self.linear.bias is not None:
            bias_table = (self.bias_rows, self.bias_cols, self.bias_values)
            bias = apply_expansion_table(self.linear.bias, bias_table, self.out_type.size)
        return weight.view(self.out_type.size, self.in_type.size), bias

    def _apply(self, fn, recurse: bool = True):
        """Casts and moves as usual; the expansion values then come from the float64 master copy in the
        buffer's new dtype, so ``.double()`` gets basis values exact to float64 (not float32 ones widened).
        The expansion cache is dropped."""
        super()._apply(fn, recurse)
        self._cache = None
        if self.sparse_expansion:
            target = self.expansion_values
            values = torch.as_tensor(self._exact_values, dtype=target.dtype, device=target.device)
            self.expansion_values = values
        return self

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """Also saves each pair of field types' basis ``B (dim, o, i)`` (float64) as ``<prefix>basis.<k>``,
        so that a checkpoint loads with the same meaning where escnn builds another basis
        (:mod:`steerable.kernels.portable_basis`). The bases sit on the weights' device, like the rest
        of the state (on the CPU where that device has no float64, e.g. Apple's ``mps``)."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        device = self.linear.weights.device
        device = torch.device("cpu") if device.type == "mps" else device
        for _, block in self._basis_blocks or ():
            destination[prefix + block.key] = block.basis.to(device, copy=True)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Takes the saved bases out of ``state_dict`` (checkpoints without them load as before); the
        weights are re-expressed once the child ``linear`` has loaded them (a post-load hook)."""
        self._saved_bases = {key[len(prefix):]: state_dict[key] for key in list(state_dict)
                             if key.startswith(prefix + "basis.") and key.count(".") == prefix.count(".") + 1}
        for key in self._saved_bases:
            state_dict.pop(prefix + key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def train(self, mode: bool = True):
        # Deliberately not recursing: escnn's Linear registers extra buffers in eval mode, which would
        # make checkpoints saved in one mode unloadable in the other.
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight_and_bias()
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"{self.in_type.size} -> {self.out_type.size}"


def _readable_basis_blocks(linear: enn.Linear) -> list[tuple[object, BasisBlock]] | None:
    """:func:`basis_blocks`, or None (with a warning) where escnn's layout is not recognised."""
    try:
        return basis_blocks(linear)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as err:
        log.warning("escnn basis layout not recognised (%s); using escnn's expansion", err)
        return None


def _reexpress_loaded_weights(layer: EquivariantLinear, incompatible_keys) -> None:
    """Post-load hook: rewrite θ from the checkpoint's bases into this environment's (same W)."""
    saved, layer._saved_bases = layer._saved_bases, {}
    if not saved or layer._basis_blocks is None:
        return
    changed = 0
    for _, block in layer._basis_blocks:
        if block.key not in saved:
            continue
        try:
            changed += reexpress(layer.linear.weights.data, block, saved[block.key], f"{layer} {block.key}")
        except BasisMismatch as err:
            raise RuntimeError(f"cannot load the weights of {layer}: {err}") from None
    if changed:
        layer._cache = None
        log.info("%s: weights of %d field-type pairs re-expressed in this environment's escnn basis",
                 layer, changed)


def _same_values(snapshot: list[torch.Tensor], tensors: list[torch.Tensor]) -> bool:
    """Whether ``tensors`` still equal ``snapshot`` in dtype, device and every value."""
    return all(a.dtype == b.dtype and a.device == b.device and torch.equal(a, b.detach())
               for a, b in zip(snapshot, tensors, strict=True))


def basis_blocks(linear: enn.Linear) -> list[tuple[object, BasisBlock]]:
    """Every pair of field types of an escnn ``Linear``: ``(io_pair, BasisBlock)``, in escnn's order.

    The block's basis is escnn's ``B (dim, o, i)`` sampled again in float64 (:func:`_float64_basis`);
    its weights are ``θ[start : start + copies·dim]`` (output field major).
    """
    expansion = linear.basisexpansion
    blocks = []
    for k, pair in enumerate(expansion._representations_pairs):
        block = getattr(expansion, f"block_expansion_{expansion._escape_pair(pair)}")
        basis = _float64_basis(block, expansion.points)
        if basis.shape[-1] != 1:
            raise ValueError("expected a basis sampled at one point (a linear layer)")
        copies = expansion._out_count[pair[1]] * expansion._in_count[pair[0]]
        start = expansion._weights_ranges[pair][0]
        blocks.append((pair, BasisBlock(f"basis.{k}", basis[..., 0], start, copies)))
    return blocks


def expansion_table(
    linear: enn.Linear, blocks: list[tuple[object, BasisBlock]] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sparse map ``vec(W) = M θ`` of an escnn ``Linear`` as COO ``(rows, cols, values)``.

    Read from escnn's ``BlocksBasisExpansion``: for every pair of field types (``io_pair``) its basis
    ``B (dim, o, i)`` (``blocks``, from :func:`basis_blocks` unless given), its weight range (``dim``
    weights per pair of fields, output field major) and where its blocks sit in W (contiguous slices or
    flattened index grids). Entry ``W[r, c] += B[d, a, b]·θ[j]`` becomes ``rows = r·in + c``,
    ``cols = j``, ``values = B[d, a, b]``. Exact zeros of B are dropped. Values are float64: escnn
    samples its bases in float32 (errors up to ~2e-8, which made float64 models equivariant only to
    ~3e-8), so each block is sampled again in float64 here (:func:`_float64_basis`).
    """
    expansion = linear.basisexpansion
    n_in = expansion._input_size
    rows, cols, values = [], [], []
    for pair, basis_block in basis_blocks(linear) if blocks is None else blocks:
        name = expansion._escape_pair(pair)
        basis = basis_block.basis
        dim, o, i = basis.shape
        n_out_fields, n_in_fields = expansion._out_count[pair[1]], expansion._in_count[pair[0]]
        start = basis_block.start
        grid = torch.meshgrid(torch.arange(n_out_fields), torch.arange(n_in_fields), torch.arange(dim),
                              torch.arange(o), torch.arange(i), indexing="ij")
        f_out, f_in, d, a, b = (t.reshape(-1) for t in grid)
        local_row, local_col = f_out * o + a, f_in * i + b
        out_index = getattr(expansion, f"out_indices_{name}")
        in_index = getattr(expansion, f"in_indices_{name}")
        if expansion._contiguous[pair]:
            row, col = int(out_index[0]) + local_row, int(in_index[0]) + local_col
        else:
            flat = local_row * (n_in_fields * i) + local_col
            row, col = out_index[flat], in_index[flat]
        rows.append(row * n_in + col)
        cols.append(start + (f_out * n_in_fields + f_in) * dim + d)
        values.append(basis[d, a, b])
    if not rows:  # no equivariant map between the types: W = 0
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, torch.zeros(0, dtype=torch.float64)
    rows, cols, values = torch.cat(rows), torch.cat(cols), torch.cat(values)
    keep = values != 0
    return rows[keep], cols[keep], values[keep]


def _float64_basis(block, points) -> torch.Tensor:
    """escnn's ``sampled_basis (dim, o, i, points)`` of one block, sampled and normalised again in float64.

    escnn's basis keeps the change of basis of non-irreducible representations (e.g. ρ_o ⊗ ρ_i of the
    Hom layer) as float32 buffers (``B`` for the output, ``A_inv`` for the input); a float64 copy of
    the basis gets them again from the representations' own float64 matrices. Falls back to the
    stored float32 basis, widened, if escnn's block does not look as expected.
    """
    stored = block.sampled_basis
    try:
        shared = (block.basis.group, block.basis.in_repr, block.basis.out_repr)  # not copied: read only
        basis = copy.deepcopy(block.basis, memo={id(obj): obj for obj in shared}).double()
        for name, matrix in (("B", "change_of_basis"), ("A_inv", "change_of_basis_inv")):
            if getattr(basis, name, None) is not None:
                repr_ = basis.out_repr if name == "B" else basis.in_repr
                exact = torch.as_tensor(np.asarray(getattr(repr_, matrix)), dtype=torch.float64)
                if exact.shape != getattr(basis, name).shape:
                    raise ValueError(f"escnn's {name} is not the change of basis of its representation")
                setattr(basis, name, exact)
        sampled = basis.sample(torch.as_tensor(points, dtype=torch.float64)).permute(1, 2, 3, 0)
        sizes = torch.tensor([attr["shape"][0] for attr in basis], dtype=torch.float64)
        resampled = normalize_basis(sampled, sizes)[block._mask]
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
        log.warning("escnn basis block not resampled in float64 (%s); using its float32 samples", err)
        return stored.double()
    if resampled.shape != stored.shape or not torch.allclose(resampled, stored.double(), atol=1e-5):
        log.warning("escnn basis block resampled in float64 differs from its own; using its float32 samples")
        return stored.double()
    return resampled


def apply_expansion_table(
    theta: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor, torch.Tensor], size: int
) -> torch.Tensor:
    """``vec(W) = M θ`` from the COO table of :func:`expansion_table`: ``θ (n,) → (size,)``."""
    rows, cols, values = table
    return theta.new_zeros(size).index_add(0, rows, values * theta[cols])


def _checked_expansion_table(linear: enn.Linear, blocks: list[tuple[object, BasisBlock]] | None):
    """:func:`expansion_table` if it reproduces escnn's own expansion of the current weights, else None."""
    if blocks is None:
        return None
    try:
        table = expansion_table(linear, blocks)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as err:
        log.warning("escnn basis layout not recognised (%s); using escnn's expansion", err)
        return None
    if linear.basisexpansion.dimension() == 0:  # no equivariant map (escnn's own expansion fails here)
        return table
    with torch.no_grad():
        expected = linear.expand_parameters()[0].reshape(-1)
        rows, cols, values = table
        in_dtype = (rows, cols, values.to(linear.weights.dtype))
        got = apply_expansion_table(linear.weights, in_dtype, expected.numel())
        tolerance = 1e-5 * float(expected.abs().max().clamp(min=1e-12))
    if not torch.allclose(got, expected, rtol=0.0, atol=tolerance):
        log.warning("sparse basis expansion differs from escnn's; using escnn's expansion")
        return None
    return table
