"""Build an estimator from its name and keyword arguments (the ``model`` section of a config)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from torch import nn

from fdrl.nets.mlp import MLP
from fdrl.nets.resnet import ARCHITECTURES, ResNet

#: name -> constructor taking (in_shape, **kwargs): ``mlp`` and the Table 3 ResNets
#: (``resnet32``, ``resnet64``, ``resnet64_shallow``, ``resnet128``).
ESTIMATORS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    **{name: partial(ResNet, arch=name) for name in ARCHITECTURES},
}


def build_estimator(name: str, in_shape: Iterable[int], **kwargs: Any) -> nn.Module:
    """Construct the estimator ``name`` for samples of shape ``in_shape``."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator '{name}'; choose one of: {', '.join(ESTIMATORS)}")
    try:
        return ESTIMATORS[name](tuple(in_shape), **kwargs)
    except TypeError as err:
        raise ValueError(f"bad options for estimator '{name}': {err}") from None
