"""Equivariance table: ``python -m steerable.check [group=NAME|all] [dim=3|2|all] [N=4] [n_elements=5]``.

For every requested group, builds a point convolution with mixed field types (3-D:
``2x0e+3x1o+1x2e → 4x0e+2x1o``; 2-D: ``2x0e+3x1+1x2 → 4x0e+2x1``) with each kernel — implicit with gated
nonlinearities, implicit with norm nonlinearities, escnn's analytic basis — and prints the maximal relative
equivariance error ``‖f(g·in) − g·f(in)‖ / ‖f(in)‖`` over random group elements (a reflection included
where G has one), in float32 and float64. Exit status 1 if a float32 error exceeds ``tol`` (default 1e-5)
or a cell fails.

>>> main(["group=o3"])  # doctest: +SKIP
group    dim  implicit-gated f32  implicit-gated f64  implicit-norm f32  ...
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable

import torch

from steerable.groups import GroupError, valid_group_names
from steerable.nn.analytic import AnalyticPointConv
from steerable.nn.point_conv import ImplicitPointConv
from steerable.testing import N_DISCRETE, group, point_module_errors, random_point_inputs

TYPES = {3: ("2x0e+3x1o+1x2e", "4x0e+2x1o"), 2: ("2x0e+3x1+1x2", "4x0e+2x1")}
KERNELS: dict[str, Callable[..., torch.nn.Module]] = {
    "implicit-gated": lambda G, i, o: ImplicitPointConv(G, i, o, nonlinearity="gated"),
    "implicit-norm": lambda G, i, o: ImplicitPointConv(G, i, o, nonlinearity="norm"),
    "analytic": lambda G, i, o: AnalyticPointConv(G, i, o),
}
DTYPES = {"f32": torch.float32, "f64": torch.float64}
DEFAULTS = {"group": "all", "dim": "3", "N": str(N_DISCRETE), "n_elements": "5", "seed": "0", "tol": "1e-5"}


def parse_args(argv: list[str]) -> dict[str, str]:
    """``key=value`` overrides (Hydra style) on top of :data:`DEFAULTS`."""
    options = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in DEFAULTS:
            raise SystemExit(f"usage: python -m steerable.check [{' '.join(f'{k}=...' for k in DEFAULTS)}]; "
                             f"got {arg!r}")
        options[key] = value
    return options


def cell(name: str, dim: int, n: int, kernel: str, dtype: torch.dtype, n_elements: int, seed: int) -> float:
    """Max relative equivariance error of one (group, kernel, dtype) combination."""
    G = group(name, dim, N=n)
    torch.manual_seed(seed)
    conv = KERNELS[kernel](G, *TYPES[dim]).to(dtype)
    x, pos, edge_index = random_point_inputs(conv.in_type, dtype=dtype, seed=seed)
    return max(point_module_errors(conv, x, pos, edge_index, n_elements=n_elements, seed=seed))


def table(groups: list[tuple[str, int]], n: int, n_elements: int, seed: int,
          out=sys.stdout) -> dict[tuple[str, int, str, str], float | str]:
    """Print the table row by row; return ``{(group, dim, kernel, dtype): error or error message}``."""
    columns = [(k, d) for k in KERNELS for d in DTYPES]
    header = f"{'group':<10} {'dim':>3}  " + "  ".join(f"{f'{k} {d}':>18}" for k, d in columns) + "  time"
    print(header, file=out)
    print("-" * len(header), file=out)
    results: dict[tuple[str, int, str, str], float | str] = {}
    for name, dim in groups:
        start, cells = time.time(), []
        for kernel, dtype_name in columns:
            try:
                value: float | str = cell(name, dim, n, kernel, DTYPES[dtype_name], n_elements, seed)
                text = f"{value:.1e}"
            except Exception as error:  # one failing cell must not hide the rest of the table
                value = f"{type(error).__name__}: {error}"
                text = type(error).__name__[:18]
            results[(name, dim, kernel, dtype_name)] = value
            cells.append(f"{text:>18}")
        row = f"{name:<10} {dim:>3}  " + "  ".join(cells) + f"  {time.time() - start:.1f}s"
        print(row, file=out, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    options = parse_args(sys.argv[1:] if argv is None else argv)
    dims = [3, 2] if options["dim"] == "all" else [int(options["dim"])]
    groups = []
    for dim in dims:
        if dim not in (2, 3):
            raise SystemExit(f"dim must be 2, 3 or all, got {dim}")
        if options["group"] == "all":
            groups += [(name, dim) for name in valid_group_names(dim)]
        elif options["group"] in valid_group_names(dim):
            groups.append((options["group"], dim))
    if not groups:  # dim=all: the group exists in some dimension
        valid = ", ".join(sorted({name for dim in dims for name in valid_group_names(dim)}))
        raise SystemExit(str(GroupError(f"unknown group {options['group']!r} for dim={options['dim']}; "
                                        f"valid: {valid}")))
    numbers = {}
    for key, kind in (("N", int), ("n_elements", int), ("seed", int), ("tol", float)):
        try:
            numbers[key] = kind(options[key])
        except ValueError:
            raise SystemExit(f"{key} must be {'an integer' if kind is int else 'a number'}, "
                             f"got {options[key]!r}") from None
    for name, dim in groups:  # a bad N (or the like) is one error, not one per cell
        try:
            group(name, dim, N=numbers["N"])
        except GroupError as err:
            raise SystemExit(str(err)) from None
    # Tiny tensors: one intra-op thread avoids OpenMP waits on busy machines (~10x faster here).
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = table(groups, numbers["N"], numbers["n_elements"], numbers["seed"])
    tol = numbers["tol"]
    failed = {k: v for k, v in results.items() if isinstance(v, str) or (k[3] == "f32" and v > tol)}
    for (name, dim, kernel, dtype), value in failed.items():
        print(f"FAIL {name} (dim {dim}) {kernel} {dtype}: {value}")
    print(f"max relative equivariance error over {options['n_elements']} random elements per cell "
          f"(reflections included where present); float32 tolerance {tol:g}: {'FAIL' if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
