"""FDRL in a principal-component space of images: the flow runs on the leading k coefficients.

The data-dependent prior of Eq. 8 already finds the data's principal directions
(:class:`~fdrl.priors.LowRankGaussianPrior`: mean mu, directions U, variances lambda and a
per-pixel remainder D). :class:`PrincipalSpace` keeps that Gaussian and splits its directions:
an image x is encoded as the standardised coefficients z = U_k^T (x - mu) / s of the leading k
(s: their standard deviations on the training images), and a point z decodes to

    x = mu + U_k (s * z) + U_r (sqrt(lambda_r) * e) + sqrt(D) * e',    e, e' ~ N(0, I),

clamped to the pixel range: the remaining directions are drawn from the same Gaussian, so what
the estimator does not model is exactly Eq. 8's. On a CPU a small MLP on k coefficients gets
thousands of updates where a convolutional net on the pixels gets hundreds
(docs/images-cpu.md has the measurements).

``data.params.pca`` chooses the space: ``auto`` (the ``images`` preset) takes one direction per
:data:`IMAGES_PER_DIRECTION` training images, at most :data:`AUTO_K`; a share in (0, 1) takes the
smallest k whose directions hold that share of the variance (at most :data:`MAX_K`); an integer
k >= 1 takes k directions; 0 or absent leaves the data in pixel space. Why ``auto`` counts
images rather than variance: what the estimator does not model is drawn from the Gaussian,
independent of the rest, and a classifier tells such images from real ones however good the
leading coefficients are (the training images' own 15 leading coefficients of a digits folder,
decoded so, are told from held-out digits 70% of the time; with 64, 51%), while a few hundred
images do not teach an estimator many more directions than one per five of them
(docs/images-cpu.md). :class:`PrincipalImages` is the training data in
that space: the coefficients of the clean training images as vectors (``samples``), with the
images (``image_data``) and the held-out images (:meth:`PrincipalImages.held_out`) kept in pixels,
where samples are scored; :func:`build_run_data` gives a run's training data in its space.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fdrl.components import DataSpec, ImageSpec, check_pca
from fdrl.data.images import ImageData, build_held_out_images
from fdrl.data.source import ArrayData, DataSource, build_data
from fdrl.priors.low_rank import LowRankGaussianPrior, fit_batch_size

#: directions of the Gaussian the space is cut from (the rest of the variance is per pixel)
RANK = 256
#: the most coefficients a variance share chooses (the space stays a fraction of the Gaussian's rank)
MAX_K = 128
#: ``pca: auto``: one direction per IMAGES_PER_DIRECTION training images, at most AUTO_K (64 and
#: 128 measured alike on 400-image folders, 128 taking 40% more CPU)
IMAGES_PER_DIRECTION, AUTO_K = 5, 64
SPACE_FILE, GAUSSIAN_NAME = "space.json", "space_gaussian"


class PrincipalSpace:
    """Images <-> standardised coefficients on the leading ``k`` directions of ``gaussian``
    (module docstring); ``scale``: the coefficients' standard deviations."""

    def __init__(self, gaussian: LowRankGaussianPrior, k: int, scale: Tensor):
        if not 1 <= k <= gaussian.rank:
            raise ValueError(f"a principal space needs 1 <= k <= {gaussian.rank} directions, got {k}")
        if scale.shape != (k,) or not bool((scale > 0).all()):
            raise ValueError(f"a principal space needs {k} positive coefficient scales, got shape {tuple(scale.shape)}")
        self.gaussian, self.k, self.scale = gaussian, int(k), scale.float()
        self.shape = tuple(gaussian.shape)

    @classmethod
    def fit(cls, images: ImageData, pca: float | int | str, seed: int = 0) -> "PrincipalSpace":
        """Fit Eq. 8's low-rank Gaussian to the clean ``images`` and keep the directions ``pca``
        asks for (:func:`check_pca`)."""
        pca = check_pca(pca)
        dim = math.prod(images.shape)
        rank = min(RANK, dim, len(images))
        batch = fit_batch_size(dim)
        gaussian = LowRankGaussianPrior.fit(lambda: images.iter_batches(batch), rank, shape=images.shape,
                                            clamp=images.value_range, seed=seed)
        if pca == "auto":
            k = max(1, min(AUTO_K, rank, len(images) // IMAGES_PER_DIRECTION))
        elif isinstance(pca, int):
            if pca > rank:
                raise ValueError(f"data.params.pca={pca} directions, but {len(images)} images of {dim} values give "
                                 f"at most {rank}")
            k = pca
        else:
            held = torch.cumsum(gaussian.eigenvalues.double(), 0) / gaussian.total_variance
            k = min(int((held < pca).sum()) + 1, MAX_K, rank)
        unscaled = cls(gaussian, k, torch.ones(k))
        coefficients = torch.cat([unscaled.encode(b) for b in images.iter_batches(batch)])
        return cls(gaussian, k, coefficients.std(0, correction=0).clamp_min(1e-6))

    @property
    def components(self) -> Tensor:
        return self.gaussian.components[:, : self.k]

    def variance_share(self) -> float:
        """The share of the images' total variance along the k kept directions."""
        return float(self.gaussian.eigenvalues[: self.k].sum()) / self.gaussian.total_variance

    def describe(self) -> str:
        return f"{self.k} principal components ({self.variance_share():.1%} of the variance)"

    def encode(self, x: Tensor) -> Tensor:
        """Images (n, C, H, W) -> standardised coefficients (n, k)."""
        flat = x.reshape(x.shape[0], -1).float()
        return (flat - self.gaussian.mean.to(flat.device)) @ self.components.to(flat.device) / self.scale.to(flat.device)

    def encode_all(self, images: ImageData) -> Tensor:
        """Every image of ``images`` as coefficients (n, k), encoded in batches that fit memory."""
        batch = fit_batch_size(math.prod(images.shape))
        return torch.cat([self.encode(b) for b in images.iter_batches(batch)])

    def decode(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Coefficients (n, k) -> images (n, C, H, W) in the pixel range; with a ``generator``
        the remaining directions get their draw of the Gaussian (module docstring) and the
        result is clamped; without one they stay at the mean, unclamped (the point of the space
        itself: ``encode(decode(z)) == z``)."""
        z = z.float().cpu()
        g = self.gaussian
        x = g.mean + (z * self.scale) @ self.components.T
        if generator is not None:
            rest = torch.randn(z.shape[0], g.rank - self.k, generator=generator)
            x = x + (rest * g.eigenvalues[self.k:].sqrt()) @ g.components[:, self.k:].T
            x = x + torch.randn(z.shape[0], g.dim, generator=generator) * g.residual.sqrt()
        if g.clamp is not None and generator is not None:
            x = x.clamp(*g.clamp)
        return x.reshape(z.shape[0], *self.shape)

    def save(self, directory: str | Path) -> None:
        """``space.json`` (k, scales) and the Gaussian as ``space_gaussian.{json,safetensors}``."""
        self.gaussian.save(directory, GAUSSIAN_NAME)
        (Path(directory) / SPACE_FILE).write_text(json.dumps({"k": self.k, "scale": self.scale.tolist()}))

    @classmethod
    def load(cls, directory: str | Path) -> "PrincipalSpace | None":
        """The space saved in ``directory``, or None if there is none (a pixel-space model)."""
        from fdrl.priors import load_prior

        path = Path(directory) / SPACE_FILE
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            gaussian = load_prior(directory, GAUSSIAN_NAME)
            if not isinstance(gaussian, LowRankGaussianPrior):
                raise ValueError(f"'{GAUSSIAN_NAME}' is a {gaussian.kind} prior")
            return cls(gaussian, int(record["k"]), torch.tensor(record["scale"], dtype=torch.float32))
        except (ValueError, KeyError, TypeError, FileNotFoundError) as err:
            raise ValueError(f"'{path}' is damaged ({type(err).__name__}: {err})") from None


class PrincipalImages(ArrayData):
    """Training images as their coefficients in a :class:`PrincipalSpace` (``samples``, (n, k));
    ``image_data``: the training images in pixels; :meth:`held_out`: the held-out images in pixels
    (samples decode to pixels and are scored there)."""

    def __init__(self, images: ImageData, space: PrincipalSpace, heldout: ImageData | None):
        super().__init__(space.encode_all(images), name=images.name)
        self.image_data, self.space, self.heldout_images = images, space, heldout

    def held_out(self) -> ImageData | None:
        return self.heldout_images


def build_run_data(spec: DataSpec) -> DataSource:
    """The data a run of ``spec`` trains on: :func:`fdrl.data.build_data`, and for an image
    dataset with ``pca`` set its coefficients in the principal space fitted to its images. (Here
    and not in ``build_data``: the space is fitted with :mod:`fdrl.priors`, which reads data.)"""
    data = build_data(spec)
    if not (isinstance(spec, ImageSpec) and spec.pca):
        return data
    return PrincipalImages(data, PrincipalSpace.fit(data, spec.pca), build_held_out_images(spec))
