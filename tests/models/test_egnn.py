"""EGNN peer baseline: O(3) equivariance in float32 (reflections included), translations, and real
Lightning training through the Hydra configs on the tiny N-body and QM9 sets."""

from __future__ import annotations

import pytest
import torch
from test_models import _molecules, _particles

from steerable.equivariance import elements, model_error
from steerable.models.egnn import EGNN

TOL = 1e-5  # float32


def _nbody_model(**kwargs) -> EGNN:
    torch.manual_seed(0)
    model = EGNN(targets=None, hidden=16, num_layers=3, **kwargs).eval()
    with torch.no_grad():  # a visible coordinate update (φ_x starts near zero)
        for layer in model.layers:
            layer.phi_x[-1].weight.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize("kwargs", [{}, {"node_attrs": True, "attention": True}, {"edge_attrs": False}])
def test_egnn_nbody_equivariant_in_float32(kwargs):
    model = _nbody_model(**kwargs)
    batch = _particles(torch.Generator().manual_seed(3))
    out = model(batch)
    assert out.shape == (15, 3) and out.dtype == torch.float32
    assert (out - batch.pos).norm() > 0.1 * batch.vel.norm()  # positions move: the check sees x updates
    assert any(torch.linalg.det(torch.as_tensor(model.group.std_matrix(g))) < 0
               for g in elements(model.group, 5))  # the checked elements include a reflection
    assert model_error(model, batch, n_elements=5) <= TOL


@pytest.mark.parametrize("kwargs", [{}, {"node_attrs": True, "attention": True, "pool": "mean"}])
def test_egnn_qm9_invariant_in_float32(kwargs):
    torch.manual_seed(0)
    model = EGNN(targets=["homo", "lumo"], hidden=16, num_layers=3, **kwargs).eval()
    batch = _molecules(torch.Generator().manual_seed(0))
    assert model(batch).shape == (3, 2)
    assert model_error(model, batch, n_elements=5) <= TOL


def test_egnn_translation_equivariant():
    model = _nbody_model()
    batch = _particles(torch.Generator().manual_seed(4))
    shifted = batch.clone()
    shift = torch.tensor([1.0, -2.0, 0.5])
    shifted.pos = batch.pos + shift
    with torch.no_grad():
        torch.testing.assert_close(model(shifted), model(batch) + shift, atol=1e-5, rtol=1e-5)


def test_egnn_check_detects_broken_equivariance():
    """Velocities smuggled in as edge attributes (not invariant): the check must fail."""
    model = _nbody_model()
    batch = _particles(torch.Generator().manual_seed(5))

    def broken(b):
        b = b.clone()
        b.edge_attr = b.vel[b.edge_index[0], :1]  # the x component of v_j
        return model(b)

    assert model_error(model, batch, forward=broken) > 1e-3


def test_egnn_refuses_bad_options():
    with pytest.raises(ValueError, match="num_layers >= 1"):
        EGNN(num_layers=0)
    with pytest.raises(ValueError, match="invariant targets only"):
        EGNN(targets=["polarizability_tensor"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [["experiment=nbody", "dataset=nbody_tiny"],
     ["experiment=qm9_homo", "dataset=qm9_tiny", "model.attention=true", "model.node_attrs=true"]],
    ids=["nbody", "qm9"],
)
def test_egnn_trains_with_lightning(compose_cfg, overrides):
    from helpers.runs import FAST

    from steerable.train import train

    cfg = compose_cfg([*overrides, "model=egnn", *FAST, "trainer.max_epochs=2", "model.hidden=16",
                       "model.num_layers=2"])
    assert cfg.model._target_ == "steerable.models.egnn.EGNN"
    metrics = train(cfg)
    key = "test/mse" if "experiment=nbody" in overrides else "test/homo_mae_meV"
    assert key in metrics and torch.isfinite(torch.tensor(metrics[key]))
    assert metrics["train/loss"] == metrics["train/loss"]  # not NaN


def test_qm9_egnn_experiment_is_the_paper_size(compose_cfg):
    cfg = compose_cfg(["experiment=qm9_homo_egnn", "logger=none"])
    assert cfg.model._target_ == "steerable.models.egnn.EGNN"
    assert (cfg.model.num_layers, cfg.model.hidden, cfg.model.attention) == (7, 128, True)
    assert list(cfg.model.targets) == ["homo"] and cfg.task.loss == "l1"
