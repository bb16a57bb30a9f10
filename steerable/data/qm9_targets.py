"""QM9 regression targets: names, literature units, conversions, atomization energies.

Targets are selected by name. Scalar targets give one column each; ``polarizability_tensor`` gives
nine (the 3×3 tensor, row-major, bohr³). Energies are reported in meV (the unit of published MAEs).
Unit strings are metric-name safe (``cal_mol_K`` for cal/mol/K, ``bohr3`` for bohr³) since tasks
log ``{stage}/{name}_mae_{unit}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from steerable.chem import ATOMIC_NUMBERS
from steerable.data.qm9_raw import PROPERTY_COLUMNS

#: meV per Hartree (CODATA 2018: 27.211386 eV).
HARTREE_TO_MEV = 27_211.386


@dataclass(frozen=True)
class TargetSpec:
    """One scalar QM9 target: raw column, factor from source unit, reported unit."""

    name: str
    column: str
    factor: float
    unit: str


SCALAR_TARGETS: dict[str, TargetSpec] = {
    spec.name: spec
    for spec in (
        TargetSpec("mu", "Dipole_debye", 1.0, "D"),
        TargetSpec("alpha", "Polarizability_bohr3", 1.0, "bohr3"),
        TargetSpec("homo", "HOMO_au", HARTREE_TO_MEV, "meV"),
        TargetSpec("lumo", "LUMO_au", HARTREE_TO_MEV, "meV"),
        TargetSpec("gap", "HOMO_LUMO_gap_au", HARTREE_TO_MEV, "meV"),
        TargetSpec("r2", "R2_bohr2", 1.0, "bohr2"),
        TargetSpec("zpve", "ZPVE_au", HARTREE_TO_MEV, "meV"),
        TargetSpec("U0", "InternalEnergy_0K_au", HARTREE_TO_MEV, "meV"),
        TargetSpec("U", "InternalEnergy_298K_au", HARTREE_TO_MEV, "meV"),
        TargetSpec("H", "Enthalphy_298K_au", HARTREE_TO_MEV, "meV"),
        TargetSpec("G", "GibbsFreeEnergy_298K_au", HARTREE_TO_MEV, "meV"),
        TargetSpec("Cv", "Heatcapacity_Cv_cal_mol_K", 1.0, "cal_mol_K"),
    )
}
TENSOR_TARGET = "polarizability_tensor"
TENSOR_COMPONENTS: tuple[str, ...] = tuple(f"alpha_{a}{b}" for a in "xyz" for b in "xyz")
TARGET_NAMES: tuple[str, ...] = (*SCALAR_TARGETS, TENSOR_TARGET)

#: Energies of the free atoms H, C, N, O, F in Hartree, from QM9's ``atomref.txt``
#: (Ramakrishnan et al., Sci. Data 1, 140022 (2014), figshare 10.6084/m9.figshare.978904):
#:     U (0 K)     H −0.500273  C −37.846772  N −54.583861  O −75.064579  F −99.718730
#:     U (298 K)   H −0.498857  C −37.845355  N −54.582445  O −75.063162  F −99.717314
#:     H (298 K)   H −0.497912  C −37.844411  N −54.581501  O −75.062219  F −99.716370
#:     G (298 K)   H −0.510927  C −37.861317  N −54.598897  O −75.079532  F −99.733544
#: (The same numbers, in eV, are torch_geometric's ``datasets/qm9.py`` ``atomrefs`` ÷ 27.211386.)
ATOM_REFERENCE_HARTREE: dict[str, tuple[float, ...]] = {
    "U0": (-0.500273, -37.846772, -54.583861, -75.064579, -99.718730),
    "U": (-0.498857, -37.845355, -54.582445, -75.063162, -99.717314),
    "H": (-0.497912, -37.844411, -54.581501, -75.062219, -99.716370),
    "G": (-0.510927, -37.861317, -54.598897, -75.079532, -99.733544),
}


def validate_targets(targets: list[str] | tuple[str, ...] | str) -> list[str]:
    """Return ``targets`` as a list, raising ``ValueError`` on unknown or repeated names."""
    names = [targets] if isinstance(targets, str) else list(targets)
    if not names:
        raise ValueError(f"targets is empty; choose from {list(TARGET_NAMES)}")
    unknown = [n for n in names if n not in TARGET_NAMES]
    if unknown:
        raise ValueError(f"unknown QM9 target(s) {unknown}; choose from {list(TARGET_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"targets {names} repeat a name")
    return names


def column_names_units(targets: list[str], atomization: bool) -> tuple[list[str], list[str]]:
    """Per-column names and units of :func:`compute_targets` output (T entries each)."""
    names: list[str] = []
    units: list[str] = []
    for target in validate_targets(targets):
        if target == TENSOR_TARGET:
            names += list(TENSOR_COMPONENTS)
            units += ["bohr3"] * 9
        else:
            suffix = "_atom" if atomization and target in ATOM_REFERENCE_HARTREE else ""
            names.append(target + suffix)
            units.append(SCALAR_TARGETS[target].unit)
    return names, units


def element_counts(z: np.ndarray, atom_ptr: np.ndarray) -> np.ndarray:
    """Per-molecule counts of H, C, N, O, F: (M, 5) int64 from z (A,) and atom_ptr (M+1,)."""
    molecule = np.repeat(np.arange(len(atom_ptr) - 1), np.diff(atom_ptr))
    counts = np.zeros((len(atom_ptr) - 1, len(ATOMIC_NUMBERS)), dtype=np.int64)
    for k, number in enumerate(ATOMIC_NUMBERS):
        np.add.at(counts[:, k], molecule[z == number], 1)
    return counts


def polarizability_matrix(pol6: np.ndarray) -> np.ndarray:
    """(M, 6) ``A_xx, A_xy, A_yy, A_xz, A_yz, A_zz`` → (M, 3, 3) symmetric tensors."""
    xx, xy, yy, xz, yz, zz = pol6.T
    rows = [np.stack(r, axis=-1) for r in ((xx, xy, xz), (xy, yy, yz), (xz, yz, zz))]
    return np.stack(rows, axis=-2)


def compute_targets(
    targets: list[str],
    props: np.ndarray,
    polarizability: np.ndarray,
    counts: np.ndarray,
    atomization: bool = False,
) -> np.ndarray:
    """Targets in reporting units.

    Args:
        targets: names from :data:`TARGET_NAMES`.
        props: (M, 12) raw properties in :data:`PROPERTY_COLUMNS` order, source units.
        polarizability: (M, 3, 3) tensors in bohr³ (already in the frame of ``pos``).
        counts: (M, 5) element counts (H, C, N, O, F), used when ``atomization``.
        atomization: subtract the free-atom energies from U0, U, H, G.

    Returns:
        (M, T) float64, columns as in :func:`column_names_units`.
    """
    columns = []
    for target in validate_targets(targets):
        if target == TENSOR_TARGET:
            columns.append(polarizability.reshape(-1, 9))
            continue
        spec = SCALAR_TARGETS[target]
        value = props[:, PROPERTY_COLUMNS.index(spec.column)].copy()
        if atomization and target in ATOM_REFERENCE_HARTREE:
            value -= counts @ np.asarray(ATOM_REFERENCE_HARTREE[target])
        columns.append((value * spec.factor)[:, None])
    return np.concatenate(columns, axis=1)
