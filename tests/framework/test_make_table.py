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


def _qm9_sweep(sweep: Path, metrics: list[dict], targets: list[str] | None = None) -> None:
    arms = [("analytic", False, False), ("implicit", True, True)]
    for i, ((kernel, bonds, atoms), values) in enumerate(zip(arms, metrics, strict=True)):
        config = {"model": {"kernel": kernel, "edge_attrs": bonds, "node_attrs": atoms}, "seed": 0,
                  "group": {"name": "o3"}, "trainer": {"max_epochs": 3},
                  "dataset": {"targets": targets or ["homo"]}}
        _run_dir(sweep, str(i), config, values)


def _rows(table: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]


def test_qm9_ablation_table_and_plot(tmp_path):
    """Validation and test MAE both come from the best checkpoint, never the last epoch's validation MAE."""
    # val/mae_best: the best checkpoint's val/mae, the HOMO MAE itself when HOMO is the only target
    _qm9_sweep(tmp_path / "sweep", [
        {"test/homo_mae_meV": 338.8, "val/homo_mae_meV": 343.8, "val/mae": 343.8, "val/mae_best": 330.2},
        {"test/homo_mae_meV": 300.1, "val/homo_mae_meV": 305.1, "val/homo_mae_meV_best": 298.7,
         "val/mae_best": 298.7},
    ])
    done = _table("qm9_ablation/make_table.py", tmp_path / "sweep", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "out" / "results.md").read_text()
    header, _, *rows = _rows(table)
    assert header[-2:] == ["val HOMO MAE (meV), best ckpt", "test HOMO MAE (meV), best ckpt"]
    assert rows == [["standard kernel", "o3", "0", "3", "330.2", "338.8"],
                    ["implicit + bonds + atoms", "o3", "0", "3", "298.7", "300.1"]]
    assert "343.8" not in table and "305.1" not in table  # the last epoch's validation MAEs
    assert (tmp_path / "out" / "results.png").stat().st_size > 0


def test_qm9_ablation_table_labels_last_epoch_validation(tmp_path):
    """Without a best-checkpoint validation value (several targets, another monitor) the table says
    the validation MAE is the last epoch's."""
    last_only = [{"test/homo_mae_meV": 338.8, "val/homo_mae_meV": 343.8},
                 {"test/homo_mae_meV": 300.1, "val/homo_mae_meV": 305.1, "val/mae_best": 150.0}]
    _qm9_sweep(tmp_path / "sweep", last_only, targets=["homo", "lumo"])  # val/mae: mean over 2 targets
    done = _table("qm9_ablation/make_table.py", tmp_path / "sweep", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    header, _, *rows = _rows((tmp_path / "out" / "results.md").read_text())
    assert header[-2] == "val HOMO MAE (meV), last epoch"
    assert [row[-2:] for row in rows] == [["343.8", "338.8"], ["305.1", "300.1"]]

    mixed = [last_only[0], {"test/homo_mae_meV": 300.1, "val/homo_mae_meV": 305.1, "val/mae_best": 298.7}]
    _qm9_sweep(tmp_path / "mixed", mixed)
    done = _table("qm9_ablation/make_table.py", tmp_path / "mixed", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    header, _, *rows = _rows((tmp_path / "out" / "results.md").read_text())
    assert header[-2] == "val HOMO MAE (meV), best ckpt"
    assert [row[-2:] for row in rows] == [["343.8 (last epoch)", "338.8"], ["298.7", "300.1"]]


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
