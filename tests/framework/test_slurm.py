"""A 2-job multirun through submitit on a real single-node SLURM cluster started by the fixture."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers.runs import run_cli
from helpers.slurm import LocalSlurm, SlurmUnavailable

pytestmark = pytest.mark.slow


@pytest.fixture
def slurm(tmp_path):
    cluster = LocalSlurm(tmp_path / "slurm")
    try:
        cluster.start()
    except SlurmUnavailable as err:
        cluster.stop()
        print(f"SLURM unavailable: {err}")
        pytest.skip(f"slurmctld could not be started: {str(err).splitlines()[0]}")
    yield cluster
    cluster.stop()


def test_multirun_on_slurm_completes_both_jobs(slurm, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "launcher=slurm", "seed=0,1", "experiment=smoke", "dataset.num_samples=40",
            "trainer.max_epochs=1", "logger=csv", f"hydra.sweep.dir={sweep}",
            "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=10"]
    try:
        result = run_cli("steerable.train", *args, cwd=tmp_path, timeout=420, env=slurm.env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"SLURM multirun did not finish in 420 s{slurm.log_tail()}")
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}{slurm.log_tail()}"
    for job in (0, 1):
        metrics = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert "test/mae" in metrics
    assert list((sweep / ".submitit").glob("*/*_log.out")), "submitit wrote no SLURM job logs"
