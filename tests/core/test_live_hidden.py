"""``live_hidden_only``: φ's hidden fields that no input reaches are dropped; the kernel stays steerable."""

from __future__ import annotations

import pytest
import torch
from test_kernel import _kernel_error

from steerable.fields import FieldLayout
from steerable.kernels import ImplicitKernel
from steerable.testing import group

SPECS = ("2x0e+1x1o", "1x0e+2x1o")


def _kernels(name: str, **kwargs) -> tuple[ImplicitKernel, ImplicitKernel]:
    G = group(name)
    full, pruned = (ImplicitKernel(G, G.field_type(SPECS[0]), G.field_type(SPECS[1]), channels=4,
                                   live_hidden_only=live, **kwargs) for live in (False, True))
    return full, pruned


@pytest.mark.parametrize("nonlinearity", ["gated", "norm"])
def test_dead_fields_are_exactly_zero_and_dropped(nonlinearity):
    """O(3), band limit 1: inputs 1o, 0e, 2e reach the 0e and 1o hidden fields, never 0o or 1e."""
    full, pruned = _kernels("o3", nonlinearity=nonlinearity)
    live = full._live_hidden()
    assert (full.hidden_size, int(live.sum()), pruned.hidden_size) == (32, 16, 16)
    full.train()
    activation, _, _ = full.hidden(torch.randn(50, 3, dtype=torch.float32))
    assert activation[~live].abs().max() == 0 and activation[live].abs().max() > 0
    layout = FieldLayout(full.hidden_type)
    live_fields = [rep.name for rep, f in zip(full.hidden_type.representations, range(layout.num_fields))
                   if bool(live[layout.field_of_channel == f].any())]
    assert [rep.name for rep in pruned.hidden_type.representations] == live_fields
    assert bool(pruned._live_hidden().all())


def test_nothing_dropped_without_parity():
    """SO(3) has no parity: 1e and 1o are the same irrep, 0o is 0e; every hidden field is reached."""
    full, pruned = _kernels("so3")
    assert pruned.hidden_size == full.hidden_size == 32


@pytest.mark.parametrize("name", ["o3", "cone", "so3"])
def test_pruned_kernel_is_steerable(name):
    _, pruned = _kernels(name)
    assert _kernel_error(pruned) <= 1e-5


def test_nbody_model_with_live_hidden_only_is_equivariant():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
    from test_models import SMALL_CONV, _particles

    from steerable.equivariance import model_error
    from steerable.models.nbody import NBodyModel

    model = NBodyModel(group={"name": "o3"}, num_features=4, num_layers=2,
                       conv={**SMALL_CONV, "live_hidden_only": True}).eval()
    assert model.blocks[1].conv.kernel.hidden_size == 16  # of 32
    assert model_error(model, _particles(torch.Generator().manual_seed(3))) <= 1e-5
