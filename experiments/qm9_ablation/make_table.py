"""Turn the QM9 HOMO ablation sweep into a Markdown table and a bar plot.

    python experiments/qm9_ablation/make_table.py <sweep_dir> [--out experiments/qm9_ablation]

Rows: standard (analytic) kernel, implicit, implicit + bond attrs, implicit + bond + atom attrs;
columns: validation and test HOMO MAE (meV) of each run (one row per run, so seeds show separately).

The test MAE is the best checkpoint's (``metrics.json``). So is the validation MAE where
``metrics.json`` holds it: ``val/homo_mae_meV_best``, or ``val/mae_best`` when HOMO is the run's only
target (``val/mae`` is then the HOMO MAE in meV). Otherwise the validation MAE is the last epoch's, and
the table says so (a header naming the last epoch, or ``(last epoch)`` in the cell if runs differ).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from steerable.results import markdown_table, sweep_from_command_line  # noqa: E402

KEYS = {
    "kernel": "model.kernel",
    "edge_attrs": "model.edge_attrs",
    "node_attrs": "model.node_attrs",
    "group": "group.name",
    "seed": "seed",
    "epochs": "trainer.max_epochs",
    "targets": "dataset.targets",
}
VAL = "val/homo_mae_meV"
LAST_EPOCH = "(last epoch)"


def arm(row: dict) -> str:
    if row["kernel"] == "analytic":
        return "standard kernel"
    return {
        (False, False): "implicit",
        (True, False): "implicit + bonds",
        (True, True): "implicit + bonds + atoms",
        (False, True): "implicit + atoms",
    }[(bool(row["edge_attrs"]), bool(row["node_attrs"]))]


def best_val(row: dict) -> float | None:
    """The best checkpoint's validation HOMO MAE (meV), where ``metrics.json`` holds it."""
    metrics = row["metrics"]
    if f"{VAL}_best" in metrics:
        return metrics[f"{VAL}_best"]
    if row["targets"] == ["homo"] and "val/mae_best" in metrics:  # val/mae = mean MAE over the targets
        return metrics["val/mae_best"]
    return None


def val_column(rows: list[dict]) -> tuple[str, list[float | str | None]]:
    """Header and cells of the validation column: best-checkpoint values, else last-epoch ones, labelled."""
    best = [best_val(r) for r in rows]
    last = [r["metrics"].get(VAL) for r in rows]
    if all(b is not None or v is None for b, v in zip(best, last, strict=True)):
        return "val HOMO MAE (meV), best ckpt", best
    if all(b is None for b in best):
        return "val HOMO MAE (meV), last epoch", last
    cells = [b if b is not None else (None if v is None else f"{v:.4g} {LAST_EPOCH}")
             for b, v in zip(best, last, strict=True)]
    return "val HOMO MAE (meV), best ckpt", cells


def main() -> None:
    rows, out = sweep_from_command_line(__doc__.splitlines()[0], KEYS, Path(__file__).parent)
    order = [
        "standard kernel",
        "implicit",
        "implicit + bonds",
        "implicit + atoms",
        "implicit + bonds + atoms",
    ]
    rows.sort(key=lambda r: (order.index(arm(r)), r["seed"] or 0))
    val_header, val_cells = val_column(rows)
    table = markdown_table(
        ["arm", "group", "seed", "epochs", val_header, "test HOMO MAE (meV), best ckpt"],
        [
            [arm(r), r["group"], r["seed"], r["epochs"], val, r["metrics"].get("test/homo_mae_meV")]
            for r, val in zip(rows, val_cells, strict=True)
        ],
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table + "\n")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [f"{arm(r)}\n(seed {r['seed']})" for r in rows]
    ax.bar(range(len(rows)), [r["metrics"].get("test/homo_mae_meV", float("nan")) for r in rows])
    ax.set_xticks(range(len(rows)), labels, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("test HOMO MAE (meV)")
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)
    print(table)


if __name__ == "__main__":
    main()
