"""Render the ModelNet-40 group table (paper Table 1 layout) from a multirun sweep.

    python experiments/modelnet40_groups/make_table.py <sweep_dir> [--out experiments/modelnet40_groups]

One row per group (paper name), one column per kernel (implicit / analytic): test accuracy (%),
averaged over the runs (seeds) found for that cell, with the run count.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from steerable.results import markdown_table, sweep_from_command_line

PAPER_NAMES = {"mirror": "M", "inv": "Inv", "so2_inv": "SO(2)⋊Inv", "cyl": "SO(2)⋊Inv", "so2": "SO(2)",
               "o2": "SO(2)⋊F", "cone": "SO(2)⋊M", "so3": "SO(3)", "o3": "O(3)"}
KEYS = {"group": "group.name", "kernel": "model.kernel", "seed": "seed", "epochs": "trainer.max_epochs"}


def main() -> None:
    rows, out = sweep_from_command_line(__doc__.splitlines()[0], KEYS, Path(__file__).parent)
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        acc = row["metrics"].get("test/acc")
        if acc is not None:
            cells[(row["group"], row["kernel"])].append(100.0 * acc)
    groups = [g for g in PAPER_NAMES if any(key[0] == g for key in cells)]

    def cell(group: str, kernel: str) -> str:
        values = cells.get((group, kernel))
        return f"{sum(values) / len(values):.2f} (n={len(values)})" if values else "–"

    table = markdown_table(["group", "paper name", "implicit acc (%)", "analytic acc (%)"],
                           [[g, PAPER_NAMES[g], cell(g, "implicit"), cell(g, "analytic")] for g in groups])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
