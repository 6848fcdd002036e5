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

The bandwidth follows the data's own spacing, so that it shrinks with the number of rows n as
n^(-1/d) in d effective dimensions: h sqrt(d) (the length of the jitter, in standard deviations)
is ``smoothing`` times the median distance from a training row to its nearest neighbour (in
z-scores). Large tables in few dimensions get a negligible h (5000 rows of the 2-D moons:
h ~ 0.01), a few hundred rows in 10-30 dimensions an h of 0.4-0.5.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: the nearest-neighbour distances are measured on at most this many rows (a random subset beyond;
#: the subset's spacing is wider than the whole table's, by (n / NN_ROWS)^(1/d))
NN_ROWS = 20000


def median_nearest_distance(rows: Tensor, generator: torch.Generator | None = None, chunk: int = 2048) -> float:
    """The median Euclidean distance from a row of ``rows`` (n, d) to its nearest other row."""
    if rows.shape[0] > NN_ROWS:
        rows = rows[torch.randperm(rows.shape[0], generator=generator)[:NN_ROWS]]
    rows = rows.double()
    nearest = []
    for start in range(0, rows.shape[0], chunk):
        d = torch.cdist(rows[start:start + chunk], rows)
        d[torch.arange(d.shape[0]), torch.arange(start, start + d.shape[0])] = math.inf  # not itself
        nearest.append(d.min(1).values)
    return float(torch.cat(nearest).median())


class BatchSmoother:
    """The variance-preserving jitter of the module docstring for the rows of one table.

    ``bandwidth``: h, the jitter's standard deviation per feature in units of that feature's
    standard deviation; ``mean``, ``std``: the training rows' per-feature mean and deviation;
    ``shape``: L with L L^T the noise's covariance in z-scores (None: the identity)."""

    def __init__(self, bandwidth: float, mean: Tensor, std: Tensor, shape: Tensor | None = None):
        self.bandwidth, self.mean, self.std, self.shape = float(bandwidth), mean, std, shape

    @classmethod
    def fit(cls, rows: Tensor, smoothing: float, correlation: float = 0.0) -> "BatchSmoother":
        """h = ``smoothing`` x (median nearest-neighbour distance of the z-scored ``rows``) / sqrt(d);
        the noise's covariance ``correlation`` R + (1 - ``correlation``) I (its trace stays d, so
        the jitter's mean squared length is h^2 d whatever its shape)."""
        if rows.ndim != 2 or rows.shape[0] < 2:
            raise ValueError(f"train.data_smoothing needs a table of at least 2 rows of vectors, got shape "
                             f"{tuple(rows.shape)}; set train.data_smoothing=0")
        flat = rows.double()
        mean, std = flat.mean(0), flat.std(0, correction=0)
        # a constant feature has std 0, so it gets no jitter and stays constant
        z = (flat - mean) / torch.where(std > 0, std, torch.ones_like(std))
        spacing = median_nearest_distance(z, torch.Generator().manual_seed(0))
        factor = None
        if correlation > 0:
            shape = correlation * torch.cov(z.T, correction=0) + (1 - correlation) * torch.eye(z.shape[1], dtype=z.dtype)
            values, vectors = torch.linalg.eigh(shape)
            factor = (vectors * values.clamp(min=0).sqrt()).float()
        return cls(smoothing * spacing / math.sqrt(rows.shape[1]), mean.float(), std.float(), factor)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``x`` jittered: mu + (x - mu + h sigma xi) / sqrt(1 + h^2), xi = L eps, eps ~ N(0, I) from ``generator``."""
        if self.bandwidth == 0.0:
            return x
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        xi = torch.randn(x.shape, generator=generator, device=generator.device if generator else x.device)
        if self.shape is not None:
            xi = xi @ self.shape.to(xi.device).T
        return mean + (x - mean + self.bandwidth * std * xi.to(x.device)) / math.sqrt(1.0 + self.bandwidth ** 2)
