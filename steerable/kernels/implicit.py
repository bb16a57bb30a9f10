"""Implicit steerable kernels: a G-equivariant MLP φ maps edge geometry to Hom(ρ_in, ρ_out).

Zhdanov, Hoffmann, Cesa, "Implicit Convolutional Kernels for Steerable CNNs" (NeurIPS 2023), §3.

.. math::

    k(x, a) = w(|x|)\\, \\mathrm{reshape}\\big(φ(x, a)\\big), \\qquad
    φ(g·x, g·a) = (ρ_{out}(g) ⊗ ρ_{in}(g))\\, φ(x, a)

so ``k(gx) = ρ_out(g) k(x) ρ_in(g)^T`` for every g in G, for any G ≤ O(d) escnn can restrict to.

φ's input field is ``u ⊕ sym(u⊗u) (direction powers; std rep and, in 3-D, 0e ⊕ 2e) ⊕ RBF(|x|)
(trivial) ⊕ attributes``.
The direction powers give the linear layers access to every frequency up to ``direction_order``
(a gated MLP cannot create frequency 2 from a vector alone), as far as the hidden type carries it:
every linear layer maps irreps only onto equal ones, so the kernel has no component of a frequency
above the hidden ``band_limit`` (e.g. with ``band_limit=1`` no scalar → ℓ=2 kernel and no ℓ=2 part of
a vector → vector kernel). A kernel that would be identically zero is refused at construction, and
(out field, in field) blocks that would be are logged as a warning. The output type is the direct sum, over
pairs (out field i, in field j), of ρ_i ⊗ ρ_j, so any FieldType in and out is supported — mixed
irreps, multiplicities, regular representations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from escnn.group import Representation
from escnn.nn import FieldType
from escnn.nn.init import generalized_he_init
from torch import nn

from steerable.fields import FieldBatchNorm, FieldLayout, build_nonlinearity, norm_affine
from steerable.groups import GroupSpec
from steerable.kernels.basis_memory import check_kernel_basis_memory
from steerable.kernels.edge_mlp import EdgeMLPOps, radial_window
from steerable.kernels.linear import EquivariantLinear
from steerable.kernels.sparsity import BlockSparsity, block_sparsity

log = logging.getLogger(__name__)

MAX_BLOCKS = 32  # more (smaller) matmuls than this cost more in launches than the zeros they skip
MAX_BLOCK_DENSITY = 0.5  # blocks only when they do at most half of the dense contraction's work

Affine = tuple[torch.Tensor, torch.Tensor]  # per-channel (scale, shift) of a pending batch norm
LinearWeights = tuple[torch.Tensor, torch.Tensor | None]  # expanded (W, b) of an equivariant linear layer


def band_limited_spec(channels: int, band_limit: int, dim: int = 3) -> str:
    """Hidden field spec: ``channels`` copies of every O(d) irrep of frequency ≤ ``band_limit``."""
    terms = [f"{channels}x0e", f"{channels}x0o"]
    for l in range(1, band_limit + 1):
        terms += [f"{channels}x{l}e", f"{channels}x{l}o"] if dim == 3 else [f"{channels}x{l}"]
    return "+".join(terms)


class RadialWindow(nn.Module):
    """Learnable radial window ``w(r) = exp(−(r/σ)²)`` times an optional smooth cosine cutoff.

    Shapes: ``r: (E,) → (E,)``.
    """

    def __init__(self, width: float = 2.0, cutoff: float | None = None, learnable: bool = True):
        super().__init__()
        log_width = torch.tensor(math.log(width))
        self.log_width = nn.Parameter(log_width) if learnable else nn.Buffer(log_width)
        self.cutoff = cutoff

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return radial_window(r, self.log_width, self.cutoff)


class SharedTrunk:
    """φ's hidden layers shared by several kernels and, inside :meth:`scope`, evaluated once.

    :func:`share_trunk` gives every kernel the first one's hidden layers and radial window (one set of
    parameters; each kernel keeps its own Hom layer). Inside ``with trunk.scope():`` the first
    :meth:`ImplicitKernel.hidden` call computes φ's last hidden activation and every later call returns
    it, so the caller must feed every kernel the same edges and attributes there (the layers of a
    network convolving over one graph); a call with another number of edges raises ``ValueError``.
    Outside the scope each kernel evaluates the shared layers itself.
    """

    def __init__(self) -> None:
        self.active = False
        self.value: tuple | None = None

    @contextmanager
    def scope(self) -> Iterator[None]:
        self.active, self.value = True, None
        try:
            yield
        finally:
            self.active, self.value = False, None


def share_trunk(kernels: Sequence["ImplicitKernel"]) -> SharedTrunk:
    """Make ``kernels`` share the first one's φ hidden layers and window (see :class:`SharedTrunk`).

    Raises:
        ValueError: when the kernels' φ input or hidden types differ (different edge/node attributes,
            channels, band limits or groups cannot share one trunk).
    """
    owner, trunk = kernels[0], SharedTrunk()
    for kernel in kernels:
        if kernel.input_type != owner.input_type or kernel.hidden_type != owner.hidden_type:
            raise ValueError(f"kernels with φ input/hidden types {kernel.input_type} / {kernel.hidden_type} "
                             f"and {owner.input_type} / {owner.hidden_type} cannot share φ's hidden layers")
        if [type(m) for m in kernel.mlp] != [type(m) for m in owner.mlp]:
            raise ValueError("kernels with different φ layers (depth, batch norm) cannot share them")
        kernel.mlp, kernel.window, kernel.trunk = owner.mlp, owner.window, trunk
    return trunk


class ImplicitKernel(nn.Module):
    """The kernel MLP φ plus the bookkeeping to turn its output into (C_out × C_in) kernels.

    Args:
        group: the symmetry group.
        in_type: FieldType of the convolution input (C_in = in_type.size).
        out_type: FieldType of the convolution output (C_out = out_type.size).
        attr_type: optional FieldType (over ``group.fiber``) of extra per-edge inputs to φ
            (bond one-hots are trivial fields; a Cartesian vector attribute is ``std``).
        hidden: spec of φ's hidden fields; default ``band_limited_spec(channels, band_limit)``.
        channels, band_limit: multiplicity and maximal frequency of the default hidden type (the kernel's
            highest angular frequency: see the module docstring).
        n_layers: number of linear layers of φ (≥ 2; the last maps to the Hom type).
        direction_order: highest tensor power of the unit direction fed to φ (1 or 2).
        n_rbf, rbf_max: Gaussian radial basis of |x| fed to φ as invariants.
        window_width, cutoff: radial window parameters (Å or whatever unit positions use).
        batch_norm: equivariant batch norm after each hidden nonlinearity.
        nonlinearity: ``"gated"`` (default) or ``"norm"``; both exactly equivariant for every G.
        compile_mlp: run φ's per-edge work through ``torch.compile`` (:mod:`steerable.kernels.edge_mlp`):
            fused elementwise passes, same function; the first call compiles (seconds to a minute).
        live_hidden_only: drop the hidden fields no input of φ reaches (every linear layer maps an irrep
            only onto equal ones, so e.g. for O(3) with inputs 1o, 0e, 2e the 0o and 1e fields of the
            default hidden type stay exactly zero): the same functions with fewer channels, i.e. a
            smaller contraction dimension H (half for O(3), band_limit 1) and cheaper hidden layers.
        contraction: how the node-wise path multiplies by W̃ ``(C_out, H·C_in)``: ``"blocks"`` (default)
            only over its structural non-zeros, grouped into dense blocks (:class:`BlockSparsity`), when
            that is at most half the work in at most :data:`MAX_BLOCKS` matmuls, else densely;
            ``"dense"`` always densely. The same function either way.

    Raises:
        BasisTooLarge: before anything large is built, when building the Hom layer's basis would take
            more memory than ``$STEERABLE_MAX_BASIS_GB`` (:mod:`steerable.kernels.basis_memory`).

    Types: φ input ``std^{⊗1..order} ⊕ n_rbf×trivial ⊕ attr_type``; φ hidden ``hidden``;
    φ output ``⊕_{i,j} ρ_out,i ⊗ ρ_in,j`` (``hom_type``).

    Shapes: ``rel_pos: (E, d)``, ``attr: (E, attr_type.size)`` → ``hidden: (H, E)`` (channels first),
    ``kernel: (E, C_out, C_in)``.
    """

    def __init__(
        self,
        group: GroupSpec,
        in_type: FieldType,
        out_type: FieldType,
        attr_type: FieldType | None = None,
        hidden: str | None = None,
        channels: int = 8,
        band_limit: int = 1,
        n_layers: int = 3,
        direction_order: int = 2,
        n_rbf: int = 8,
        rbf_max: float = 5.0,
        window_width: float = 2.0,
        cutoff: float | None = None,
        batch_norm: bool = True,
        nonlinearity: str = "gated",
        compile_mlp: bool = False,
        live_hidden_only: bool = False,
        contraction: str = "blocks",
    ):
        super().__init__()
        if contraction not in ("blocks", "dense"):
            raise ValueError(f"contraction must be 'blocks' or 'dense', got {contraction!r}")
        if n_layers < 2:
            raise ValueError(f"the kernel MLP needs n_layers >= 2 (hidden + Hom layer), got {n_layers}")
        if direction_order not in (1, 2):
            raise ValueError(f"direction_order must be 1 or 2, got {direction_order}")
        for name, ft in (("in_type", in_type), ("out_type", out_type)):
            if ft.fibergroup != group.group:
                raise ValueError(f"{name} {ft} is not a field type of group {group.name!r} ({group.group})")
        self.group, self.in_type, self.out_type = group, in_type, out_type
        self.direction_order, self.n_rbf = direction_order, n_rbf
        self.register_buffer("rbf_centers", torch.linspace(0.0, rbf_max, n_rbf), persistent=False)
        self.rbf_width = rbf_max / max(n_rbf - 1, 1)
        self.window = RadialWindow(window_width, cutoff)
        self.ops = EdgeMLPOps(compiled=compile_mlp)
        self.trunk: SharedTrunk | None = None  # set by share_trunk

        fiber = group.fiber
        input_reps = [group.std_rep]
        self._square_basis = None  # float64 master (numpy) of the square_basis buffer, see _apply
        if direction_order == 2:
            square_reps, self._square_basis = _symmetric_square(group)
            input_reps += square_reps
        square = None if self._square_basis is None else torch.tensor(self._square_basis, dtype=torch.float32)
        self.register_buffer("square_basis", square, persistent=False)
        input_reps += [fiber.trivial_repr] * n_rbf
        if attr_type is not None:
            input_reps += list(attr_type.representations)
        self.attr_size = 0 if attr_type is None else attr_type.size
        self.input_type = fiber.type(*input_reps)
        self.hidden_type = group.field_type(
            hidden or band_limited_spec(channels, band_limit, group.dim), on="fiber"
        )

        self.mlp = self._hidden_layers(n_layers, nonlinearity, batch_norm)
        if live_hidden_only:
            live, layout = self._live_hidden().float(), FieldLayout(self.hidden_type)
            field_live = torch.zeros(layout.num_fields).index_add(0, layout.field_of_channel, live) > 0
            if not bool(field_live.all()):
                reps = [rep for rep, keep in zip(self.hidden_type.representations, field_live.tolist())
                        if keep]
                self.hidden_type = fiber.type(*reps)
                self.mlp = self._hidden_layers(n_layers, nonlinearity, batch_norm)

        check_kernel_basis_memory(group, self.hidden_type, in_type, out_type)  # before escnn builds it
        hom_reps, flat_index = self._hom_blocks()
        _check_reachable(hom_reps, self.hidden_type, in_type, out_type)
        self.hom_type = fiber.type(*hom_reps)
        self.hom = EquivariantLinear(self.hidden_type, self.hom_type)
        self.register_buffer("flat_index", flat_index, persistent=False)
        self.register_buffer("hom_scale", self._initial_hom_scale(), persistent=False)
        sparsity = self._paying_block_sparsity() if contraction == "blocks" else None
        self._block_counts = None if sparsity is None else (sparsity.row_counts, sparsity.column_counts)
        for name in ("rows", "rows_inverse", "columns", "weight_index"):
            self.register_buffer(f"block_{name}", None if sparsity is None else getattr(sparsity, name),
                                 persistent=False)
        entries = None if sparsity is None else self._hom_positions(sparsity.weight_index)
        self.register_buffer("block_hom_index", entries, persistent=False)

    def _hidden_layers(self, n_layers: int, nonlinearity: str, batch_norm: bool) -> nn.Sequential:
        """φ's ``n_layers - 1`` hidden layers ``input_type → hidden_type → … → hidden_type``."""
        fiber, layers, previous = self.group.fiber, [], self.input_type
        for _ in range(n_layers - 1):
            gates = build_nonlinearity(nonlinearity, self.hidden_type)
            gated_type = fiber.type(
                *self.hidden_type.representations, *[fiber.trivial_repr] * gates.num_gates
            )
            layers += [EquivariantLinear(previous, gated_type), gates]
            if batch_norm:
                layers.append(FieldBatchNorm(self.hidden_type))
            previous = self.hidden_type
        return nn.Sequential(*layers)

    @property
    def hidden_size(self) -> int:
        """H: size of φ's last hidden layer (the contraction dimension)."""
        return self.hidden_type.size

    def _hom_blocks(self) -> tuple[list, torch.Tensor]:
        """Hom reps ρ_i ⊗ ρ_j block by block and, for each Hom coordinate, its flat (out·C_in + in) index."""
        reps, index = [], []
        c_in = self.in_type.size
        out_offsets = _offsets(self.out_type)
        in_offsets = _offsets(self.in_type)
        for rep_o, off_o in zip(self.out_type.representations, out_offsets):
            for rep_i, off_i in zip(self.in_type.representations, in_offsets):
                reps.append(self.group.tensor(rep_o, rep_i))
                rows = torch.arange(off_o, off_o + rep_o.size)[:, None]
                cols = torch.arange(off_i, off_i + rep_i.size)[None, :]
                index.append((rows * c_in + cols).reshape(-1))  # kron(ρ_o, ρ_i) acts on row-major blocks
        return reps, torch.cat(index)

    def edge_features(
        self, rel_pos: torch.Tensor, attr: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """φ's input ``(E, input_type.size)`` and the distances ``(E,)`` (see ``edge_mlp.edge_inputs``)."""
        if self.attr_size and (attr is None or attr.shape[-1] != self.attr_size):
            got = None if attr is None else tuple(attr.shape)
            raise ValueError(f"kernel expects edge attributes of size {self.attr_size}, got {got}")
        square = self._square_matrix(rel_pos) if self.direction_order == 2 else None
        return self.ops.edge_inputs(rel_pos, attr if self.attr_size else None, square, self.rbf_centers,
                                    self.rbf_width)

    def _windowed_inputs(self, rel_pos, attr, with_window: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """φ's input channels first ``(F, E)`` and the radial window ``(E,)`` (or None)."""
        feats, r = self.edge_features(rel_pos, attr)
        window = self.ops.radial_window(r, self.window.log_width, self.window.cutoff) if with_window else None
        return feats.T, window

    def _square_matrix(self, like: torch.Tensor) -> torch.Tensor:
        """``(k, d²)`` map vec(u⊗u) → symmetric-square irrep coefficients, in ``like``'s dtype/device.

        The ``square_basis`` buffer (it follows ``.to()``; see :meth:`_apply`), or, for inputs in another
        dtype than the module's, the float64 master in theirs.
        """
        if like.dtype == self.square_basis.dtype:
            return self.square_basis
        return torch.as_tensor(self._square_basis, dtype=like.dtype, device=like.device)

    def _apply(self, fn, recurse: bool = True):
        """Casts and moves as usual; ``square_basis`` then comes from its float64 master in the buffer's new
        dtype and device, so ``.double()`` gets it exact to float64 (not float32 values widened)."""
        super()._apply(fn, recurse)
        if self._square_basis is not None:
            target = self.square_basis
            self.square_basis = torch.as_tensor(self._square_basis, dtype=target.dtype, device=target.device)
        return self

    def layers(self) -> list[tuple[nn.Module, nn.Module, FieldBatchNorm | None]]:
        """φ's hidden layers as ``(linear, nonlinearity, batch norm or None)`` triples (not the Hom)."""
        modules, triples = list(self.mlp), []
        while modules:
            linear, gate = modules.pop(0), modules.pop(0)
            norm = modules.pop(0) if modules and isinstance(modules[0], FieldBatchNorm) else None
            triples.append((linear, gate, norm))
        return triples

    def hidden(
        self, rel_pos: torch.Tensor, attr: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Affine | None]:
        """φ's last hidden activation (before its batch norm) times the radial window, channels first.

        Every batch norm is returned as a pending affine map ``y = a·scale + shift`` and folded into the
        following linear layer (or, for the last one, into the Hom layer by :meth:`weight_and_bias`)
        instead of being applied: the statistics cost one reduction pass and the normalisation is free.
        φ runs channels-first, ``(channels, E)``, so every field run is a contiguous block of rows.

        Shapes: ``rel_pos: (E, d) → (a·w)ᵀ (H, E), w (E,)``; affine: ``(scale (H,), shift (H,))`` or None.

        Inside the :meth:`SharedTrunk.scope` of a shared trunk, computed once for all its kernels.
        """
        trunk = self.trunk
        if trunk is None or not trunk.active:
            return self._hidden(rel_pos, attr)
        if trunk.value is None:
            trunk.value = self._hidden(rel_pos, attr)
        elif trunk.value[0].shape[1] != rel_pos.shape[0]:
            raise ValueError(f"a shared φ trunk evaluated on {trunk.value[0].shape[1]} edges was asked for "
                             f"{rel_pos.shape[0]}: kernels sharing one trunk must see the same edges")
        return trunk.value

    def _hidden(
        self, rel_pos: torch.Tensor, attr: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Affine | None]:
        """:meth:`hidden`, always evaluated."""
        activation, window = self._windowed_inputs(rel_pos, attr)
        edges, layers, affine = rel_pos.shape[0], self.layers(), None
        for depth, (linear, gate, norm) in enumerate(layers, start=1):
            statistics = norm is not None and norm.uses_batch_statistics(edges)
            activation, stats = self.ops.hidden_layer_t(
                activation, *fold_affine(linear.weight_and_bias(), affine), gate.kind, gate.layout.runs,
                gate.norm_bias, statistics, window if depth == len(layers) else None,
            )
            affine = norm_affine(norm, edges, stats)
        return activation, window, affine

    def hidden_given(
        self,
        rel_pos: torch.Tensor,
        attr: torch.Tensor | None,
        weights: list[LinearWeights],
        with_moments: bool = False,
        windowed: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The activation of hidden layer ``len(weights)`` (1-based), given the layer weights.

        ``weights`` are the per-layer ``(W, b)`` with every preceding batch norm already folded in
        (statistics gathered beforehand, e.g. over all edges by :mod:`steerable.nn.chunked`), so no batch
        norm is evaluated here and any subset of the edges gives the same rows as the full set.
        Returns the activation (times the radial window if ``windowed``), the window (if ``windowed``,
        else None) and, if ``with_moments``, the activation's batch-norm moments ``(Σ a, Σ a²)`` over
        these edges.

        Shapes: ``rel_pos: (E, d) → (H, E)`` (channels first, as :meth:`hidden`), ``(E,)``, ``((H,), (H,))``.
        """
        activation, window = self._windowed_inputs(rel_pos, attr, with_window=windowed)
        last = len(weights)
        stats = None
        for depth, ((_, gate, _), (weight, bias)) in enumerate(zip(self.layers(), weights), start=1):
            activation, stats = self.ops.hidden_layer_t(
                activation, weight, bias, gate.kind, gate.layout.runs, gate.norm_bias,
                with_moments and depth == last, window if windowed and depth == last else None,
            )
        return activation, window, stats

    def weight_and_bias(self, affine: Affine | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The Hom layer reshaped for contraction: ``W̃ (C_out, H, C_in)`` and ``B (C_out, C_in)`` or None.

        ``k(x) = Σ_h W̃[:, h, :] · hidden(x)[h] + w(|x|)·B`` (B: the Hom layer's bias on invariant blocks),
        with the pending batch-norm ``affine`` of :meth:`hidden` folded in. Both are scaled per output
        field (``hom_scale``) so messages have unit variance at initialisation.
        """
        weight, bias = fold_affine(self.hom.weight_and_bias(), affine)
        c_out, c_in, h = self.out_type.size, self.in_type.size, self.hidden_size
        scale = self.hom_scale.to(weight.dtype)
        full = weight.new_zeros(c_out * c_in, h).index_copy(0, self.flat_index, weight * scale[:, None])
        w_tilde = full.view(c_out, c_in, h).transpose(1, 2)
        return w_tilde, self._invariant_part(bias, scale)

    def _invariant_part(self, bias: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor | None:
        """The Hom layer's (scaled) bias as ``B (C_out, C_in)``, or None."""
        if bias is None:
            return None
        c_out, c_in = self.out_type.size, self.in_type.size
        return bias.new_zeros(c_out * c_in).index_copy(0, self.flat_index, bias * scale).view(c_out, c_in)

    def block_sparsity(self) -> BlockSparsity | None:
        """W̃'s structural non-zeros as dense blocks (on the module's device), or None: multiply densely."""
        if self._block_counts is None:
            return None
        return BlockSparsity(self.block_rows, self.block_rows_inverse, self.block_columns,
                             self.block_weight_index, *self._block_counts,
                             num_columns=self.hidden_size * self.in_type.size)

    def contraction_weights(self, affine: Affine | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor | None, BlockSparsity | None]:
        """What the node-wise contraction multiplies by: ``(weight, B, sparsity)``.

        Densely (no block sparsity): ``weight`` is W̃ flattened, ``(C_out, H·C_in)``. With blocks:
        ``weight`` holds only the blocks' entries ``(Σ_g |R_g|·K_g,)``, gathered straight from the Hom
        weights (no dense W̃ is built). ``B (C_out, C_in)`` or None as in :meth:`weight_and_bias`.
        """
        sparsity = self.block_sparsity()
        if sparsity is None:
            w_tilde, bias = self.weight_and_bias(affine)
            return w_tilde.flatten(1), bias, None
        weight, bias = fold_affine(self.hom.weight_and_bias(), affine)
        scale = self.hom_scale.to(weight.dtype)
        entries = (weight * scale[:, None]).flatten().index_select(0, self.block_hom_index)
        return entries, self._invariant_part(bias, scale), sparsity

    def _hom_positions(self, weight_index: torch.Tensor) -> torch.Tensor:
        """For flat indices into W̃ ``(C_out, H, C_in)``: the flat indices of the same entries in the Hom
        layer's expanded weight ``(n_hom, H)`` (every block entry is a Hom coordinate by construction)."""
        h, c_in = self.hidden_size, self.in_type.size
        out_in = (weight_index // (h * c_in)) * c_in + weight_index % c_in
        coordinate = torch.full((self.out_type.size * c_in,), -1, dtype=torch.long)
        coordinate[self.flat_index] = torch.arange(self.flat_index.numel())
        hom_row = coordinate[out_in]
        if bool((hom_row < 0).any()):
            raise RuntimeError("a block entry of the contraction weight is not a Hom coordinate")
        return hom_row * h + (weight_index // c_in) % h

    def _paying_block_sparsity(self) -> BlockSparsity | None:
        """W̃'s blocks where they do at most :data:`MAX_BLOCK_DENSITY` of the dense work in at most
        :data:`MAX_BLOCKS` matmuls, else None."""
        sparsity = block_sparsity(self._structural_support())
        if sparsity.density > MAX_BLOCK_DENSITY or len(sparsity.row_counts) > MAX_BLOCKS:
            return None
        return sparsity

    def _structural_support(self, draws: int = 2) -> torch.Tensor:
        """``(C_out, H·C_in)`` bool: the entries of W̃ that Hom weights can make non-zero.

        Read off W̃ for fixed-seed random Hom weights (restored afterwards); an entry counts where it
        exceeds 1e-6 of its row's largest, so round-off of the escnn basis is not taken for structure.
        """
        linear = self.hom.linear
        saved = linear.weights.data.clone()
        support = torch.zeros(self.out_type.size, self.hidden_size * self.in_type.size, dtype=torch.bool)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            for _ in range(draws):
                generalized_he_init(linear.weights.data, linear.basisexpansion)
                magnitude = self.weight_and_bias()[0].flatten(1).abs()
                support |= magnitude > 1e-6 * magnitude.amax(1, keepdim=True)
            linear.weights.data.copy_(saved)
        return support

    def _live_hidden(self) -> torch.Tensor:
        """``(H,)`` bool: hidden channels some input reaches (the rest stay exactly zero, e.g. 0o in O(3))."""
        live = torch.ones(self.input_type.size, dtype=torch.bool)
        with torch.no_grad():
            for layer in self.mlp:
                if isinstance(layer, EquivariantLinear):
                    weight = layer.linear.expand_parameters()[0][:, live].abs()
                    live = (weight > 1e-6 * weight.max().clamp(min=1e-30)).any(1)
                elif hasattr(layer, "num_gates") and layer.num_gates:
                    live = live[: live.numel() - layer.num_gates]
        return live

    def _initial_hom_scale(self, draws: int = 8) -> torch.Tensor:
        """``(n_hom,)`` scale of every Hom coordinate, constant on each output field (commutes with ρ_out).

        A message row o has variance Σ_{i, live h} E[W̃[o,h,i]²] for unit-variance inputs and live hidden
        channels. escnn's He init counts every hidden field as fan-in, including unreachable ones, and Hom
        components without a live source stay zero, so a flat 1/√C_in left messages at ~0.5 of the input
        scale. The expectation over escnn's init distribution is estimated from fixed-seed draws: the scale
        depends only on the types, never on the actual weights (no state to save).
        """
        live, linear = self._live_hidden(), self.hom.linear
        c_out, c_in = self.out_type.size, self.in_type.size
        saved, sq = linear.weights.data.clone(), 0.0
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for _ in range(draws):
                generalized_he_init(linear.weights.data, linear.basisexpansion)
                sq = sq + (linear.expand_parameters()[0][:, live] ** 2).sum(1) / draws
            linear.weights.data.copy_(saved)
        row_var = torch.zeros(c_out * c_in).index_copy(0, self.flat_index, sq.float()).view(c_out, c_in)
        layout = FieldLayout(self.out_type)
        field_var = torch.zeros(layout.num_fields).index_add(0, layout.field_of_channel, row_var.sum(1))
        field_var = field_var / layout.field_dim
        fallback = torch.tensor(c_in**-0.5)  # fields no hidden channel reaches: keep the plain 1/√C_in
        field_scale = torch.where(field_var > 0, field_var.clamp(min=1e-30).rsqrt(), fallback)
        return field_scale[layout.field_of_channel][self.flat_index // c_in]

    def kernel(self, rel_pos: torch.Tensor, attr: torch.Tensor | None = None) -> torch.Tensor:
        """Per-edge kernel matrices ``w(r)·(W φ(x) + b)``: ``(E, C_out, C_in)`` (readable, memory-hungry)."""
        h_t, window, affine = self.hidden(rel_pos, attr)
        w_tilde, bias = self.weight_and_bias(affine)
        k = torch.einsum("ohi,he->eoi", w_tilde, h_t)
        if bias is not None:
            k = k + window[:, None, None] * bias
        return k


def fold_affine(weight_and_bias: LinearWeights, affine: Affine | None) -> LinearWeights:
    """``(W, b)`` of a linear layer applied after ``x ↦ x·scale + shift``: ``(W·diag(scale), b + W·shift)``.

    Equivariant whenever the affine map is (a batch norm: per-field scale, shift on trivial channels).
    """
    weight, bias = weight_and_bias
    if affine is None:
        return weight, bias
    scale, shift = affine
    moved = weight @ shift
    return weight * scale, moved if bias is None else bias + moved


def _check_reachable(hom_reps: list[Representation], hidden: FieldType, in_type: FieldType,
                     out_type: FieldType) -> None:
    """Refuse a kernel that is identically zero; warn about (out field, in field) blocks that are.

    The Hom layer maps φ's hidden type linearly and equivariantly onto ``ρ_out,i ⊗ ρ_in,j`` block by
    block, so (Schur) a block's irreducible components that no hidden field contains stay exactly zero:
    with ``band_limit=1``, for example, a scalar → ℓ=2 kernel, or the ℓ=2 part of a vector → vector
    kernel. ``hom_reps`` are the blocks in the order of :meth:`ImplicitKernel._hom_blocks` (output field
    major).
    """
    available = {irrep for rep in hidden.representations for irrep in rep.irreps}
    dead, missing = set(), set()
    n_in = len(in_type.representations)
    for index, rep in enumerate(hom_reps):
        absent = [irrep for irrep in rep.irreps if irrep not in available]
        missing.update(absent)
        if len(absent) == len(rep.irreps):
            source, target = in_type.representations[index % n_in], out_type.representations[index // n_in]
            dead.add(f"{source.name} -> {target.name}")
    if not missing:
        return
    names = ", ".join(sorted(hidden.fibergroup.irrep(*irrep).name for irrep in missing))
    advice = (f"φ's hidden type has no field of the irreps {names} (frequency ℓ needs band_limit >= ℓ): "
              "raise band_limit or add them to `hidden`")
    if len(dead) == len(hom_reps):
        names_in, names_out = ("+".join(r.name for r in t.representations) for t in (in_type, out_type))
        raise ValueError(f"the kernel {names_in} -> {names_out} would be identically zero: {advice}")
    if dead:
        log.warning("kernel blocks %s are identically zero: %s", ", ".join(sorted(dead)), advice)


def _symmetric_square(group: GroupSpec) -> tuple[list[Representation], np.ndarray]:
    """Irreps (restricted to G) of the symmetric part of std ⊗ std, and the ``(k, d²)`` map from vec(u⊗u).

    The antisymmetric part of u⊗u (the ``1e`` irrep in 3-D, the determinant in 2-D) vanishes identically.
    Feeding it to φ creates hidden fields that carry only rounding noise, which batch norm then scales up to
    unit size: a non-equivariant signal (measured 1e-4 relative error in float32 for o3, cone, full_octa).
    """
    std = group.ambient.basespace_action
    square = std.tensor(std)
    basis, basis_inv = np.asarray(square.change_of_basis), np.asarray(square.change_of_basis_inv)
    d, start = group.dim, 0
    reps, rows = [], []
    for irrep_id in square.irreps:
        parent = square.group.irrep(*irrep_id)
        block = basis[:, start : start + parent.size].reshape(d, d, -1)
        if np.allclose(block, block.transpose(1, 0, 2), atol=1e-9):
            rep = parent.restrict(group.sg_id)
            group._parents[rep.name] = parent
            reps.append(rep)
            rows.append(basis_inv[start : start + parent.size])
        start += parent.size
    return reps, np.concatenate(rows).astype(np.float64)


def _offsets(field_type: FieldType) -> list[int]:
    sizes = [rep.size for rep in field_type.representations]
    return [sum(sizes[:i]) for i in range(len(sizes))]
