"""Kill a run mid-epoch, resume it, and get exactly the metrics of the uninterrupted run.

Fast: in-process, SIGTERM sent to ourselves at a chosen step (the run saves and exits 143), then
``resume=auto``. Slow: a real ``python -m steerable.train`` subprocess killed with SIGTERM or
SIGKILL once its periodic checkpoint passes a step, resumed in the same run dir.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers.runs import FAST, SEARCHPATH, compose_run

from steerable.callbacks import SIGTERM_EXIT_CODE, EpochSeededSampler
from steerable.train import train

# 32 training clouds / batch 8 = 4 steps per epoch, 3 epochs; step checkpoints every 2 steps
SMOKE = ["experiment=smoke", *FAST, "dataset.num_samples=40", "trainer.max_epochs=3",
         "callbacks.step_checkpoint.every_n_train_steps=2"]
# the same with the default CSV logger (resumable) instead of no logger
SMOKE_CSV = [("logger=csv" if o == "logger=none" else o) for o in SMOKE]


class SigtermAt(pl.Callback):
    """Test helper: send SIGTERM (or ``signame``) to this process during optimiser step ``step`` (from 1).

    The signal arrives while the batch runs, as a real one would; the run saves after that step.
    """

    def __init__(self, step: int, signame: str = "SIGTERM") -> None:
        self.step, self.signum = step, signal.Signals[signame]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step + 1 == self.step:
            handler = signal.getsignal(self.signum)
            assert handler not in (signal.SIG_DFL, None), f"no {self.signum.name} handler"
            os.kill(os.getpid(), self.signum)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def assert_same_run(resumed: dict[str, float], reference: dict[str, float], resumed_dir: Path,
                    reference_dir: Path) -> None:
    """Same val/test metrics (CPU float tolerance) and the same final weights."""
    keys = {k for k in reference if k.startswith(("val/", "test/"))}
    assert keys and keys <= set(resumed)
    assert {k: resumed[k] for k in keys} == pytest.approx({k: reference[k] for k in keys}, rel=1e-6, abs=1e-9)
    a, b = final_weights(resumed_dir), final_weights(reference_dir)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-8, msg=name)


def test_sampler_order_is_a_function_of_seed_and_epoch():
    sampler = EpochSeededSampler(10, batch_size=3, seed=1)
    first = list(sampler)
    assert sorted(first) == list(range(10)) and list(sampler) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    sampler.skip_next(epoch=1, batches=2)
    assert list(sampler) == second[6:]
    assert list(sampler) == second  # the skip applies once
    sampler.skip_next(epoch=0, batches=2)
    assert list(sampler) == second  # ... and only to its own epoch
    assert list(EpochSeededSampler(10, 3, seed=2)) != first


def test_sampler_shards_the_same_permutation_over_ranks():
    """Under DDP each rank takes every other position of the epoch's permutation (padded by repeating
    its start, like Lightning's sampler), skips its own batches on resume, and stays a
    ``DistributedSampler`` so Lightning does not replace it."""
    whole = EpochSeededSampler(11, batch_size=2, seed=1)
    whole.set_epoch(3)
    order = list(whole)
    ranks = [EpochSeededSampler(11, batch_size=2, seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(3)
        assert isinstance(sampler, torch.utils.data.DistributedSampler) and len(sampler) == 6
    shares = [list(sampler) for sampler in ranks]
    padded = order + order[:1]
    assert shares == [padded[0::2], padded[1::2]]
    ranks[1].skip_next(epoch=3, batches=2)
    assert list(ranks[1]) == shares[1][4:]
    with pytest.raises(ValueError, match="rank 2"):
        EpochSeededSampler(11, 2, 1, num_replicas=2, rank=2)


def csv_history(run_dir: Path) -> list[tuple[str, str, str]]:
    """``(epoch, step, val/mae)`` rows of the run's CSV log."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return [(r["epoch"], r["step"], r["val/mae"]) for r in csv.DictReader(handle) if r.get("val/mae")]


def test_sigterm_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    reference = train(compose_run(SMOKE_CSV, reference_dir))

    kill = [f"+callbacks.kill._target_={__name__}.SigtermAt", "+callbacks.kill.step=6"]
    with pytest.raises(SystemExit) as exit_info:  # step 6 = batch 2 of epoch 1
        train(compose_run([*SMOKE_CSV, *kill], run_dir))
    assert exit_info.value.code == SIGTERM_EXIT_CODE
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["global_step"], saved["epoch"]) == (6, 1)
    assert not (run_dir / "metrics.json").exists()

    resumed = train(compose_run(SMOKE_CSV, run_dir))  # resume=auto finds checkpoints/last.ckpt
    assert_same_run(resumed, reference, run_dir, reference_dir)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    # the learning curves of the whole run survive the resume (epoch 0 was logged before the kill)
    history = csv_history(run_dir)
    assert [epoch for epoch, _, _ in history] == ["0", "1", "2"]
    assert history == csv_history(reference_dir)


