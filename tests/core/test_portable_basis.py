"""Checkpoints mean the same in every environment, although escnn's basis need not be the same.

escnn's basis of Hom_G(ρ_in, ρ_out) is unique only up to mixing within repeated irreps, and the mixing
follows the LAPACK build (measured: a cyl layer's basis differs by O(1) between numpy 1.26 and 2.5).
Layers save their bases and re-express loaded weights in this environment's basis.

``data/cyl_conv_numpy1.pt`` is a cyl convolution saved from the reference install (Python 3.11,
numpy 1.26) with its output on a fixed input; every environment (CI: also Python 3.13 + numpy 2) must
reproduce that output after loading. Regenerate: ``python tests/core/test_portable_basis.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.bases import cyl_linear, mixed_checkpoint

from steerable.groups import build_group
from steerable.nn.point_conv import ImplicitPointConv

SAVED = Path(__file__).parent / "data" / "cyl_conv_numpy1.pt"


def _cyl_conv() -> ImplicitPointConv:
    return ImplicitPointConv(build_group("cyl", maximum_frequency=2), "2x0e+1x1o", "1x0e+1x1o+1x2e").double()


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(6, 3, generator=g, dtype=torch.float64)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 1, 2, 3], [1, 2, 3, 4, 5, 0, 0, 0, 0]])
    return x, pos, edge_index


def test_a_conv_saved_in_the_reference_install_computes_the_same_here():
    saved = torch.load(SAVED, weights_only=True)
    torch.manual_seed(123)  # other initial weights than the saved ones: loading must replace them all
    conv = _cyl_conv()
    conv.load_state_dict(saved["state_dict"])
    with torch.no_grad():
        out = conv(*_inputs())
    # float64 throughout; what remains (~3e-8 measured under numpy 2) comes from escnn's float32 copies
    # of representation matrices elsewhere in the layer. Without re-expression the outputs differ by 0.16.
    torch.testing.assert_close(out, saved["output"], rtol=0, atol=1e-6)


def test_weights_saved_in_a_mixed_basis_are_re_expressed_on_load():
    torch.manual_seed(0)
    layer = cyl_linear()
    weight, bias = layer.weight_and_bias()
    state = mixed_checkpoint(layer)
    assert not torch.allclose(state["linear.weights"], layer.linear.weights)

    torch.manual_seed(1)
    loaded = cyl_linear()
    loaded.load_state_dict(state)
    torch.testing.assert_close(loaded.linear.weights, layer.linear.weights, rtol=0, atol=1e-10)
    torch.testing.assert_close(loaded.weight_and_bias()[0], weight, rtol=0, atol=1e-10)


def test_without_re_expression_the_mixed_checkpoint_would_compute_another_map():
    """The test above can fail: the same checkpoint, with its bases dropped, loads θ as it is."""
    torch.manual_seed(0)
    layer = cyl_linear()
    state = {k: v for k, v in mixed_checkpoint(layer).items() if ".basis." not in f".{k}"}
    loaded = cyl_linear()
    loaded.load_state_dict(state)
    assert not torch.allclose(loaded.weight_and_bias()[0], layer.weight_and_bias()[0], atol=1e-3)


def test_a_basis_of_another_span_is_refused_naming_thecyl_linear():
    torch.manual_seed(0)
    layer = cyl_linear()
    state = layer.state_dict()
    # the pair whose basis leaves most room: a random basis there is not in the span of the layer's
    key = max((k for k in state if k.startswith("basis.")),
              key=lambda k: state[k][0].numel() - state[k].shape[0])
    state[key] = torch.randn_like(state[key])
    with pytest.raises(RuntimeError, match="spans another space"):
        cyl_linear().load_state_dict(state)


def test_saved_bases_follow_the_weights_device_and_stay_float64():
    layer = cyl_linear().float().to("meta")
    state = layer.state_dict()
    assert {t.device.type for t in state.values()} == {"meta"}
    assert {state[block.key].dtype for _, block in layer._basis_blocks} == {torch.float64}
    assert state["linear.weights"].dtype == torch.float32


def test_checkpoints_without_saved_bases_still_load():
    torch.manual_seed(0)
    layer = cyl_linear()
    state = {k: v for k, v in layer.state_dict().items() if not k.startswith("basis.")}
    loaded = cyl_linear()
    loaded.load_state_dict(state)
    torch.testing.assert_close(loaded.linear.weights, layer.linear.weights)


if __name__ == "__main__":
    torch.manual_seed(0)
    conv = _cyl_conv()
    with torch.no_grad():
        output = conv(*_inputs())
    SAVED.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": conv.state_dict(), "output": output}, SAVED)
    print(f"wrote {SAVED}")
