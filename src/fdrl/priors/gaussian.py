"""The Gaussian prior N(mu, Sigma) with a full covariance, fitted to data in one streaming pass
(the data-dependent prior, Eq. 8) or given explicitly (the Gaussians of Section 3.1)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from fdrl.priors.simple import Prior, _draw


class GaussianStats:
    """Streaming mean and covariance in float64 (Chan et al.'s pairwise merge of batches)."""

    def __init__(self, dim: int):
        self.n = 0
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.m2 = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, batch: Tensor) -> None:
        x = batch.detach().reshape(batch.shape[0], -1).to(device="cpu", dtype=torch.float64)
        nb = x.shape[0]
        if nb == 0:
            return
        mean_b = x.mean(0)
        centred = x - mean_b
        m2_b = centred.T @ centred
        delta = mean_b - self.mean
        total = self.n + nb
        self.m2 += m2_b + torch.outer(delta, delta) * (self.n * nb / total)
        self.mean += delta * (nb / total)
        self.n = total

    def covariance(self) -> Tensor:
        """The maximum-likelihood covariance E[(x - mu)(x - mu)^T] of Eq. 8."""
        if self.n < 2:
            raise ValueError(f"need at least 2 samples to fit a Gaussian prior, got {self.n}")
        return self.m2 / self.n


def cholesky_with_jitter(cov: Tensor, max_tries: int = 8) -> tuple[Tensor, float]:
    """Cholesky factor of ``cov``, adding diagonal jitter (growing x10) until it succeeds."""
    scale = float(cov.diagonal().mean().clamp_min(1e-12))
    eye = torch.eye(cov.shape[0], dtype=cov.dtype)
    for attempt in range(max_tries + 1):
        jitter = 0.0 if attempt == 0 else scale * 10.0 ** (attempt - 1 - max_tries)
        factor, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        if int(info) == 0:
            return factor, jitter
    raise ValueError(f"covariance is not positive definite even with jitter {jitter:.3g}")


class GaussianPrior(Prior):
    """N(mean, L L^T), optionally clamped to [low, high] (images use [-1, 1])."""

    kind = "gaussian"

    def __init__(
        self,
        mean: Tensor,
        scale_tril: Tensor,
        shape: Iterable[int] | None = None,
        clamp: tuple[float, float] | None = None,
        jitter: float = 0.0,
    ):
        self.mean = mean.reshape(-1).float()
        self.scale_tril = scale_tril.float()
        self.shape = tuple(int(s) for s in shape) if shape is not None else (self.mean.numel(),)
        if self.scale_tril.shape != (self.dim, self.dim) or self.mean.numel() != self.dim:
            raise ValueError(
                f"Gaussian prior of shape {self.shape} needs mean ({self.dim},) and scale_tril "
                f"({self.dim}, {self.dim}); got {tuple(mean.shape)} and {tuple(scale_tril.shape)}"
            )
        self.clamp = tuple(clamp) if clamp is not None else None
        self.jitter = float(jitter)

    @classmethod
    def isotropic(cls, mean: Iterable[float], variance: float) -> "GaussianPrior":
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
        return cls(mean_t, math.sqrt(variance) * torch.eye(mean_t.numel()))

    @classmethod
    def fit(
        cls,
        batches: Iterable[Tensor],
        shape: Iterable[int] | None = None,
        clamp: tuple[float, float] | None = None,
    ) -> "GaussianPrior":
        """Fit Eq. 8 in one pass over ``batches`` (float64 accumulation, Cholesky with jitter)."""
        stats: GaussianStats | None = None
        for batch in batches:
            if stats is None:
                stats = GaussianStats(batch[0].numel())
                shape = shape if shape is not None else tuple(batch.shape[1:])
            stats.update(batch)
        if stats is None:
            raise ValueError("cannot fit a Gaussian prior to an empty dataset")
        factor, jitter = cholesky_with_jitter(stats.covariance())
        return cls(stats.mean, factor, shape=shape, clamp=clamp, jitter=jitter)

    @property
    def covariance(self) -> Tensor:
        return self.scale_tril @ self.scale_tril.T

    def sample(self, n, generator=None, device=None):
        z = _draw((n, self.dim), generator, device, torch.randn)
        x = self.mean.to(z.device) + z @ self.scale_tril.to(z.device).T
        if self.clamp is not None:
            x = x.clamp(*self.clamp)
        return x.reshape(n, *self.shape)

    def tensors(self):
        return {"mean": self.mean, "scale_tril": self.scale_tril}

    def params(self):
        return {**super().params(), "clamp": list(self.clamp) if self.clamp else None, "jitter": self.jitter}


#: rows of a batch converted to float64 at once by :class:`CovarianceSketch` (bounds its memory)
