"""Density-ratio estimators: networks mapping a batch to one scalar per sample."""

from fdrl.nets.mlp import MLP
from fdrl.nets.registry import ESTIMATORS, build_estimator
from fdrl.nets.resnet import ARCHITECTURES, ResNet

__all__ = ["MLP", "ARCHITECTURES", "ESTIMATORS", "ResNet", "build_estimator"]
