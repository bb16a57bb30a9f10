"""``python -m steerable.plot``: learning curves from CSV logs, learned-kernel slices and rotation response.

One tiny real run (synthetic clouds, the ModelNet network with one implicit conv stage, 2 epochs,
CSV logger) is trained in-process and shared by the tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
from helpers.runs import compose_run

from steerable.plot import main
from steerable.run_plots import default_checkpoint, plot_kernel, plot_run
from steerable.train import train

RUN = ["experiment=smoke", "dataset.kind=classification", "task=classification", "model=modelnet",
       "model.num_classes=3", "group=so3", "model.stages=[{channels:2,ratio:1.0,k:4}]",
       "model.conv.channels=2", "model.head_hidden=8", "logger=csv", "callbacks.progress_bar=null",
       "trainer.max_epochs=2", "trainer.enable_model_summary=false"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("plot") / "run"
    train(compose_run(RUN, run))
    return run


def assert_png(path: Path, min_pixels: int = 200) -> None:
    """A real, non-empty PNG with a picture in it (not a blank canvas)."""
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.shape[0] >= min_pixels and image.shape[1] >= min_pixels
    assert image[..., :3].std() > 0.05


def test_plot_run_writes_curves_and_kernel_views(run_dir):
    written = plot_run(run_dir)
    assert [p.name for p in written] == ["learning_curves.png", "kernel_slices.png", "kernel_rotation.png"]
    assert all(p.parent == run_dir / "plots" for p in written)
    for path in written:
        assert_png(path)
    assert not [p for p in (run_dir / "plots").iterdir() if p.name.startswith(".")]  # no temp files


def test_kernel_is_steerable_under_a_random_rotation(run_dir, tmp_path):
    for seed in (0, 1):
        pngs, error = plot_kernel(default_checkpoint(run_dir), tmp_path, layer="blocks.0.conv", seed=seed)
        assert error < 1e-5
        assert_png(pngs[1])


@pytest.mark.slow  # a subprocess; main()'s option errors are tested in process below
def test_cli_with_explicit_checkpoint(run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    command = [sys.executable, "-m", "steerable.plot", f"run_dir={run_dir}", f"ckpt_path={ckpt}", "layer=0",
               "entries=2", "seed=3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kernel steerability error" in result.stdout
    for name in ("learning_curves.png", "kernel_slices.png", "kernel_rotation.png"):
        assert str(run_dir / "plots" / name) in result.stdout
        assert_png(run_dir / "plots" / name)


@pytest.mark.parametrize(("argv", "message"), [
    ([], "run_dir=… is required"),
    (["run_dir=.", "layr=1"], "unknown option(s) ['layr']"),
    (["run_dir=/nonexistent/run"], "run_dir /nonexistent/run does not exist"),
])
def test_cli_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_bad_layer_and_missing_logs(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([f"run_dir={run_dir}", "layer=5"])
    assert "layer=5 out of range: the model has 1 implicit convs" in capsys.readouterr().err
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(SystemExit):
        main([f"run_dir={tmp_path / 'empty_run'}"])
    assert "no metrics.csv under" in capsys.readouterr().err


def test_sweep_dir_is_refused_and_kernel_plots_need_no_csv(run_dir, tmp_path, capsys):
    import shutil

    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        shutil.copytree(run_dir / "csv", sweep / job / "csv")
    with pytest.raises(SystemExit):
        main([f"run_dir={sweep}"])
    assert f"{sweep} is a sweep of 2 runs, not one run: pass one of them" in capsys.readouterr().err
    no_csv = tmp_path / "no_csv"  # trained with logger=none: only checkpoints
    shutil.copytree(run_dir / "checkpoints", no_csv / "checkpoints")
    written = plot_run(no_csv)
    assert [p.name for p in written] == ["kernel_slices.png", "kernel_rotation.png"]
    assert "no learning curves" in capsys.readouterr().out


def test_plots_callback_sends_images_to_offline_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = tmp_path / "run"
    swap = {"logger=csv": "logger=wandb", "trainer.max_epochs=2": "trainer.max_epochs=1"}
    overrides = [swap.get(o, o) for o in RUN] + ["callbacks.plots.enabled=true"]
    train(compose_run(overrides, run))
    for name in ("learning_curves.png", "kernel_slices.png", "kernel_rotation.png"):
        assert_png(run / "plots" / name)
    media = list(run.glob("wandb/offline-run-*/files/media/images/plots_*.png"))
    assert len(media) == 3, sorted(p.name for p in run.rglob("*.png"))
