"""LightningModules holding losses, metrics and optimisers (never model building)."""

from steerable.tasks.base import BaseTask
from steerable.tasks.classification import ClassificationTask
from steerable.tasks.regression import RegressionTask
from steerable.tasks.trajectory import TrajectoryTask

__all__ = ["BaseTask", "ClassificationTask", "RegressionTask", "TrajectoryTask"]
