"""A multilayer perceptron estimator for vector (and flattened) data."""

from __future__ import annotations

import math
from collections.abc import Iterable

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm


class MLP(nn.Module):
    """x -> one scalar per sample: ``depth`` hidden layers of ``width`` with LeakyReLU(0.2).

    ``in_shape`` is the shape of one sample; inputs are flattened. With ``spectral_norm`` every
    linear layer is spectrally normalised.
    """

    def __init__(
        self,
        in_shape: Iterable[int],
        width: int = 128,
        depth: int = 3,
        spectral_norm: bool = False,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"MLP needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
        self.in_shape = tuple(int(s) for s in in_shape)
        dims = [math.prod(self.in_shape)] + [width] * depth
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            layers += [self._linear(fan_in, fan_out, spectral_norm), nn.LeakyReLU(negative_slope)]
        layers.append(self._linear(width, 1, spectral_norm))
        self.net = nn.Sequential(*layers)

    @staticmethod
    def _linear(fan_in: int, fan_out: int, spectral_norm: bool) -> nn.Module:
        layer = nn.Linear(fan_in, fan_out)
        return _spectral_norm(layer) if spectral_norm else layer

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], -1)).squeeze(-1)
