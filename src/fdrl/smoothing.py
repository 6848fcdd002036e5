"""Kernel smoothing of the data batch: the estimator learns a slightly smoothed p.

On a table of a few hundred rows the estimator can learn p as a sum of spikes on the training
rows, and the flow then carries particles onto them (samples that are near-copies of training
rows). Training on rows jittered by Gaussian noise makes the data side of the Bregman loss
(Eq. 11) a smoothed p_h = p * N(0, h^2) -- a kernel density estimate of p, which has no spikes
to collapse onto. The jitter is variance-preserving (the smoothed bootstrap of Silverman 1986,
Sec. 6.4.1): x' = mu + (x - mu + h sigma xi) / sqrt(1 + h^2), so every feature keeps its mean and
variance. The noise xi has covariance w R + (1 - w) I in z-scores (``correlation`` = w, R the
rows' correlation matrix): with w = 0 it is the same in every direction and every correlation
shrinks by 1 + h^2; with w = 1 it follows the data's correlations, which it keeps exactly (the
multivariate smoothed bootstrap), but a table whose rows lie on a flat subspace then gets no
width off it and its ratio runs away; half of each (the vectors preset) keeps most of a
correlation (rho (1 + h^2 / 2) / (1 + h^2)) and still widens every direction.

The bandwidth is the least that stops the smoothed bootstrap from copying, measured on the
training rows themselves (:func:`copy_free_bandwidth`): a draw counts as a near-copy when it is
closer to a row than 99% of held-out rows are (each row held out once in five folds: the held-out
report's rule), and h is the smallest bandwidth whose jittered draws are near-copies at most
:data:`COPY_SHARE` of the time. Blur beyond that costs fidelity (a wide table's correlations and
shapes) and buys nothing against copying; less copies. The rule follows the data's spacing, so h
shrinks with the number of rows (5000 rows of the 2-D moons: h ~ 0.01) and is larger where rows
are few for their dimension (a few hundred rows in 4-13 dimensions: 0.2-0.6). The trained model
copies less than its smoothed bootstrap (the network smooths p_h further), so this bounds it.
``smoothing`` multiplies that h.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: the bandwidth is calibrated on at most this many rows (a seeded random subset beyond: its
#: spacing is wider than the whole table's, so h comes out a little larger than needed there)
CALIBRATION_ROWS = 5000
#: the smoothed bootstrap's allowed share of near-copies (the report's "1% expected" rule)
COPY_SHARE = 0.05
#: jittered draws and bisection steps of the calibration
CALIBRATION_DRAWS, BISECTIONS = 1000, 14


def nearest_distance(x: Tensor, rows: Tensor, chunk: int = 1024) -> Tensor:
    """The Euclidean distance from each row of ``x`` to its nearest row of ``rows``."""
    return torch.cat([torch.cdist(x[i:i + chunk], rows).min(1).values for i in range(0, x.shape[0], chunk)])


def _folds(z: Tensor, generator: torch.Generator) -> tuple[Tensor, list[Tensor], Tensor]:
    """The distinct rows of ``z`` (at most :data:`CALIBRATION_ROWS`), each fifth's complement, and
    the near-copy threshold: the 1% quantile of each fifth's distances to its complement (pooled)."""
    z = torch.unique(z, dim=0)  # repeated rows would put the threshold at distance 0
    if z.shape[0] > CALIBRATION_ROWS:
        z = z[torch.randperm(z.shape[0], generator=generator)[:CALIBRATION_ROWS]]
    folds = torch.randperm(z.shape[0], generator=generator) % min(5, z.shape[0])
    kept = [z[folds != k] for k in range(int(folds.max()) + 1)]
    threshold = torch.quantile(torch.cat([nearest_distance(z[folds == k], rows) for k, rows in enumerate(kept)]), 0.01)
    return z, kept, threshold


def near_copy_share(x: Tensor, rows: Tensor, generator: torch.Generator) -> float:
    """The share of ``x`` closer to a row of ``rows`` than the held-out report would count as
    fresh: its near-copy rule with each fifth of the distinct rows held out once (:func:`_folds`),
    each part of ``x`` judged against the four fifths the threshold was measured on."""
    if torch.unique(rows, dim=0).shape[0] < 2:
        return 0.0
    _, kept, threshold = _folds(rows.double(), generator)
    parts = x.double().tensor_split(len(kept))
    copies = torch.cat([nearest_distance(part, rest) < threshold for part, rest in zip(parts, kept)])
    return float(copies.double().mean())


