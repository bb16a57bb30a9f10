"""Collect finished runs (``metrics.json`` + ``.hydra/config.yaml``) into rows for result tables.

Used by the scripts under ``experiments/`` that turn a multirun sweep into a Markdown table/plot.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def _lookup(config: DictConfig, written: Any, dotted: str) -> Any:
    """The value at ``dotted``, interpolations resolved (None where missing or unresolvable here).

    ``written`` is ``config`` as stored, unresolved (a plain container). ``${hydra:…}`` values are
    None: they belong to the run's own Hydra runtime, and resolving them in this process would read
    whatever Hydra config this process holds.
    """
    for key in dotted.split("."):
        if not isinstance(written, dict) or key not in written:
            return None
        written = written[key]
    if "${hydra:" in str(written):
        return None
    value = OmegaConf.select(config, dotted, default=None, throw_on_resolution_failure=False)
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def collect_runs(root: str | Path, keys: dict[str, str]) -> list[dict[str, Any]]:
    """One row per run dir under ``root`` that has a ``metrics.json``.

    Args:
        root: a run dir, a multirun sweep dir, or any folder above them.
        keys: column name → dotted config key (e.g. ``{"group": "group.name"}``).

    Returns:
        Rows ``{column: value, ..., "metrics": {...}, "run_dir": str}`` sorted by run dir.
    """
    rows = []
    for metrics_file in sorted(Path(root).rglob("metrics.json")):
        run_dir = metrics_file.parent
        config_file = run_dir / ".hydra" / "config.yaml"
        config = OmegaConf.load(config_file) if config_file.is_file() else OmegaConf.create()
        written = OmegaConf.to_container(config, resolve=False)
        row = {column: _lookup(config, written, dotted) for column, dotted in keys.items()}
        row["metrics"] = json.loads(metrics_file.read_text())
        row["run_dir"] = str(run_dir)
        rows.append(row)
    return rows


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub Markdown table; floats printed with 4 significant digits."""
    def fmt(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else ("–" if value is None else str(value))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def sweep_from_command_line(
    description: str, keys: dict[str, str], default_out: Path, argv: list[str] | None = None
) -> tuple[list[dict[str, Any]], Path]:
    """The ``make_table.py`` command line: ``SWEEP_DIR [--out DIR]`` → (:func:`collect_runs` rows, out dir).

    Exits with one ``error:`` line when the sweep dir holds no finished run.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("sweep_dir")
    parser.add_argument("--out", default=str(default_out))
    args = parser.parse_args(argv)
    rows = collect_runs(args.sweep_dir, keys)
    if not rows:
        raise SystemExit(f"error: no metrics.json under {args.sweep_dir}")
    return rows, Path(args.out)
