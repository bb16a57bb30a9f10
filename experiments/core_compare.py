"""Reference (per-edge kernels) vs node-wise contraction: forward+backward time and peak memory.

A quick side-by-side check, one shape per line (the full benchmark is ``python -m steerable.bench``).
Each (shape, path) runs in its own subprocess so the peak-memory figure (``VmHWM`` over the baseline
right before the step) is not polluted by the other path; see :mod:`steerable.bench.worker`.

Usage::

    .venv/bin/python experiments/core_compare.py            # three shapes, 2 threads
    .venv/bin/python experiments/core_compare.py --threads 1 --k 16 32
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see steerable/bench/__main__.py

from steerable.bench.__main__ import KERNEL, run_worker  # noqa: E402
from steerable.bench.shapes import C64, QM9_TYPES, shape  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--k", type=int, nargs="+", default=[16, 32], help="kNN degrees of the 1,024-point cloud")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    shapes = [shape("qm9_radius5 (32 mol)", "qm9", 32, 18, "radius", 5.0, QM9_TYPES)]
    shapes += [shape(f"cloud1024_k{k}_c64", "modelnet", 1, 1024, "knn", k, C64) for k in args.k]
    print(f"{'shape':<22s} {'E':>7s} {'C':>3s} | {'ref s':>7s} {'node s':>7s} {'speedup':>7s} | "
          f"{'ref MB':>7s} {'node MB':>7s} {'ratio':>6s}")
    for spec in shapes:
        res = {}
        for path in ("reference", "nodewise"):
            job = dict(kind="conv", shape=spec, variant=path, threads=args.threads, seed=0, kernel=KERNEL,
                       repeats=args.repeats, budget_s=20.0, extras=False)
            res[path] = run_worker(job, timeout=900)
            if "error" in res[path]:
                raise SystemExit(f"{spec['name']} {path}: {res[path]['error']}")
        ref, nw = res["reference"], res["nodewise"]
        print(f"{spec['name']:<22s} {nw['edges']:>7d} {nw['c_in']:>3d} | "
              f"{ref['step_s']:7.3f} {nw['step_s']:7.3f} {ref['step_s'] / nw['step_s']:6.1f}× | "
              f"{ref['peak_mb']:7.0f} {nw['peak_mb']:7.0f} "
              f"{ref['peak_mb'] / max(nw['peak_mb'], 1.0):5.1f}×", flush=True)


if __name__ == "__main__":
    main()
