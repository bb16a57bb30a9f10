"""Memory that building a kernel's Hom layer takes, estimated from characters before anything is built.

The last layer of φ maps each hidden field ψ to R = ρ_out ⊗ ρ_in (one block of the Hom type per pair
of input and output fields). escnn normalises the equivariant basis of each such block, ``b`` elements
of shape ``(o, |ψ|)``, through a ``(b, o, o)`` intermediate (``normalize_basis`` forms B Bᵀ per
element), and :func:`steerable.kernels.linear.expansion_table` samples and normalises the block again in
float64: the peak is ``8·b·o²`` bytes for the largest block, with

    o = |ρ_out|·|ρ_in|,    b = dim Hom_G(ψ, ρ_out ⊗ ρ_in) = (1/|G|) Σ_g χ_ψ(g) χ_out(g) χ_in(g)

for a finite group G (real representations). Regular fields make this explode: ``o = |G|²`` and
``b = |G|·|ψ|``, so ``regular → regular`` kernels of ``ico`` (|G| = 60) with 3-dim hidden fields need
180·3600²·8 bytes ≈ 18.7 GB, of ``octa`` (|G| = 24) 0.19 GB. For continuous groups (band-limited irreps,
no regular fields) ``b ≤ |ψ|·o`` bounds the estimate. :func:`check_kernel_basis_memory` refuses a kernel
above :func:`basis_memory_limit` before escnn is asked to build it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from escnn.group import Representation
from escnn.nn import FieldType

from steerable.groups import GroupSpec

MAX_BASIS_GB_ENV = "STEERABLE_MAX_BASIS_GB"
DEFAULT_MAX_BASIS_GB = 8.0  # a third of a 24 GB machine: room for the data, the model and a second rank
BYTES_PER_VALUE = 8  # the float64 pass is the larger of the two normalisations
SMALLER_FIELDS = "1x0e+1x1o+1x2e"  # a field type any group carries, 9 channels


class BasisTooLarge(ValueError):
    """A kernel whose equivariant basis would take more memory to build than allowed."""


def basis_memory_limit() -> float:
    """Bytes a kernel's basis may take to build: ``$STEERABLE_MAX_BASIS_GB`` (default 8) GB.

    Raises:
        ValueError: the variable is set but is not a positive number.
    """
    text = os.environ.get(MAX_BASIS_GB_ENV)
    if text is None:
        return DEFAULT_MAX_BASIS_GB * 1e9
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ValueError(f"{MAX_BASIS_GB_ENV} must be a positive number of GB, got {text!r}")
    return value * 1e9


def _characters(group: GroupSpec, reps: Sequence[Representation]) -> dict[str, np.ndarray]:
    """``rep.name → (|G|,)`` characters over the elements of a finite group."""
    elements = list(group.group.elements)
    return {rep.name: np.array([np.trace(np.asarray(rep(g))) for g in elements]) for rep in reps}


def _distinct(reps: Sequence[Representation]) -> list[Representation]:
    return list({rep.name: rep for rep in reps}.values())


def hom_block_sizes(group: GroupSpec, hidden: FieldType, in_type: FieldType, out_type: FieldType
                    ) -> list[tuple[int, int, Representation, Representation]]:
    """``(b, o, ρ_out, ρ_in)`` for every distinct block of the Hom layer (see the module doc).

    ``b`` is exact for finite groups and an upper bound (``|ψ|·o``) for continuous ones.
    """
    hidden_reps = _distinct(hidden.representations)
    in_reps, out_reps = _distinct(in_type.representations), _distinct(out_type.representations)
    finite = not group.group.continuous
    chars = _characters(group, [*hidden_reps, *in_reps, *out_reps]) if finite else {}
    blocks = []
    for rep_o in out_reps:
        for rep_i in in_reps:
            o = rep_o.size * rep_i.size
            for psi in hidden_reps:
                if finite:
                    product = chars[psi.name] * chars[rep_o.name] * chars[rep_i.name]
                    b = int(round(float(product.sum()) / len(product)))
                else:
                    b = psi.size * o
                blocks.append((b, o, rep_o, rep_i))
    return blocks


def kernel_basis_bytes(group: GroupSpec, hidden: FieldType, in_type: FieldType, out_type: FieldType
                       ) -> tuple[int, tuple[int, int, Representation, Representation]]:
    """Peak bytes of building the Hom layer, and the block that sets it."""
    block = max(hom_block_sizes(group, hidden, in_type, out_type), key=lambda s: s[0] * s[1] ** 2)
    return BYTES_PER_VALUE * block[0] * block[1] ** 2, block


def check_kernel_basis_memory(group: GroupSpec, hidden: FieldType, in_type: FieldType,
                              out_type: FieldType) -> None:
    """Refuse a kernel whose Hom layer would take more than :func:`basis_memory_limit` to build.

    Raises:
        BasisTooLarge: with the estimate, the fields that cause it and a smaller field type.
    """
    needed, (b, o, rep_o, rep_i) = kernel_basis_bytes(group, hidden, in_type, out_type)
    limit = basis_memory_limit()
    if needed <= limit:
        return
    regular = "regular" in rep_o.name or "regular" in rep_i.name
    raise BasisTooLarge(
        f"the kernel from {rep_i.name} (size {rep_i.size}) to {rep_o.name} (size {rep_o.size}) fields of "
        f"group {group.name!r} needs about {needed / 1e9:.1f} GB to build ({b} basis elements of the "
        f"{o}-dim tensor product, normalised at once), over the {limit / 1e9:g} GB limit; use smaller "
        f"fields, e.g. irreps '{SMALLER_FIELDS}' instead of {'regular' if regular else 'these'} ones, or "
        f"raise {MAX_BASIS_GB_ENV}")
