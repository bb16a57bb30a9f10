"""Read Lightning's CSV log (``metrics.csv``) into per-metric series; standard library only, so the GPU
check can read a run's curve on a machine without the plotting stack."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path


def read_metrics(path: Path) -> dict[str, list[tuple[float, float]]]:
    """``metric → [(x, value), …]`` from a Lightning CSV log (empty cells skipped).

    ``x`` is the number of epochs trained when the value was logged (train/val at the end of epoch
    ``e`` → ``e + 1``; test after fit → the epoch count); rows without an epoch (the learning-rate
    monitor) use the global step instead.
    """
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            epoch = row.get("epoch") or ""
            for key, value in row.items():
                if key in ("epoch", "step") or value in ("", None):
                    continue
                if epoch:
                    x = float(epoch) + (0 if key.startswith("test/") else 1)
                else:
                    x = float(row.get("step") or 0)
                series[key].append((x, float(value)))
    return dict(series)