def test_requeue_signal_under_submitit_saves_at_batch_end_then_hands_over(tmp_path):
    """submitit's USR2 handler requeues and exits at once; the callback saves last.ckpt first."""
    calls = []

    def submitit_like(signum, frame):  # what submitit installs: requeue, then sys.exit
        calls.append(signum)
        sys.exit(-1)

    previous = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        kill = [f"+callbacks.kill._target_={__name__}.SigtermAt", "+callbacks.kill.step=6",
                "+callbacks.kill.signame=SIGUSR2"]
        with pytest.raises(SystemExit):
            train(compose_run([*SMOKE, *kill], tmp_path))
        assert calls == [signal.SIGUSR2]
        saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
        assert (saved["global_step"], saved["epoch"]) == (6, 1)  # the batch in flight completed
        with pytest.raises(SystemExit):  # outside fit the signal goes straight to submitit
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(1)
        assert calls == [signal.SIGUSR2, signal.SIGUSR2]
        resumed = train(compose_run(SMOKE, tmp_path))  # the requeued job
        assert "test/mae" in resumed
        assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_rerunning_a_finished_run_keeps_its_metrics(tmp_path):
    """A requeued or repeated job in a finished run dir only re-tests: metrics.json keeps fit's entries."""
    first = train(compose_run(SMOKE, tmp_path))
    assert first["val/mae_best"] <= first["val/mae"] + 1e-12
    again = train(compose_run(SMOKE, tmp_path))  # resume=auto: nothing left to fit
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert {"train/loss", "val/mae", "val/mae_best", "test/mae"} <= set(written) and written == again
    assert written["val/mae_best"] == pytest.approx(first["val/mae_best"])
    assert written["test/mae"] == pytest.approx(first["test/mae"], rel=1e-6)


def test_resume_without_reproducible_order_would_differ(tmp_path):
    """The check above has teeth: without the callback the resumed run does not match."""
    off = ["callbacks.train_order=null"]
    reference = train(compose_run([*SMOKE, *off], tmp_path / "reference"))
    kill = [f"+callbacks.kill._target_={__name__}.SigtermAt", "+callbacks.kill.step=6"]
    with pytest.raises(SystemExit):
        train(compose_run([*SMOKE, *off, *kill], tmp_path / "run"))
    resumed = train(compose_run([*SMOKE, *off], tmp_path / "run"))
    assert resumed["val/mae"] != pytest.approx(reference["val/mae"], rel=1e-6)


# --- real subprocesses --------------------------------------------------------------------------

# 320 training clouds / batch 8 = 40 steps per epoch; checkpoint every 5 steps; kill past step 45
CLI = ["experiment=smoke", "dataset.num_samples=400", "trainer.max_epochs=3", "logger=csv",
       "callbacks.progress_bar=null", "callbacks.step_checkpoint.every_n_train_steps=5"]
KILL_AFTER_STEP = 45


def cli(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "steerable.train", SEARCHPATH, *CLI, f"hydra.run.dir={run_dir}", *extra]


def cli_env(root: Path) -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "offline", "STEERABLE_ROOT": str(root)}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def checkpoint_step(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["global_step"])
    except (FileNotFoundError, RuntimeError, EOFError):  # not there yet
        return -1


def kill_after(run_dir: Path, sig: signal.Signals, root: Path, timeout: float = 400) -> int:
    """Start a training subprocess, send ``sig`` once last.ckpt is past KILL_AFTER_STEP; its exit code."""
    log = (root / f"{run_dir.name}.log").open("w")
    proc = subprocess.Popen(cli(run_dir), cwd=root, env=cli_env(root), stdout=log, stderr=subprocess.STDOUT)
    last, deadline = run_dir / "checkpoints" / "last.ckpt", time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if checkpoint_step(last) >= KILL_AFTER_STEP:
                proc.send_signal(sig)
                break
            time.sleep(0.05)
        return proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def run_to_end(run_dir: Path, root: Path, *extra: str) -> dict[str, float]:
    result = subprocess.run(cli(run_dir, *extra), cwd=root, env=cli_env(root), capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    root = tmp_path_factory.mktemp("resume_cli")
    return root / "reference", run_to_end(root / "reference", root)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "resume"), [
    (signal.SIGTERM, SIGTERM_EXIT_CODE, "resume=auto"),
    (signal.SIGKILL, -signal.SIGKILL, "ckpt_path=last"),
])
def test_killed_subprocess_resumes_to_the_same_metrics(uninterrupted, tmp_path, sig, code, resume):
    reference_dir, reference = uninterrupted
    run_dir = tmp_path / "run"
    assert kill_after(run_dir, sig, tmp_path) == code, (tmp_path / "run.log").read_text()[-3000:]
    step = checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    assert KILL_AFTER_STEP <= step < 120 and not (run_dir / "metrics.json").exists()
    resumed = run_to_end(run_dir, tmp_path, resume)
    assert_same_run(resumed, reference, run_dir, reference_dir)


