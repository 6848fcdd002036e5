"""Build an estimator from its spec (the ``model`` section of a config)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from torch import nn

from fdrl.components import EstimatorSpec, as_spec
from fdrl.nets.mlp import MLP
from fdrl.nets.resnet import ARCHITECTURES, ResNet

#: the Table 3 ResNet for each image side
_RESNET_FOR_SIDE = {8: "resnet8", 28: "resnet28", 32: "resnet32", 64: "resnet64", 128: "resnet128"}


def resnet_for_size(in_shape: Iterable[int], **kwargs: Any) -> ResNet:
    """The ResNet built for the images' side: 8 -> resnet8, 28 -> resnet28 (digits, MNIST),
    32 -> resnet32, 64 -> resnet64, 128 -> resnet128 (what ``fdrl train DIR`` uses, so
    ``data.params.image_size`` alone picks it)."""
    shape = tuple(in_shape)
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in _RESNET_FOR_SIDE:
        raise ValueError(f"estimator 'resnet' picks a ResNet by image side (8, 28, 32, 64 or 128), but samples have "
                         f"shape {shape}; set data.params.image_size to 8, 28, 32, 64 or 128, or use model.name=mlp")
    return ResNet(shape, arch=_RESNET_FOR_SIDE[shape[1]], **kwargs)


#: name -> constructor taking (in_shape, **kwargs): ``mlp``, the Table 3 ResNets
#: (``resnet32``, ``resnet64``, ``resnet64_shallow``, ``resnet128``) and ``resnet`` (the one
#: for the images' side).
ESTIMATORS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "resnet": resnet_for_size,
    **{name: partial(ResNet, arch=name) for name in ARCHITECTURES},
}


def build_estimator(spec: EstimatorSpec | str, in_shape: Iterable[int], **params: Any) -> nn.Module:
    """The estimator of ``spec`` (:mod:`fdrl.components`; or a ``model.name`` with its
    ``model.params`` as keywords) for samples of shape ``in_shape``."""
    spec = as_spec("model", spec, params)
    return ESTIMATORS[spec.name](tuple(in_shape), **spec.params)
