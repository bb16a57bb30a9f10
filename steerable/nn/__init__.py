"""Steerable layers: implicit point/grid convolutions, the analytic baseline, field-wise ops.

Names are resolved lazily (PEP 562) so that ``steerable.kernels`` can import
``steerable.nn.field_ops`` without a circular import through the layers that use the kernels.
"""

from importlib import import_module

_EXPORTS = {
    "AnalyticGridConv": "steerable.nn.analytic",
    "AnalyticPointConv": "steerable.nn.analytic",
    "FieldBatchNorm": "steerable.nn.field_ops",
    "GatedNonlinearity": "steerable.nn.field_ops",
    "NormNonlinearity": "steerable.nn.field_ops",
    "build_nonlinearity": "steerable.nn.field_ops",
    "ImplicitGridConv": "steerable.nn.grid_conv",
    "ImplicitPointConv": "steerable.nn.point_conv",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'steerable.nn' has no attribute {name!r}")
