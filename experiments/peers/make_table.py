"""Equal-budget comparison of the implicit steerable models with their peers (EGNN) from finished runs.

    python experiments/peers/make_table.py SWEEP_DIR [SWEEP_DIR ...] [--out FILE]

One row per run (``metrics.json`` + ``.hydra/config.yaml``), grouped by dataset (N-body, QM9):
model, its own overrides, budget (``trainer.max_time`` and/or epochs), training epochs run, seconds
in the training loop and training throughput (``train/loop_s``, ``train/samples_per_s`` from
``callbacks=timed``), the best checkpoint's validation metric, the test metric of that checkpoint
(N-body: position MSE; QM9: MAE per target in meV), learning rate and schedule, batch size. Prints
the Markdown; ``--out`` also writes it to FILE.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from steerable.results import collect_runs, markdown_table

KEYS = {
    "model_target": "model._target_",
    "kernel": "model.kernel",
    "hidden": "model.hidden",
    "num_layers": "model.num_layers",
    "num_features": "model.num_features",
    "dataset": "dataset._target_",
    "targets": "dataset.targets",
    "n_train": "dataset.n_train",
    "max_time": "trainer.max_time",
    "max_epochs": "trainer.max_epochs",
    "seed": "seed",
    "lr": "task.optimizer.lr",
    "batch_size": "dataset.batch_size",
    "scheduler": "task.scheduler._target_",
}
HEADER = ["model", "overrides", "budget", "epochs run", "train loop s", "train samples/s", "best val", "test",
          "lr", "batch", "seed", "run"]
# command-line overrides every run of a recipe shares (budget, schedule: the lr column names it, logging):
# left out of the overrides column
COMMON = ("experiment=", "model=", "trainer.max_epochs=", "trainer.max_time=", "task.scheduler",
          "++task.scheduler", "callbacks", "logger=", "hydra.", "paths.")


def overrides(run_dir: str) -> str:
    """The run's own command-line overrides (``.hydra/overrides.yaml``) beyond those in :data:`COMMON`."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return ""
    items = yaml.safe_load(path.read_text()) or []
    return " ".join(f"`{item}`" for item in items if not str(item).startswith(COMMON))


def model_name(row: dict[str, Any]) -> str:
    """``EGNN 4×64``, ``implicit 16 feat``, ``analytic 16 feat``, or the class name."""
    target = str(row["model_target"] or "?").rsplit(".", 1)[-1]
    if target == "EGNN":
        return f"EGNN {row['num_layers']}×{row['hidden']}"
    if row["kernel"] is not None:
        width = f" {row['num_features']} feat" if row["num_features"] is not None else ""
        return f"{target} ({row['kernel']}){width}"
    return target


def learning_rate(row: dict[str, Any]) -> str:
    """``1e-03``, plus the scheduler's class name when there is one (``1e-03 CosineAnnealingLR``)."""
    lr = "?" if row["lr"] is None else f"{float(row['lr']):.0e}"
    return f"{lr} {str(row['scheduler']).rsplit('.', 1)[-1]}" if row["scheduler"] else lr


def budget(row: dict[str, Any]) -> str:
    if row["max_time"]:
        return f"{row['max_time']} wall, ≤ {row['max_epochs']} epochs"
    return f"{row['max_epochs']} epochs"


def task_of(row: dict[str, Any]) -> str:
    dataset = str(row["dataset"] or "")
    return "nbody" if "nbody" in dataset else "qm9" if "qm9" in dataset else dataset.rsplit(".", 1)[-1]


def metric_cells(row: dict[str, Any]) -> tuple[float | None, float | str | None]:
    """(best validation value, test value) in the task's own metric."""
    metrics = row["metrics"]
    if task_of(row) == "nbody":
        return metrics.get("val/mse_best"), metrics.get("test/mse")
    targets = row["targets"] or []
    tests = [f"{t} {metrics[f'test/{t}_mae_meV']:.1f} meV" for t in targets if f"test/{t}_mae_meV" in metrics]
    return metrics.get("val/mae_best"), ", ".join(tests) or metrics.get("test/mae")


def table_rows(rows: list[dict[str, Any]]) -> dict[str, list[list[Any]]]:
    """Markdown rows per task (``nbody``, ``qm9``, …), in run-dir order."""
    out: dict[str, list[list[Any]]] = {}
    for row in rows:
        metrics = row["metrics"]
        val, test = metric_cells(row)
        epochs = metrics.get("train/epochs_done")
        speed, loop = metrics.get("train/samples_per_s"), metrics.get("train/loop_s")
        run = Path(row["run_dir"])
        out.setdefault(task_of(row), []).append([
            model_name(row), overrides(row["run_dir"]), budget(row), None if epochs is None else int(epochs),
            None if loop is None else round(loop), None if speed is None else round(speed, 1), val, test,
            learning_rate(row), row["batch_size"], row["seed"],
            f"{run.parent.name}/{run.name}"])
    return out


def render(rows: list[dict[str, Any]]) -> str:
    titles = {"nbody": "N-body (test: position MSE of the best-validation checkpoint)",
              "qm9": "QM9 (test: MAE of the best-validation checkpoint)"}
    parts = []
    for task, cells in table_rows(rows).items():
        parts.append(f"### {titles.get(task, task)}\n\n{markdown_table(HEADER, cells)}\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = [row for sweep in args.sweep_dirs for row in collect_runs(sweep, KEYS)]
    if not rows:
        raise SystemExit(f"error: no metrics.json under {' '.join(args.sweep_dirs)}")
    text = render(rows)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