def copy_free_bandwidth(z: Tensor, shape: Tensor | None, generator: torch.Generator) -> float:
    """The smallest h at which the jitter of the module docstring (noise ``shape`` L, or none)
    makes at most :data:`COPY_SHARE` of draws of the distinct z-scored rows ``z`` near-copies. In five
    folds, each fifth of the rows is held out once from the other four fifths; the threshold is
    the 1% quantile of the held-out rows' distances to their four fifths (pooled over the folds, so
    that it rests on every row), and the draws of each four fifths are judged against them."""
    # repeated rows would put the threshold at distance 0, where no jitter counts as a copy
    if torch.unique(z, dim=0).shape[0] < 2:
        return 0.0
    z, kept, threshold = _folds(z, generator)
    each = -(-CALIBRATION_DRAWS // len(kept))
    draws = [rows[torch.randint(rows.shape[0], (each,), generator=generator)] for rows in kept]
    noises = [torch.randn(d.shape, generator=generator, dtype=z.dtype) for d in draws]
    if shape is not None:
        noises = [noise @ shape.T for noise in noises]
    # z-scores have mean 0: the jitter is (x + h xi) / sqrt(1 + h^2); the same noise at every h,
    # so that the share of copies falls as h grows (towards the 1% of fresh rows) and bisection
    # finds where it crosses the allowed share
    low, high = 0.0, 4.0
    for _ in range(BISECTIONS):
        h = (low + high) / 2
        copies = torch.cat([nearest_distance((d + h * noise) / math.sqrt(1 + h * h), rows) < threshold
                            for d, noise, rows in zip(draws, noises, kept)]).double().mean()
        low, high = (h, high) if copies > COPY_SHARE else (low, h)
    return high


class BatchSmoother:
    """The variance-preserving jitter of the module docstring for the rows of one table.

    ``bandwidth``: h, the jitter's standard deviation per feature in units of that feature's
    standard deviation; ``mean``, ``std``: the training rows' per-feature mean and deviation;
    ``shape``: L with L L^T the noise's covariance in z-scores (None: the identity)."""

    def __init__(self, bandwidth: float, mean: Tensor, std: Tensor, shape: Tensor | None = None):
        self.bandwidth, self.mean, self.std, self.shape = float(bandwidth), mean, std, shape

    @classmethod
    def fit(cls, rows: Tensor, smoothing: float, correlation: float = 0.0,
            copy_scale: Tensor | None = None) -> "BatchSmoother":
        """h = ``smoothing`` x :func:`copy_free_bandwidth` of the z-scored ``rows``; the noise's
        covariance ``correlation`` R + (1 - ``correlation``) I (its trace stays d, so the jitter's
        mean squared length is h^2 d whatever its shape). ``copy_scale``: the length of one
        z-score of each feature where copies are judged (None: z-scores themselves); a principal
        space's coefficients are judged in pixels, where each counts by its standard deviation."""
        if rows.ndim != 2 or rows.shape[0] < 2:
            raise ValueError(f"train.data_smoothing needs a table of at least 2 rows of vectors, got shape "
                             f"{tuple(rows.shape)}; set train.data_smoothing=0")
        flat = rows.double()
        mean, std = flat.mean(0), flat.std(0, correction=0)
        # a constant feature has std 0, so it gets no jitter and stays constant
        z = (flat - mean) / torch.where(std > 0, std, torch.ones_like(std))
        factor = None
        if correlation > 0:
            shape = correlation * torch.cov(z.T, correction=0) + (1 - correlation) * torch.eye(z.shape[1], dtype=z.dtype)
            values, vectors = torch.linalg.eigh(shape)
            factor = vectors * values.clamp(min=0).sqrt()
        if copy_scale is None:
            bandwidth = copy_free_bandwidth(z, factor, torch.Generator().manual_seed(0))
        else:  # the same jitter, its copies measured in the scaled space
            scale = copy_scale.double()
            scaled_factor = torch.diag(scale) if factor is None else scale[:, None] * factor
            bandwidth = copy_free_bandwidth(z * scale, scaled_factor, torch.Generator().manual_seed(0))
        return cls(smoothing * bandwidth, mean.float(), std.float(), None if factor is None else factor.float())

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``x`` jittered: mu + (x - mu + h sigma xi) / sqrt(1 + h^2), xi = L eps, eps ~ N(0, I) from ``generator``."""
        if self.bandwidth == 0.0:
            return x
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        xi = torch.randn(x.shape, generator=generator, device=generator.device if generator else x.device)
        if self.shape is not None:
            xi = xi @ self.shape.to(xi.device).T
        return mean + (x - mean + self.bandwidth * std * xi.to(x.device)) / math.sqrt(1.0 + self.bandwidth ** 2)
