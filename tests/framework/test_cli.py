"""The real command line in subprocesses: train (W&B offline + CSV), evaluate, resume; local multiruns and
two-rank DDP runs are whole trainings, marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.runs import run_cli

SMOKE = ["experiment=smoke", "dataset.num_samples=40", "trainer.max_epochs=2"]
FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # must never reach any file of the run


def ok(result) -> None:
    output = f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert result.returncode == 0, f"exit {result.returncode}\n{output}"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One real `python -m steerable.train` run with the default logger (W&B offline + CSV)."""
    root = tmp_path_factory.mktemp("cli")
    run_dir = root / "run"
    ok(run_cli("steerable.train", *SMOKE, f"hydra.run.dir={run_dir}", "tags=[cli,test]", cwd=root,
               env={"WANDB_API_KEY": FAKE_KEY}))
    return run_dir


def test_train_writes_metrics_checkpoints_csv_and_offline_wandb(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert {"val/mae", "test/mae", "test/gyration_mae_Ang"} <= set(metrics)
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((trained_run / "checkpoints").glob("epoch_*.ckpt"))) == 1
    csv_header = (trained_run / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/mae" in csv_header and "test/mae" in csv_header
    assert list((trained_run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (trained_run / ".hydra" / "config.yaml").is_file()


def test_no_secret_is_written_anywhere(trained_run):
    for path in trained_run.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), f"API key leaked into {path}"


def test_evaluate_reproduces_test_metrics_of_best_checkpoint(trained_run, tmp_path):
    best = next((trained_run / "checkpoints").glob("epoch_*.ckpt"))
    out = tmp_path / "eval.json"
    ok(run_cli("steerable.evaluate", f"ckpt_path={best}", "accelerator=cpu", f"output={out}", cwd=tmp_path))
    evaluated = json.loads(out.read_text())
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert evaluated["test/mae"] == pytest.approx(trained["test/mae"], rel=1e-5)


def test_resume_continues_from_last_checkpoint(trained_run):
    result = run_cli("steerable.train", *SMOKE[:-1], "trainer.max_epochs=3", f"hydra.run.dir={trained_run}",
                     "logger=csv", cwd=trained_run.parent)
    ok(result)
    assert "Restoring states from the checkpoint path at" in result.stdout + result.stderr
    last = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 3 * 4


@pytest.mark.slow
def test_local_multirun_over_seeds(tmp_path):
    """Jobs of a local sweep run one after another in one process: each gets its own W&B run.

    No ``hydra.sweep.dir``: the default one (under ``$STEERABLE_ROOT/logs``) must resolve before
    Hydra's runtime config exists.
    """
    ok(run_cli("steerable.train", "-m", "seed=0,1", *SMOKE, "trainer.max_epochs=1", cwd=tmp_path))
    sweep, = (tmp_path / "logs").glob("*/multiruns/*")
    runs = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    assert runs[0]["test/mae"] != runs[1]["test/mae"]
    wandb_runs = [list((sweep / str(i) / "wandb").glob("offline-run-*")) for i in (0, 1)]
    assert [len(found) for found in wandb_runs] == [1, 1], wandb_runs
    assert wandb_runs[0][0].name.split("-")[-1] != wandb_runs[1][0].name.split("-")[-1]  # run ids


DDP_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["regression", "trajectory"])
def test_ddp_metrics_equal_a_single_process_evaluation(tmp_path, task):
    """Two CPU ranks (gloo): validation/test see every sample once (no padding by repetition) and
    the epoch means are exact over ranks, so the test metrics equal ``evaluate`` in one process.

    42 samples → 5 test samples (odd: a padding sampler repeats one); trajectory systems of 2–30
    particles weight batches by particle counts that differ between the ranks.
    """
    extra = {"regression": ["dataset.num_samples=42"],
             "trajectory": ["dataset.num_samples=40", "task=trajectory", "dataset.kind=trajectory",
                            "model.out_dim=3", "model.readout=node", "+model.use_velocity=true",
                            "+model.predict_positions=true", "dataset.min_points=2", "dataset.max_points=30"]}
    run_dir = tmp_path / "run"
    ok(run_cli("steerable.train", *SMOKE, *DDP_CPU, *extra[task], "logger=csv", f"hydra.run.dir={run_dir}",
               cwd=tmp_path))
    trained = json.loads((run_dir / "metrics.json").read_text())
    best = next((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    out = tmp_path / "eval.json"
    ok(run_cli("steerable.evaluate", f"ckpt_path={best}", "accelerator=cpu", f"output={out}", cwd=tmp_path))
    evaluated = json.loads(out.read_text())
    metric = "test/mae" if task == "regression" else "test/mse"
    assert trained[metric] == pytest.approx(evaluated[metric], rel=1e-5)
    assert not list(run_dir.glob(".metrics.json.tmp*"))


STEERABLE_CLASSIFIER = [
    "experiment=smoke", "task=classification", "dataset.kind=classification", "dataset.num_samples=40",
    "model=modelnet", "model.num_classes=3", "group=so3", "model.conv.channels=2", "model.conv.n_layers=2",
    "model.stages=[{channels: 2, ratio: 1.0, k: 4}, {channels: 2, ratio: 0.5, k: 4}]",
    "trainer.max_epochs=1", "trainer.precision=64-true", "logger=none",
]


@pytest.mark.slow
def test_ddp_batch_norms_use_the_statistics_of_all_ranks(tmp_path):
    """``trainer=ddp`` syncs the equivariant batch norms (``sync_batchnorm: true``): two ranks with batches
    of 8 train exactly as one process with batches of 16 (the same 16 samples per step), the running
    statistics of every FieldBatchNorm (φ's over edges, the blocks' over points) included."""
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ok(run_cli("steerable.train", *STEERABLE_CLASSIFIER, *DDP_CPU, "dataset.batch_size=8",
               f"hydra.run.dir={ddp}", cwd=tmp_path, timeout=500))
    ok(run_cli("steerable.train", *STEERABLE_CLASSIFIER, "dataset.batch_size=16", f"hydra.run.dir={single}",
               cwd=tmp_path, timeout=500))
    states = [torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
              for run in (ddp, single)]
    assert len([name for name in states[1] if name.endswith("running_var")]) >= 4
    assert states[0].keys() == states[1].keys()
    for name, value in states[1].items():  # atol: conv biases a batch norm follows stay ~1e-12
        torch.testing.assert_close(states[0][name], value, rtol=1e-8, atol=1e-10, msg=name)


FAKE_SUBMITIT = '''
import os, signal, sys
import pytorch_lightning as pl


class FakeSubmitit(pl.Callback):
    """submitit's USR2 handler in every rank (rank 0 requeues and exits, the others return); the
    signal reaches rank 1 alone, during optimiser step `step`."""

    def __init__(self, step, marks):
        self.step, self.marks = step, marks

    def setup(self, trainer, pl_module, stage):  # before on_fit_start, as submitit's comes first
        rank = trainer.global_rank

        def handler(signum, frame):
            open(os.path.join(self.marks, f"handler-rank{rank}"), "w").close()
            if rank == 0:
                sys.exit(-1)

        signal.signal(signal.SIGUSR2, handler)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == 1 and trainer.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGUSR2)
'''


@pytest.mark.slow
def test_ddp_requeue_signal_on_one_rank_saves_stops_and_resumes_like_an_uninterrupted_run(tmp_path):
    """Under DDP the ranks agree to stop at the same batch: saving is collective, so a rank acting
    alone (the signal reached it first) would hang the run. The requeued job resumes mid-epoch: every
    rank skips the batches of its share it had trained on, and the run ends with the weights and
    metrics of an uninterrupted one."""
    (tmp_path / "fake_submitit.py").write_text(FAKE_SUBMITIT)
    run_dir, marks, reference_dir = tmp_path / "run", tmp_path / "marks", tmp_path / "reference"
    marks.mkdir()
    common = [*SMOKE, *DDP_CPU, "dataset.num_samples=80", "trainer.max_epochs=3", "logger=csv"]
    fake = ["+callbacks.fake._target_=fake_submitit.FakeSubmitit", "+callbacks.fake.step=6",
            f"+callbacks.fake.marks={marks}", "callbacks.sigterm_checkpoint.ddp_check_every=3"]
    result = run_cli("steerable.train", *common, f"hydra.run.dir={run_dir}", *fake, cwd=tmp_path, timeout=240,
                     env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0, "the run should have stopped for the requeue"
    assert sorted(p.name for p in marks.iterdir()) == ["handler-rank0", "handler-rank1"]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert 6 <= saved["global_step"] < 6 + 3  # at the first batch the ranks check after the signal
    assert saved["global_step"] % 4  # 64 training samples / 2 ranks / batch 8: mid-epoch
    assert not (run_dir / "metrics.json").exists()

    ok(run_cli("steerable.train", *common, f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=240))
    ok(run_cli("steerable.train", *common, f"hydra.run.dir={reference_dir}", cwd=tmp_path, timeout=240))
    resumed, reference = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, reference_dir))
    keys = [k for k in reference if k.startswith(("val/", "test/"))]
    assert keys and {k: resumed[k] for k in keys} == pytest.approx({k: reference[k] for k in keys}, rel=1e-6)
    weights = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for d in (run_dir, reference_dir)]
    for name, value in weights[1].items():
        torch.testing.assert_close(weights[0][name], value, rtol=1e-6, atol=1e-8, msg=name)


@pytest.mark.slow  # fast: the same error in process and in a rank's subprocess (test_config_errors.py)
def test_bad_group_exits_with_one_line(tmp_path):
    result = run_cli("steerable.train", "group=so4", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("error: unknown group 'so4'") and "so3" in result.stderr


@pytest.mark.slow
def test_optuna_search_returns_the_monitored_metric(tmp_path):
    sweep = tmp_path / "optuna"
    ok(run_cli("steerable.train", "hparams_search=optuna", *SMOKE, "trainer.max_epochs=1", "logger=csv",
               "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=1",
               f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=400))
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_value" in best and "task.optimizer.lr" in best
    assert {json.loads((sweep / str(i) / "metrics.json").read_text())["val/mae"] for i in (0, 1)}


@pytest.mark.slow
def test_predict_prints_qm9_properties_with_units(tmp_path):
    qm9 = pytest.importorskip("steerable.data.qm9")
    if not hasattr(qm9, "molecules_to_batch"):
        pytest.skip("steerable.data.qm9.molecules_to_batch is not there yet")
    run_dir = tmp_path / "run"
    ok(run_cli("steerable.train", "experiment=qm9_homo", "dataset=qm9_tiny", "trainer.max_epochs=1",
               "logger=csv", f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=400))
    xyz = tmp_path / "water.xyz"
    xyz.write_text("3\nwater\nO 0.000000 0.000000 0.117300\nH 0.000000 0.757200 -0.469200\n"
                   "H 0.000000 -0.757200 -0.469200\n")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    result = run_cli("steerable.predict", f"ckpt_path={ckpt}", f"input={xyz}", cwd=tmp_path)
    ok(result)
    assert "homo_meV=" in result.stdout
    bad = tmp_path / "bad.xyz"
    bad.write_text("1\nunknown element\nXx 0 0 0\n")
    result = run_cli("steerable.predict", f"ckpt_path={ckpt}", f"input={bad}", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "bad.xyz:3" in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
