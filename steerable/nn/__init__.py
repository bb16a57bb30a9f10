"""Steerable layers: implicit point/grid convolutions, the analytic baseline, field-wise ops."""

from steerable.nn.analytic import AnalyticPointConv
from steerable.nn.field_ops import FieldBatchNorm, GatedNonlinearity, NormNonlinearity, build_nonlinearity
from steerable.nn.grid_conv import ImplicitGridConv
from steerable.nn.point_conv import ImplicitPointConv

__all__ = ["AnalyticPointConv", "FieldBatchNorm", "GatedNonlinearity", "ImplicitGridConv", "ImplicitPointConv",
           "NormNonlinearity", "build_nonlinearity"]
