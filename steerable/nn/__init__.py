"""Steerable layers: implicit point/grid convolutions and the analytic baseline.

The field-wise operations they use (batch norm, nonlinearities) live in :mod:`steerable.fields`, a
layer below the kernels, and are re-exported here.
"""

from steerable.fields import FieldBatchNorm, GatedNonlinearity, NormNonlinearity, build_nonlinearity
from steerable.nn.analytic import AnalyticGridConv, AnalyticPointConv
from steerable.nn.grid_conv import ImplicitGridConv
from steerable.nn.point_conv import ImplicitPointConv

__all__ = [
    "AnalyticGridConv",
    "AnalyticPointConv",
    "FieldBatchNorm",
    "GatedNonlinearity",
    "ImplicitGridConv",
    "ImplicitPointConv",
    "NormNonlinearity",
    "build_nonlinearity",
]
