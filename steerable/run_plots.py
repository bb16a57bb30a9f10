"""Plots of a finished (or running) run, drawn from its run dir (library of ``python -m steerable.plot``).

Writes PNGs into ``<run_dir>/plots/``:

- ``learning_curves.png``: every logged metric family (``loss``, ``mae``, ``acc``…) per epoch for
  train/val (test as a marker), plus the learning rate, from the CSV logs (``logger=csv`` or the
  default ``wandb`` + ``csv``).
- ``kernel_slices.png`` / ``kernel_rotation.png``: the learned implicit kernel of one conv layer of
  the checkpoint (see :mod:`steerable.kernel_views`); drawn when the run has a checkpoint.

:func:`plot_run` draws them all; the command line (:mod:`steerable.plot`) and the
:class:`~steerable.callbacks.PlotsToLoggers` callback call it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from steerable.checkpoint import load_checkpoint  # noqa: E402
from steerable.io_utils import atomic_write  # noqa: E402
from steerable.kernel_views import (  # noqa: E402
    NoImplicitConv,
    draw_kernel_slices,
    draw_rotation_response,
    pick_conv,
    strongest_entries,
)
from steerable.metrics_csv import read_metrics  # noqa: E402

STAGES = ("train", "val", "test")


def find_metrics_csv(run_dir: Path) -> Path:
    """The run's CSV log, ``<run_dir>/csv/metrics.csv`` (or a versioned one below ``csv/``).

    Raises:
        FileNotFoundError: none there; for a multirun sweep dir, naming its job dirs to pass instead.
    """
    candidates = sorted(run_dir.glob("csv/**/metrics.csv"))
    if candidates:
        return candidates[0]
    jobs = sorted({p.parents[1] for p in run_dir.glob("*/csv/**/metrics.csv")}, key=lambda p: p.name)
    if jobs:
        raise FileNotFoundError(f"{run_dir} is a sweep of {len(jobs)} runs, not one run: pass one of them "
                                f"as run_dir, e.g. run_dir={jobs[0]}")
    raise FileNotFoundError(f"no metrics.csv under {run_dir} (was the run logged with logger=csv "
                            "or the default wandb+csv?)")


def metric_families(series: dict[str, list]) -> dict[str, dict[str, str]]:
    """``family → {stage: column}``, e.g. ``mae → {train: train/mae, val: val/mae}``."""
    families: dict[str, dict[str, str]] = defaultdict(dict)
    for key in series:
        stage, _, name = key.partition("/")
        if stage in STAGES and name:
            families[name][stage] = key
    return dict(sorted(families.items()))


def draw_learning_curves(series: dict[str, list[tuple[float, float]]], title: str):
    """Figure: one panel per metric family (train/val lines, test markers), plus learning rates."""
    families = metric_families(series)
    lrs = [key for key in series if key.startswith("lr")]
    panels = list(families) + (["learning rate"] if lrs else [])
    if not panels:
        raise ValueError("the CSV log holds no train/val/test metrics yet")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False,
                             constrained_layout=True)
    for ax, panel in zip(axes.flat, panels):
        columns = {key: key for key in lrs} if panel == "learning rate" else families[panel]
        for label, key in columns.items():
            xs, ys = zip(*series[key])
            test_style = {"marker": "*", "markersize": 10, "linestyle": "none"}
            style = test_style if label == "test" else {"marker": "."}
            ax.plot(xs, ys, label=label, **style)
        positive = all(y > 0 for key in columns.values() for _, y in series[key])
        if panel in ("loss", "learning rate") and positive:
            ax.set_yscale("log")
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("step" if panel == "learning rate" else "epochs trained", fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return fig


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as PNG atomically; close it."""
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return path


def default_checkpoint(run_dir: Path) -> Path | None:
    """The best checkpoint (``checkpoints/epoch_*.ckpt``, newest), else ``last.ckpt``, else None."""
    ckpt_dir = run_dir / "checkpoints"
    best = sorted(ckpt_dir.glob("epoch_*.ckpt"), key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    last = ckpt_dir / "last.ckpt"
    return last if last.is_file() else None


def plot_learning_curves(run_dir: Path, out_dir: Path) -> Path:
    series = read_metrics(find_metrics_csv(run_dir))
    return save_figure(draw_learning_curves(series, f"{run_dir.name}: learning curves"),
                       out_dir / "learning_curves.png")


def plot_kernel(ckpt_path: Path, out_dir: Path, layer: int | str = 0, entries: int = 3,
                seed: int = 0) -> tuple[list[Path], float]:
    """Kernel slices and rotation response of one implicit conv; returns the PNGs and the
    relative steerability error ``max|k(Rx) − ρ_out k(x) ρ_inᵀ| / max|k|``."""
    task, cfg = load_checkpoint(ckpt_path)
    name, conv = pick_conv(task.model, layer)
    picked = strongest_entries(conv, entries)
    title = f"{ckpt_path.name}: {name} ({cfg.group.name}), {conv.in_type.size}→{conv.out_type.size} channels"
    slices = save_figure(draw_kernel_slices(conv, picked, title), out_dir / "kernel_slices.png")
    fig, error = draw_rotation_response(conv, picked, title, seed=seed)
    return [slices, save_figure(fig, out_dir / "kernel_rotation.png")], error


def plot_run(run_dir: str | Path, ckpt_path: str | Path | None = None, layer: int | str = 0,
             entries: int = 3, seed: int = 0) -> list[Path]:
    """Every plot for a run dir (see module docstring); returns the written PNG paths."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir {run_dir} does not exist")
    out_dir = run_dir / "plots"
    ckpt = Path(ckpt_path) if ckpt_path else default_checkpoint(run_dir)
    try:
        written = [plot_learning_curves(run_dir, out_dir)]
    except FileNotFoundError as err:
        if ckpt is None:
            raise
        print(f"no learning curves: {err}")  # e.g. trained with logger=none: the kernel plots still work
        written = []
    if ckpt is None:
        return written
    try:
        pngs, error = plot_kernel(ckpt, out_dir, layer, entries, seed)
    except NoImplicitConv as err:
        if ckpt_path:  # asked for explicitly: say why not
            raise
        print(f"no kernel plots: {err}")
        return written
    print(f"kernel steerability error (relative, max over the xy plane): {error:.2e}")
    return written + pngs
