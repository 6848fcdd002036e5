"""The ResNet density-ratio estimators of Table 3, as configurations of one builder.

Every network is: a 3x3 stem convolution and LeakyReLU(0.2), a sequence of *stages* of
:class:`BasicBlock` (the first block of a stage with stride 2 is the table's "ResBlock Down":
strided 3x3 convolution, 1x1 strided projection on the shortcut), optionally one SAGAN
self-attention layer after the stage at the 128-channel level, global mean pooling, and a
dense layer to one scalar per sample: r_theta(x) for LSIF, log r_theta(x) for LR (App. C).

Table 3 of the paper text is garbled, so the stage lists below follow the authors' released
code (``src/models.py`` of github.com/clear-nus/fdrl, the code the paper links): blocks have
no convolution bias and add the shortcut before the last activation; self-attention sits after
the first stage with 128 channels. Writing "ResBlock Down c" for a strided block and
"n x ResBlock c" for plain ones, the four configurations are

* ``resnet32`` (CIFAR10 32x32): Conv 128; 3 x ResBlock 128; then three times
  [ResBlock Down 256; 2 x ResBlock 256] (32 -> 4 pixels).
* ``resnet64`` (CelebA 64x64): Conv 64; ResBlock Down 64; ResBlock Down 128, ResBlock 128;
  ResBlock Down 256, ResBlock 256; ResBlock Down 256, ResBlock 256 (64 -> 4 pixels).
* ``resnet64_shallow`` (Cat2dog 64x64, App. F: "shallower ... to prevent overfitting"):
  Conv 64; ResBlock Down 64; ResBlock Down 128; ResBlock Down 128; ResBlock Down 256.
* ``resnet128`` (LSUN Church 128x128): Conv 64; ResBlock Down 64; ResBlock Down 128;
  ResBlock Down 128, ResBlock 128; ResBlock Down 256, ResBlock 256; ResBlock Down 256,
  ResBlock 256 (128 -> 4 pixels).

Two more, not in the paper, for the CPU-sized digit sets, built the same way (a stem, strided
blocks down to 4 pixels, the stage widths of the paper's nets):

* ``resnet8`` (scikit-learn digits, 8x8): Conv 128; ResBlock 128; ResBlock Down 256,
  ResBlock 256 (8 -> 4 pixels; resnet32's last two stages, the resolution too small to halve
  more than once).
* ``resnet28`` (MNIST, 28x28): Conv 64; ResBlock Down 64; ResBlock Down 128, ResBlock 128;
  ResBlock Down 256, ResBlock 256 (28 -> 14 -> 7 -> 4 pixels: resnet64 without its last stage,
  as 28 is about 64 / 2).

Inputs may be in ``torch.channels_last`` memory format; nothing here assumes a layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm


@dataclass(frozen=True)
class Stage:
    """``blocks`` BasicBlocks with ``channels`` outputs; the first one strides by ``stride``."""

    channels: int
    blocks: int
    stride: int = 1


@dataclass(frozen=True)
class Architecture:
    """One column of Table 3: the image side it is built for, stem width, stages, and the
    index of the stage after which the optional self-attention layer goes."""

    image_size: int
    stem: int
    stages: tuple[Stage, ...]
    attention_after: int


ARCHITECTURES: dict[str, Architecture] = {
    "resnet32": Architecture(
        32, 128, (Stage(128, 3), Stage(256, 3, 2), Stage(256, 3, 2), Stage(256, 3, 2)), attention_after=0
    ),
    "resnet64": Architecture(
        64, 64, (Stage(64, 1, 2), Stage(128, 2, 2), Stage(256, 2, 2), Stage(256, 2, 2)), attention_after=1
    ),
    "resnet64_shallow": Architecture(
        64, 64, (Stage(64, 1, 2), Stage(128, 1, 2), Stage(128, 1, 2), Stage(256, 1, 2)), attention_after=1
    ),
    "resnet128": Architecture(
        128,
        64,
        (Stage(64, 1, 2), Stage(128, 1, 2), Stage(128, 2, 2), Stage(256, 2, 2), Stage(256, 2, 2)),
        attention_after=1,
    ),
    "resnet8": Architecture(8, 128, (Stage(128, 1), Stage(256, 2, 2)), attention_after=0),
    "resnet28": Architecture(28, 64, (Stage(64, 1, 2), Stage(128, 2, 2), Stage(256, 2, 2)), attention_after=1),
}


def _maybe_sn(layer: nn.Module, spectral_norm: bool) -> nn.Module:
    return _spectral_norm(layer) if spectral_norm else layer


class BasicBlock(nn.Module):
    """y = act(conv2(act(conv1(x))) + shortcut(x)), 3x3 convolutions without bias.

    The shortcut is the identity, or a strided 1x1 convolution when the stride or the number
    of channels changes ("ResBlock Down").
    """

    def __init__(
        self, in_channels: int, channels: int, stride: int, spectral_norm: bool, negative_slope: float
    ):
        super().__init__()
        self.conv1 = _maybe_sn(nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False), spectral_norm)
        self.conv2 = _maybe_sn(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), spectral_norm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = _maybe_sn(nn.Conv2d(in_channels, channels, 1, stride, bias=False), spectral_norm)
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))) + self.shortcut(x))


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al., 2019): y = x + gamma * o(attention-weighted values).

    Query, key and value are 1x1 convolutions to C/8 channels (the value projection reduced
    as well, with a 1x1 output convolution back to C); each position attends over all
    positions with softmax weights of unscaled dot products; gamma starts at 0 so the layer
    starts as the identity.
    """

    def __init__(self, channels: int, spectral_norm: bool, reduction: int = 8):
        super().__init__()
        inner = max(1, channels // reduction)
        self.query = _maybe_sn(nn.Conv2d(channels, inner, 1), spectral_norm)
        self.key = _maybe_sn(nn.Conv2d(channels, inner, 1), spectral_norm)
        self.value = _maybe_sn(nn.Conv2d(channels, inner, 1), spectral_norm)
        self.out = _maybe_sn(nn.Conv2d(inner, channels, 1), spectral_norm)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q = self.query(x).reshape(b, -1, h * w)
        k = self.key(x).reshape(b, -1, h * w)
        v = self.value(x).reshape(b, -1, h * w)
        weights = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (b, query position, key position)
        attended = (v @ weights.transpose(1, 2)).reshape(b, -1, h, w)
        return x + self.gamma * self.out(attended)


class ResNet(nn.Module):
    """A Table 3 estimator: x of shape (n, C, H, W) -> one scalar per sample, shape (n,).

    ``in_shape`` is one sample's (C, H, W); C may be anything (1 for grayscale), H = W must be
    the architecture's image size. Options: ``spectral_norm`` on every convolution and dense
    layer; ``self_attention`` (one SAGAN layer at the 128-channel level, as for Cat2dog);
    ``width`` multiplies every channel count (e.g. 0.125 for quick CPU runs).
    """

    def __init__(
        self,
        in_shape: Iterable[int],
        arch: str = "resnet32",
        spectral_norm: bool = False,
        self_attention: bool = False,
        width: float = 1.0,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown ResNet architecture '{arch}'; choose one of: {', '.join(ARCHITECTURES)}")
        if not width > 0:
            raise ValueError(f"ResNet width must be > 0, got {width}")
        spec = ARCHITECTURES[arch]
        self.in_shape = tuple(int(s) for s in in_shape)
        if len(self.in_shape) != 3 or self.in_shape[1:] != (spec.image_size, spec.image_size):
            fits = [name for name, a in ARCHITECTURES.items() if len(self.in_shape) == 3
                    and self.in_shape[1:] == (a.image_size, a.image_size)]
            hint = f"use {' or '.join(fits)}" if fits else "resize the images (data.params.image_size)"
            raise ValueError(
                f"estimator '{arch}' is built for C x {spec.image_size} x {spec.image_size} images, but the "
                f"data samples have shape {self.in_shape}; {hint}"
            )

        def scaled(channels: int) -> int:
            return max(1, round(channels * width))

        self.stem = nn.Sequential(
            _maybe_sn(nn.Conv2d(self.in_shape[0], scaled(spec.stem), 3, 1, 1, bias=False), spectral_norm),
            nn.LeakyReLU(negative_slope),
        )
        stages: list[nn.Module] = []
        channels = scaled(spec.stem)
        for index, stage in enumerate(spec.stages):
            blocks: list[nn.Module] = []
            for b in range(stage.blocks):
                blocks.append(BasicBlock(channels, scaled(stage.channels), stage.stride if b == 0 else 1,
                                         spectral_norm, negative_slope))
                channels = scaled(stage.channels)
            if self_attention and index == spec.attention_after:
                blocks.append(SelfAttention(channels, spectral_norm))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = _maybe_sn(nn.Linear(channels, 1), spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        features = self.stages(self.stem(x))
        return self.head(features.mean(dim=(2, 3))).squeeze(-1)
