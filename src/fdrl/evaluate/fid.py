"""Standard FID: pool3 features of the FID Inception network through torch-fidelity.

Images are turned into uint8 exactly as a saved PNG would hold them (:func:`fdrl.image_io.to_uint8`:
``floor(((x + 1) / 2) * 255 + 0.5)`` clamped to 0..255, grey repeated to RGB), then fed to
torch-fidelity's TensorFlow-compatible Inception-v3 port, which resizes to 299 x 299 with
TF1 bilinear interpolation and returns the 2048-d pool3 features FID is defined on.

Weights, in order: ``inception_weights=PATH``, the ``FDRL_INCEPTION_WEIGHTS`` environment
variable, else torch-fidelity's own download (cached by ``torch.hub``). Offline without a
copy, :class:`InceptionWeightsError` names both ways to provide one. torch-fidelity is the
optional extra ``fid``: ``pip install 'fdrl[fid]'``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fdrl.evaluate.frechet import (
    FeatureStats,
    Inputs,
    batched_features,
    cached_stats,
    default_cache_dir,
    feature_stats,
    file_sha256,
    frechet_feature_distance,
)
from fdrl.image_io import to_uint8

WEIGHTS_ENV = "FDRL_INCEPTION_WEIGHTS"
#: How images reach the network; part of every FID statistics key.
PREPROCESSING = "png-uint8 (floor(255 (x + 1) / 2 + 0.5)), grey to RGB, TF1 bilinear to 299"
_EXTRACTOR = "torch-fidelity inception-v3-compat pool3 2048"


class InceptionWeightsError(FileNotFoundError):
    """The FID Inception weights could not be found or downloaded; the message says how to fix it."""


def to_uint8_rgb(images: Tensor) -> Tensor:
    """Images in [-1, 1], (n, C, H, W) with C = 1 or 3 or (n, H, W), as the uint8 RGB values a
    saved PNG holds (the arithmetic of ``torchvision.utils.save_image``). uint8 input is kept."""
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"FID needs images (n, 1 or 3, H, W) or (n, H, W); got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def resolve_inception_weights(inception_weights: str | Path | None = None) -> Path | None:
    """The weights file to use: the argument, else ``$FDRL_INCEPTION_WEIGHTS``, else None (download)."""
    chosen = inception_weights or os.environ.get(WEIGHTS_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_file():
        source = "inception_weights" if inception_weights else f"${WEIGHTS_ENV}"
        raise InceptionWeightsError(f"FID Inception weights file '{path}' (from {source}) does not exist")
    return path


def _torch_fidelity() -> Any:
    try:
        import torch_fidelity.feature_extractor_inceptionv3 as module
    except ImportError:
        raise ModuleNotFoundError("FID needs torch-fidelity: pip install 'fdrl[fid]' (or torch-fidelity)") from None
    return module


def inception_identity(inception_weights: str | Path | None = None) -> dict[str, str]:
    """What identifies the feature extractor in a statistics key: network, layer and weights
    (the SHA-256 of a weights file, or the name of torch-fidelity's download)."""
    path = resolve_inception_weights(inception_weights)
    if path is None:
        weights = "torch-fidelity download " + _torch_fidelity().URL_INCEPTION_V3.rsplit("/", 1)[-1]
    else:
        weights = "sha256:" + file_sha256(path)
    return {"name": _EXTRACTOR, "weights": weights}


class InceptionPool3(nn.Module):
    """Images in [-1, 1] (or uint8) -> (n, 2048) pool3 features of the FID Inception network."""

    def __init__(self, network: nn.Module, identity: dict[str, str]):
        super().__init__()
        self.network = network
        self.identity = identity

    def forward(self, images: Tensor) -> Tensor:
        (features,) = self.network(to_uint8_rgb(images))
        return features


def load_inception(inception_weights: str | Path | None = None, device: str | torch.device = "cpu") -> InceptionPool3:
    """The FID Inception network on ``device`` (see the module docstring for where weights come from).

    A weights file must be a plain state dict: it is first read with ``weights_only=True``, so a
    file that would run code when unpickled is refused before torch-fidelity loads it. The
    network is frozen and kept for the next call with the same file (unchanged) and device.
    """
    path = resolve_inception_weights(inception_weights)
    stamp = (path.stat().st_mtime_ns, path.stat().st_size) if path is not None else None
    return _load_network(path, stamp, str(torch.device(device)))


@functools.lru_cache(maxsize=2)
def _load_network(path: Path | None, stamp: tuple[int, int] | None, device: str) -> InceptionPool3:
    """:func:`load_inception` for a resolved weights file; ``stamp`` (mtime, size) keys the cache."""
    module = _torch_fidelity()
    if path is None:
        try:
            network = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
        except OSError as err:  # URLError and socket errors are OSErrors
            raise InceptionWeightsError(
                f"could not download the FID Inception weights ({err}); on an offline machine pass "
                f"inception_weights=PATH (fdrl: --inception-weights PATH) or set {WEIGHTS_ENV}=PATH to a copy "
                f"of {module.URL_INCEPTION_V3}"
            ) from None
    else:
        try:
            torch.load(path, map_location="cpu", weights_only=True)
            network = module.FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)
            )
        except Exception as err:  # torch raises many types for corrupt, unsafe or mismatched files
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"'{path}' is not a state dict of the FID Inception network ({first})") from None
    return InceptionPool3(network, inception_identity(path)).to(device)


def inception_features(
    images: Inputs,
    batch_size: int = 50,
    inception_weights: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Pool3 features (n, 2048), float64, of ``images`` (a tensor or an iterable of batches)."""
    return torch.cat(list(batched_features(images, load_inception(inception_weights, device), batch_size)))


def fid_reference_stats(
    images: Inputs,
    dataset: dict[str, Any],
    cache_dir: str | Path | None = None,
    batch_size: int = 50,
    inception_weights: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> FeatureStats:
    """FID statistics of reference ``images``, cached under a key of ``dataset`` (name it and
    which samples: e.g. ``{"name": "cifar10", "split": "train"}``), :data:`PREPROCESSING` and
    the extractor's identity. ``images`` are only read on a cache miss."""
    key = {"dataset": dataset, "preprocessing": PREPROCESSING, "extractor": inception_identity(inception_weights)}

    def compute() -> FeatureStats:
        return feature_stats(images, load_inception(inception_weights, device), batch_size, key)

    return cached_stats(cache_dir or default_cache_dir(), key, compute)


def fid_from_samples(
    samples: Inputs,
    reference: Inputs | FeatureStats,
    batch_size: int = 50,
    inception_weights: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> float:
    """FID between ``samples`` and ``reference`` images in [-1, 1] (or reference statistics from
    :func:`fid_reference_stats`, which must have been computed with the same weights)."""
    extractor = load_inception(inception_weights, device)
    return frechet_feature_distance(samples, reference, extractor, batch_size)
