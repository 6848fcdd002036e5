"""Density-ratio estimators: networks mapping a batch to one scalar per sample."""

from fdrl.nets.mlp import MLP
from fdrl.nets.registry import ESTIMATORS, build_estimator

__all__ = ["MLP", "ESTIMATORS", "build_estimator"]
