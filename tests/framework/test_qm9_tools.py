"""QM9 tools on a checkpoint built in-process (no training): ``predict`` output, unreadable checkpoints,
``evaluate``'s dataset overrides, and the QM9 config errors (run in-process, as the CLI does)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers.runs import FAST, SEARCHPATH, compose_run
from omegaconf import OmegaConf
from torch_geometric.data import Batch

from steerable import evaluate, predict, train
from steerable.checkpoint import CONFIG_KEY, build, build_model_and_task
from steerable.data.molecules import read_molecules

SMALL = ["model.num_features=4", "model.num_blocks=1", "model.conv.channels=4"]
WATER_XYZ = "3\nwater\nO 0.0 0.0 0.1173\nH 0.0 0.7572 -0.4692\nH 0.0 -0.7572 -0.4692\n"
U0_MEAN = -11_012_345.6789  # a total energy in meV: 0.001 meV is its 11th significant digit


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A QM9 checkpoint (total energy U0, the small model, untrained) as ``steerable.train`` writes it."""
    run_dir = tmp_path_factory.mktemp("qm9_ckpt")
    cfg = compose_run(["experiment=qm9_homo", "dataset=qm9_tiny", "dataset.targets=[U0]", *SMALL, *FAST],
                      run_dir)
    task = build_model_and_task(cfg)
    task.target_mean = torch.tensor([U0_MEAN], dtype=torch.float64)
    task.target_std = torch.tensor([1.0], dtype=torch.float64)
    path = run_dir / "last.ckpt"
    torch.save({CONFIG_KEY: train.plain_config(cfg), "state_dict": task.state_dict(),
                "target_names": ["U0"], "target_units": ["meV"]}, path)
    return path


@pytest.fixture
def cli(monkeypatch, tmp_path, capsys):
    """``cli(module, *overrides)`` → ``(exit code, stdout, stderr)`` of ``python -m steerable.<module>``."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setenv("STEERABLE_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)

    def _run(module, *overrides: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", [f"steerable.{module.__name__}", SEARCHPATH, *overrides])
        code = 0
        try:
            train.run_cli(module._hydra_main)
        except SystemExit as exit_info:
            code = exit_info.code
        out, err = capsys.readouterr()
        return code, out, err.strip()

    return _run


def _one_line_error(code: int, err: str) -> str:
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 0, (code, err)
    return err


def test_predict_prints_total_energies_to_the_milli_meV(checkpoint, cli, tmp_path):
    xyz = tmp_path / "water.xyz"
    xyz.write_text(WATER_XYZ)
    [(_, values)] = predict.predict(OmegaConf.create({"ckpt_path": str(checkpoint), "input": str(xyz)}))
    code, out, err = cli(predict, f"ckpt_path={checkpoint}", f"input={xyz}")
    assert code == 0, err
    assert out.strip() == f"water U0_meV={values['U0_meV']:.3f}"  # not -1.10123e+07
    assert predict.format_prediction("m", {"mu_D": 2.3456789, "x": 1.5e-5}) == "m mu_D=2.345679 x=1.5e-05"


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", "truncated"])
def test_unreadable_checkpoint_is_one_line_error(checkpoint, cli, tmp_path, content):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(checkpoint.read_bytes()[:4000] if content == "truncated" else content)
    for module, extra in ((predict, ["input=CCO"]), (evaluate, ["accelerator=cpu"])):
        err = _one_line_error(*cli(module, f"ckpt_path={bad}", *extra)[::2])
        assert f"error: {bad} is not a readable checkpoint: " in err
    torch.save(torch.zeros(3), bad)
    err = _one_line_error(*cli(predict, f"ckpt_path={bad}", "input=CCO")[::2])
    assert "is not a readable checkpoint: it holds a Tensor" in err


@pytest.mark.parametrize(("override", "message"), [
    ("+dataset.targets=[lumo]", "dataset.targets=['lumo'] differs from the checkpoint's ['U0']"),
    ("+dataset.targets=lumo", "dataset.targets='lumo' differs"),
    ("+dataset.atomization=true", "dataset.atomization=True differs from the checkpoint's False"),
    ("+dataset.graph=radius", "dataset.graph='radius' differs from the checkpoint's 'bonds'"),
    ("+dataset._target_=steerable.data.synthetic.SyntheticPointCloudDataModule", "dataset._target_="),
])
def test_evaluate_refuses_overrides_that_change_the_task(checkpoint, cli, override, message):
    err = _one_line_error(*cli(evaluate, f"ckpt_path={checkpoint}", "accelerator=cpu", override)[::2])
    assert message in err and "override only settings such as batch_size" in err


def test_evaluate_keeps_loader_overrides(checkpoint, cli, tmp_path):
    out = tmp_path / "metrics.json"
    code, _, err = cli(evaluate, f"ckpt_path={checkpoint}", "accelerator=cpu", f"output={out}",
                       "+dataset.batch_size=8", "+dataset.num_workers=0", "+dataset.limit=40",
                       "+dataset.radius=3.0")  # bond graphs do not use the radius
    assert code == 0, err
    assert "test/U0_mae_meV" in json.loads(out.read_text())


def test_radius_counts_only_for_radius_graphs():
    stored = {"_target_": "steerable.data.qm9.QM9DataModule", "targets": ["homo"], "graph": "radius",
              "radius": 5.0, "atomization": False, "batch_size": 32, "data_dir": "a", "limit": None}
    model = {"targets": ["homo"], "graph": "radius"}
    evaluate.check_dataset_overrides(stored, {**stored, "batch_size": 8, "data_dir": "b", "limit": 10}, model)
    with pytest.raises(ValueError, match=r"dataset.radius=3.0 differs from the checkpoint's 5.0"):
        evaluate.check_dataset_overrides(stored, {**stored, "radius": 3.0}, model)


@pytest.mark.slow  # builds the experiment's full-size model
def test_polarizability_experiment_predicts_anisotropic_tensors(tmp_path):
    cfg = compose_run(["experiment=qm9_polarizability", *FAST], tmp_path)
    torch.manual_seed(0)
    model = build(cfg.model, "model").eval()
    _, molecule = read_molecules("CC(=O)N")[0]
    with torch.no_grad():
        tensors = model(Batch.from_data_list([molecule])).view(-1, 3, 3)
    isotropic = tensors.diagonal(dim1=1, dim2=2).mean(1)[:, None, None] * torch.eye(3)
    assert (tensors - isotropic).norm() > 1e-3 * tensors.norm()


@pytest.mark.parametrize(("overrides", "expected"), [
    (["group=r2_so2"], "model: QM9 positions are 3-D; group 'so2' (dim=2) acts on 2-D points"),
    (["dataset.radius=0"], "dataset: radius must be > 0 Å, got 0"),
    pytest.param(["experiment=qm9_polarizability", "model.band_limit=1"],
                 "reach its anisotropic (ℓ=2, 2e) part", marks=pytest.mark.slow),  # builds escnn bases: 9 s
])
def test_qm9_config_errors_are_one_line(cli, overrides, expected):
    experiment = [] if any(o.startswith("experiment=") for o in overrides) else ["experiment=qm9_homo"]
    err = _one_line_error(*cli(train, *experiment, "dataset=qm9_tiny", *FAST, *overrides)[::2])
    assert expected in err
