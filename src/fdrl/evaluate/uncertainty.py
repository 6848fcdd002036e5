"""How far a held-out score can move by chance: a binomial interval for accuracies and shares,
and the energy distance with its jackknife standard error.

Both are computed from the points already scored, at no more cost than the score itself.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: the normal quantile of a two-sided 95% interval
Z95 = 1.959963984540054


def wilson_interval(successes: float, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``successes / total`` (95% by
    default): unlike the normal approximation it stays inside [0, 1] and is not of zero width
    at 0 or 1 successes. ``successes`` may be fractional (ties counted as halves)."""
    if total <= 0:
        raise ValueError(f"a binomial interval needs at least one trial, got {total}")
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


def _row_sums(a: Tensor, b: Tensor, same: bool = False, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Row and column sums of the distance matrix |a_i - b_j|, in chunks of ``a``'s rows; with
    ``same`` (``a`` is ``b``) the diagonal counts as 0 (cdist's matrix-product form leaves
    rounding error there)."""
    rows, cols = [], torch.zeros(b.shape[0], dtype=torch.float64)
    for start in range(0, a.shape[0], chunk):
        block = torch.cdist(a[start:start + chunk], b)
        if same:
            block.diagonal(offset=start).zero_()
        rows.append(block.sum(1))
        cols += block.sum(0)
    return torch.cat(rows), cols


def energy_distance_se(x: Tensor, y: Tensor) -> tuple[float, float]:
    """The unbiased (U-statistic) energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| between two
    samples and its two-sample jackknife standard error.

    Leaving out one point of ``x`` (or of ``y``) changes only sums of the distance matrices'
    rows, so every leave-one-out value follows from three row-sum vectors: the same pairwise
    distances as the estimate itself, no resampling. The two parts of the variance (over ``x``
    and over ``y``) add. By the Efron-Stein inequality the jackknife variance errs on the
    large side; when the two distributions are equal the statistic is degenerate and both it
    and its standard error shrink like 1/m instead of 1/sqrt(m)."""
    x, y = x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()
    m, n = x.shape[0], y.shape[0]
    if m < 3 or n < 3:
        raise ValueError(f"the energy distance's standard error needs at least 3 points in each set, got {m} and {n}")
    xy_rows, xy_cols = _row_sums(x, y)
    xx_rows, _ = _row_sums(x, x, same=True)
    yy_rows, _ = _row_sums(y, y, same=True)
    s_xy, s_xx, s_yy = xy_rows.sum(), xx_rows.sum(), yy_rows.sum()
    value = 2 * s_xy / (m * n) - s_xx / (m * (m - 1)) - s_yy / (n * (n - 1))
    # leave x_i out: its row of D_xy and its row and column of D_xx go
    without_x = 2 * (s_xy - xy_rows) / ((m - 1) * n) - (s_xx - 2 * xx_rows) / ((m - 1) * (m - 2)) - s_yy / (n * (n - 1))
    without_y = 2 * (s_xy - xy_cols) / (m * (n - 1)) - s_xx / (m * (m - 1)) - (s_yy - 2 * yy_rows) / ((n - 1) * (n - 2))
    variance = (m - 1) / m * ((without_x - without_x.mean()) ** 2).sum() \
        + (n - 1) / n * ((without_y - without_y.mean()) ** 2).sum()
    return float(value), float(variance.sqrt())
