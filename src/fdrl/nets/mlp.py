"""A multilayer perceptron estimator for vector (and flattened) data, and its input gradient
derived by hand for the flow of Eq. 9."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
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
        self.negative_slope = float(negative_slope)
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

    def weights_and_biases(self) -> tuple[list[Tensor], list[Tensor]]:
        """The linear layers' (weight, bias) in order, as :func:`mlp_input_gradient` takes them;
        a spectrally normalised weight is the normalised one (cached inside ``fdrl.flow.frozen``)."""
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        return [m.weight for m in linears], [m.bias for m in linears]


def mlp_input_gradient(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    negative_slope: float,
    output_grad: Callable[[Tensor], Tensor],
) -> Tensor:
    """grad_x sum_i phi(NN(x_i)) for the LeakyReLU MLP with these layers, derived by hand.

    With z_l = h_{l-1} W_l^T + b_l, h_l = LeakyReLU(z_l), h_0 = x and NN = h_L w^T + b, the
    chain rule gives g_L = phi'(NN) w and g_{l-1} = (g_l * LeakyReLU'(z_l)) W_l, with
    grad_x = g_0. The forward keeps each z_l; each layer's backward is one fused LeakyReLU
    backward and one matrix product; no autograd graph is built. ``output_grad`` maps the
    outputs NN (shape (batch,)) to phi'(NN); for the flow of Eq. 9 phi is f' of Table 2.
    Equals autograd's input gradient up to float rounding (the same products, in the same order).
    """
    h = x.reshape(x.shape[0], -1)
    pre_activations = []
    for w, b in zip(weights[:-1], biases[:-1]):
        z = torch.addmm(b, h, w.t())
        pre_activations.append(z)
        h = F.leaky_relu(z, negative_slope)
    out = torch.addmm(biases[-1], h, weights[-1].t()).squeeze(-1)
    g = output_grad(out)[:, None] * weights[-1]
    for w, z in zip(reversed(weights[:-1]), reversed(pre_activations)):
        g = torch.ops.aten.leaky_relu_backward(g, z, negative_slope, False) @ w
    return g.reshape(x.shape)