def test_resumable_csv_logger_keeps_history_and_drops_lost_steps(tmp_path):
    from steerable.csv_logger import ResumableCSVLogger

    first = ResumableCSVLogger(tmp_path, name="csv", version="")
    for step in range(6):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.save()
    resumed = ResumableCSVLogger(tmp_path, name="csv", version="")  # killed after step 5, checkpoint at 3
    resumed.log_metrics({"train/loss": 30.0, "val/mae": 1.0}, step=4)
    resumed.save()
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        rows = [(r["step"], r["train/loss"], r["val/mae"]) for r in csv.DictReader(handle)]
    kept = [(str(step), f"{step}.0", "") for step in range(4)]
    assert rows == [*kept, ("4", "30.0", "1.0")]


def test_train_loader_is_replaced_once_per_trainer():
    from types import SimpleNamespace

    from steerable.callbacks import ReproducibleTrainOrder, ResumableLoader
    from steerable.data.synthetic import SyntheticPointCloudDataModule

    datamodule = SyntheticPointCloudDataModule(num_samples=20, batch_size=4)
    datamodule.setup()
    first, second = ReproducibleTrainOrder(seed=1), ReproducibleTrainOrder(seed=2)
    for callback in (first, second):
        callback.setup(SimpleNamespace(datamodule=datamodule, world_size=1, global_rank=0), None, "fit")
    loader = datamodule.train_dataloader()
    assert isinstance(loader, ResumableLoader) and loader.sampler.seed == 2
    assert loader.progress.__self__ is second and len(list(loader)) == 4
    assert not isinstance(datamodule.val_dataloader(), ResumableLoader)


class SigtermInValidation(pl.Callback):
    """Test helper: SIGTERM during the validation of epoch 1 (outside the save-at-batch-end window)."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.current_epoch == 1 and not trainer.sanity_checking and batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_validation_still_exits_143(tmp_path):
    """Lightning stops on its own there, with a bare ``SIGTERMException`` (exit status 0): a killed
    job must not look successful to SLURM or to the rest of a local sweep."""
    kill = [f"+callbacks.kill._target_={__name__}.SigtermInValidation"]
    with pytest.raises(SystemExit) as exit_info:
        train(compose_run([*SMOKE, *kill], tmp_path))
    assert exit_info.value.code == SIGTERM_EXIT_CODE
    assert not (tmp_path / "metrics.json").exists()


EARLY_STOP = ["callbacks=early_stopping", "callbacks.early_stopping.patience=1",
              "callbacks.early_stopping.min_delta=1e6", "trainer.max_epochs=30"]  # stops after epoch 1


def test_rerunning_an_early_stopped_run_only_tests(tmp_path):
    first = train(compose_run([*SMOKE_CSV, *EARLY_STOP], tmp_path))
    last = tmp_path / "checkpoints" / "last.ckpt"
    stopped = torch.load(last, weights_only=True)["global_step"]
    assert stopped == 2 * 4
    again = train(compose_run([*SMOKE_CSV, *EARLY_STOP], tmp_path))  # resume=auto, e.g. a requeue
    assert torch.load(last, weights_only=True)["global_step"] == stopped
    assert again["test/mae"] == pytest.approx(first["test/mae"], rel=1e-6)
    assert again["val/mae_best"] == pytest.approx(first["val/mae_best"])


def test_test_only_run_keeps_the_learning_curves_and_tests_the_best_checkpoint(tmp_path):
    first = train(compose_run([*SMOKE_CSV, "seed=1"], tmp_path))
    history = csv_history(tmp_path)
    again = train(compose_run([*SMOKE_CSV, "seed=1", "train=false"], tmp_path))
    assert csv_history(tmp_path) == history  # the test-only run did not trim the curves
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        assert sum(1 for row in csv.DictReader(handle) if row.get("test/mae")) == 1  # replaced, not added
    assert again["test/mae"] == pytest.approx(first["test/mae"], rel=1e-6)


def test_resume_accepts_loader_changes_and_names_what_differs(tmp_path):
    from steerable.config_checks import ConfigError
    from steerable.train import resume_path

    train(compose_run(SMOKE, tmp_path))
    assert resume_path(compose_run([*SMOKE, "dataset.num_workers=1"], tmp_path)).endswith("last.ckpt")
    with pytest.raises(ConfigError, match=r"different dataset\.num_samples, seed;"):
        resume_path(compose_run([*SMOKE, "dataset.num_samples=48", "seed=3"], tmp_path))
