"""One real experiment recipe, trained for two steps through the command line under the device guard.

Part of the subset that CI also runs in a fresh Python 3.13 + numpy 2 environment (``make test-smoke``),
so a recipe that composes but fails on another numpy, Python or torch shows up there. The run uses
``callbacks=device_guard``: every step must create its tensors on the input's device and not wait for
the device (the Trainer's own host-side bookkeeping aside).
"""

from __future__ import annotations

import json
import math

from helpers.runs import run_cli


def test_nbody_experiment_trains_two_steps_and_tests_under_the_device_guard(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "steerable.train", "experiment=nbody", "dataset=nbody_tiny", "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
        "logger=csv", "callbacks=device_guard", "callbacks.progress_bar=null", f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test_metrics = {k: v for k, v in metrics.items() if k.startswith("test/")}
    assert test_metrics and all(math.isfinite(v) for v in test_metrics.values()), metrics
