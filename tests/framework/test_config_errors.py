"""Bad command lines end in one `error: …` line and exit status 2 (run in-process, as the CLI does)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers.runs import CONF_DIR, SEARCHPATH

from steerable.train import _hydra_main, run_cli

QM9 = "experiment=qm9_homo" if (CONF_DIR / "experiment" / "qm9_homo.yaml").exists() else "model=baseline"


@pytest.fixture
def cli(monkeypatch, tmp_path, capsys):
    """``cli(*overrides)`` → stderr of a failing ``python -m steerable.train`` run."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setenv("STEERABLE_ROOT", str(tmp_path))

    def _run(*overrides: str) -> str:
        experiment = [] if any(o.startswith("experiment=") for o in overrides) else ["experiment=smoke"]
        monkeypatch.setattr(sys, "argv", ["steerable.train", SEARCHPATH, *experiment, *overrides])
        with pytest.raises(SystemExit) as exit_info:
            run_cli(_hydra_main)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("error: "), err
        return err

    return _run


@pytest.mark.parametrize(("overrides", "expected"), [
    (["group=so4"], "unknown group 'so4'"),
    (["trainer=gpux"], "unknown trainer 'gpux' (did you mean 'gpu'?)"),
    (["logger=wandb,cvs"], "unknown logger 'cvs'"),
    ([QM9, "model.kernel=foo"], "model.kernel"),
    (["model.hiden=3"], "Could not override 'model.hiden'"),
    (["+model.hiden=3"], "unknown key 'model.hiden' for steerable.models.baseline.PointNetBaseline "
                         "(did you mean 'hidden'?)"),
    (["model.readout=everything"], "invalid value model.readout='everything'; valid: graph, node"),
    (["+task.optimizer.betas=[0.9,0.99]", "+task.optimizer.momentum=0.9"],
     "unknown key 'task.optimizer.momentum'"),
    (["resume=sometimes"], "invalid value resume='sometimes'"),
    (["+notes=hello"], "unknown top-level key 'notes'"),
    (["dataset.min_points=1"], "dataset: need 2 <= min_points <= max_points"),
    (["ckpt_path=/nonexistent.ckpt"], "no checkpoint at /nonexistent.ckpt"),
    (["trainer.gradient_clip_algorithm=foo"], "trainer: `gradient_clip_algorithm` foo is invalid"),
    (["+group.maximum_frequncy=6"], "unknown group key 'group.maximum_frequncy' (did you mean "
                                    "'maximum_frequency'?); valid keys: name, dim, N, maximum_frequency"),
    (["group=so3", "group.N=6"], "group 'so3' has no rotation order N"),
    (["train=false"], "train=false would test untrained weights: "),
    (["train=false", "resume=never"], "train=false would test untrained weights: resume=never ignores"),
])
def test_bad_override_fails_fast_with_one_line(cli, overrides, expected):
    assert expected in cli(*overrides)


def test_ddp_in_a_local_multirun_is_refused(monkeypatch, tmp_path, capsys):
    """Lightning starts DDP ranks by re-running the command line, ``-m`` included: every rank would run
    the whole sweep."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setenv("STEERABLE_ROOT", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["steerable.train", "-m", SEARCHPATH, "experiment=smoke", "seed=0",
                                      "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(_hydra_main)
    assert exit_info.value.code == 2
    assert "error: trainer=ddp in a local multirun" in capsys.readouterr().err


@pytest.mark.parametrize("user_setting", [None, pytest.param("1", marks=pytest.mark.slow)])
def test_processes_a_run_starts_follow_the_users_hydra_full_error(monkeypatch, tmp_path, user_setting):
    """Lightning starts DDP ranks 1… by re-running the command with the environment of rank 0's
    process: a config error there is one line too, unless the user asked for tracebacks."""
    if user_setting is None:
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    else:
        monkeypatch.setenv("HYDRA_FULL_ERROR", user_setting)
    monkeypatch.setattr(sys, "argv", ["steerable.train"])
    inherited: dict[str, str] = {}
    run_cli(lambda: inherited.update(os.environ))  # what a process started during the run gets
    rank = subprocess.run([sys.executable, "-m", "steerable.train", SEARCHPATH, "group=so4"], env=inherited,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert rank.returncode != 0
    if user_setting is None:
        assert rank.stderr.strip().startswith("error: unknown group 'so4'"), rank.stderr
        assert rank.stderr.strip().count("\n") == 0, rank.stderr
    else:
        assert "Traceback" in rank.stderr
    assert os.environ.get("HYDRA_FULL_ERROR") == user_setting  # restored for the rest of this process
