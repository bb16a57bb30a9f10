"""Equal-budget peer comparisons: ``trainer.max_time``, the throughput callback and the table maker on
real (tiny) runs of ``-m model=nbody,egnn``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers.runs import DATA_DIR, FAST, REPO, run_cli

from steerable.train import train

TABLE = REPO / "experiments" / "peers" / "make_table.py"


@pytest.mark.slow
def test_throughput_counts_every_training_sample(compose_cfg):
    cfg = compose_cfg(["experiment=nbody", "dataset=nbody_tiny", "model=egnn", *FAST, "callbacks=timed",
                       "callbacks.progress_bar=null", "trainer.max_epochs=3", "model.hidden=8"])
    metrics = train(cfg)
    assert metrics["train/epochs_done"] == 3
    samples = metrics["train/samples_per_s"] * metrics["train/loop_s"]
    assert samples == pytest.approx(3 * cfg.dataset.n_train, rel=1e-4)  # 3 epochs × 64 systems


@pytest.mark.slow
def test_equal_wall_clock_sweep_and_table(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli("steerable.train", "-m", "experiment=nbody", "dataset=nbody_tiny", "model=nbody,egnn",
                   "trainer.max_epochs=100000", "trainer.max_time=00:00:00:04", "callbacks=timed", "seed=1",
                   "logger=csv", "callbacks.progress_bar=null", f"hydra.sweep.dir={sweep}",
                   f"paths.data_dir={DATA_DIR}", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(sweep.glob("*/metrics.json"))
    assert len(runs) == 2
    for metrics_file in runs:
        metrics = json.loads(metrics_file.read_text())
        assert 1 <= metrics["train/epochs_done"] < 100000  # stopped by max_time, not max_epochs
        assert metrics["train/loop_s"] < 8
    out = tmp_path / "table.md"
    table = subprocess.run([sys.executable, str(TABLE), str(sweep), "--out", str(out)], capture_output=True,
                           text=True, cwd=REPO, timeout=120)
    assert table.returncode == 0, table.stderr
    rows = {cells[0]: cells for cells in _rows(out.read_text())}
    assert set(rows) >= {"NBodyModel (implicit) 16 feat", "EGNN 4×64"}
    assert rows["NBodyModel (implicit) 16 feat"][1] == "`dataset=nbody_tiny` `seed=1`"
    egnn = json.loads((sweep / "1" / "metrics.json").read_text())
    assert rows["EGNN 4×64"][2] == "00:00:00:04 wall, ≤ 100000 epochs"
    assert rows["EGNN 4×64"][1] == "`dataset=nbody_tiny` `seed=1`"  # not the recipe's (model, budget, logs)
    assert rows["EGNN 4×64"][-1] == "sweep/1"
    assert rows["EGNN 4×64"][8] == "4e-03 BudgetCosineLR"  # experiment=nbody's optimiser
    assert rows["EGNN 4×64"][9] == "50"  # experiment=nbody sets it over the dataset's
    assert float(rows["EGNN 4×64"][7]) == pytest.approx(egnn["test/mse"], rel=1e-3)
    # the table prints 4 significant digits: one decimal below 1,000 samples/s, whole numbers above
    assert float(rows["EGNN 4×64"][5]) == pytest.approx(egnn["train/samples_per_s"], rel=5e-4, abs=0.06)


def test_table_maker_refuses_an_empty_dir(tmp_path):
    done = subprocess.run([sys.executable, str(TABLE), str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode != 0 and "no metrics.json" in done.stderr


def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| model")]
