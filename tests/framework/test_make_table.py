"""The experiment table scripts turn a sweep dir of finished runs into Markdown (and a plot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _run_dir(sweep: Path, name: str, config: dict, metrics: dict) -> None:
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.json").write_text(json.dumps(metrics))


def _table(script: str, sweep: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "experiments" / script), str(sweep), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_modelnet_group_table(tmp_path):
    for i, (group, kernel, acc) in enumerate([("so2", "implicit", 0.5), ("so2", "implicit", 0.7),
                                              ("o3", "analytic", 0.25)]):
        _run_dir(tmp_path / "sweep", str(i), {"group": {"name": group}, "model": {"kernel": kernel},
                                               "seed": i}, {"test/acc": acc})
    done = _table("modelnet40_groups/make_table.py", tmp_path / "sweep", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| so2 | SO(2) | 60.00 (n=2) | – |" in table and "| o3 | O(3) | – | 25.00 (n=1) |" in table


def test_qm9_ablation_table_and_plot(tmp_path):
    arms = [("analytic", False, False, 338.8), ("implicit", True, True, 300.1)]
    for i, (kernel, bonds, atoms, mae) in enumerate(arms):
        config = {"model": {"kernel": kernel, "edge_attrs": bonds, "node_attrs": atoms}, "seed": 0,
                  "group": {"name": "o3"}, "trainer": {"max_epochs": 3}}
        _run_dir(tmp_path / "sweep", str(i), config, {"test/homo_mae_meV": mae, "val/homo_mae_meV": mae + 5})
    done = _table("qm9_ablation/make_table.py", tmp_path / "sweep", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "out" / "results.md").read_text()
    assert "standard kernel" in table and "implicit + bonds + atoms" in table
    assert "338.8" in table and "300.1" in table and "305.1" in table
    assert (tmp_path / "out" / "results.png").stat().st_size > 0


@pytest.mark.parametrize("script", ["modelnet40_groups/make_table.py", "qm9_ablation/make_table.py"])
def test_empty_sweep_is_one_clear_error(tmp_path, script):
    done = _table(script, tmp_path, tmp_path / "out")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == f"error: no metrics.json under {tmp_path}"


def test_collect_runs_resolves_interpolations(tmp_path):
    """Hydra stores the config unresolved: ``model.graph: ${dataset.graph}`` must come back as the value."""
    from steerable.results import collect_runs

    config = {"dataset": {"graph": "bonds", "targets": ["homo"]},
              "model": {"graph": "${dataset.graph}", "targets": "${dataset.targets}"},
              "paths": {"output_dir": "${hydra:runtime.output_dir}"}}
    _run_dir(tmp_path, "run", config, {"test/mae": 1.0})
    row, = collect_runs(tmp_path, {"graph": "model.graph", "targets": "model.targets",
                                   "out": "paths.output_dir", "missing": "model.nothing"})
    assert (row["graph"], row["targets"], row["out"], row["missing"]) == ("bonds", ["homo"], None, None)
