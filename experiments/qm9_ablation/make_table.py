"""Turn the QM9 HOMO ablation sweep into a Markdown table and a bar plot.

    python experiments/qm9_ablation/make_table.py <sweep_dir> [--out experiments/qm9_ablation]

Rows: standard (analytic) kernel, implicit, implicit + bond attrs, implicit + bond + atom attrs;
columns: validation and test HOMO MAE (meV) of each run (one row per run, so seeds show separately).
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
}


def arm(row: dict) -> str:
    if row["kernel"] == "analytic":
        return "standard kernel"
    return {
        (False, False): "implicit",
        (True, False): "implicit + bonds",
        (True, True): "implicit + bonds + atoms",
        (False, True): "implicit + atoms",
    }[(bool(row["edge_attrs"]), bool(row["node_attrs"]))]


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
    table = markdown_table(
        ["arm", "group", "seed", "epochs", "val HOMO MAE (meV)", "test HOMO MAE (meV)"],
        [
            [
                arm(r),
                r["group"],
                r["seed"],
                r["epochs"],
                r["metrics"].get("val/homo_mae_meV"),
                r["metrics"].get("test/homo_mae_meV"),
            ]
            for r in rows
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
