"""Distribution metrics and the one metric interface, :data:`METRICS`.

Every metric is ``METRICS[name](samples, reference, **options) -> float``; vector metrics
flatten each sample. Lower is better except ``c2st`` (0.5 = indistinguishable).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from fdrl.config import METRIC_NAMES
from fdrl.evaluate.classifier_report import classifier_frechet_distance
from fdrl.evaluate.fid import fid_from_samples
from fdrl.evaluate.frechet import frechet_feature_distance


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).double()


def _mean_pairwise(
    a: Tensor,
    b: Tensor,
    exclude_diagonal: bool,
    transform: Callable[[Tensor], Tensor] | None = None,
    chunk: int = 2048,
) -> float:
    """Mean of ``transform(|a_i - b_j|)`` (default: the distance itself) over pairs, chunked to
    bound memory; with ``exclude_diagonal`` (``a`` is ``b``) the pairs i = j are left out."""
    total = 0.0
    for start in range(0, a.shape[0], chunk):
        block = torch.cdist(a[start : start + chunk], b)
        values = block if transform is None else transform(block)
        if exclude_diagonal:
            values.diagonal(offset=start).zero_()
        total += float(values.sum())
    pairs = a.shape[0] * b.shape[0]
    if exclude_diagonal:
        pairs -= a.shape[0]
    return total / pairs


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Unbiased (U-statistic) energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| between two samples."""
    x, y = _flat(x), _flat(y)
    return 2 * _mean_pairwise(x, y, False) - _mean_pairwise(x, x, True) - _mean_pairwise(y, y, True)


def median_bandwidth(x: Tensor, y: Tensor, max_points: int = 1000) -> float:
    """The median heuristic: the median distance between distinct points of the pooled sample,
    over at most ``max_points`` of each set (a fixed-seed random subset) to bound the cost."""
    g = torch.Generator().manual_seed(0)
    subsets = [s[torch.randperm(s.shape[0], generator=g)[:max_points]] for s in (_flat(x), _flat(y))]
    return float(torch.pdist(torch.cat(subsets)).median())


def mmd2(x: Tensor, y: Tensor, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD with the RBF kernel exp(-|a - b|^2 / (2 sigma^2)).

    ``sigma`` defaults to :func:`median_bandwidth`. The U-statistic can be slightly negative
    when the two distributions are equal.
    """
    x, y = _flat(x), _flat(y)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"MMD needs at least 2 samples in each set, got {x.shape[0]} and {y.shape[0]}")
    sigma = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if not sigma > 0:
        raise ValueError(f"MMD bandwidth must be > 0, got {sigma} (are all points identical?)")

    def kernel(d: Tensor) -> Tensor:
        return torch.exp(-(d**2) / (2 * sigma**2))

    within = _mean_pairwise(x, x, True, kernel) + _mean_pairwise(y, y, True, kernel)
    return within - 2 * _mean_pairwise(x, y, False, kernel)


def _wasserstein_1d(u: Tensor, v: Tensor, p: float) -> Tensor:
    """W_p^p between the empirical distributions of the columns of ``u`` (m, L) and ``v`` (n, L):
    the integral over t in (0, 1) of |F_u^-1(t) - F_v^-1(t)|^p, exact for unequal m and n."""
    m, n = u.shape[0], v.shape[0]
    u, v = u.sort(0).values, v.sort(0).values
    f64 = torch.float64
    levels = torch.cat([torch.arange(1, m + 1, dtype=f64) / m, torch.arange(1, n + 1, dtype=f64) / n]).unique()
    widths = torch.diff(levels, prepend=levels.new_zeros(1))
    mid = levels - widths / 2
    iu = (mid * m).floor().long().clamp(max=m - 1)
    iv = (mid * n).floor().long().clamp(max=n - 1)
    return (widths[:, None] * (u[iu] - v[iv]).abs() ** p).sum(0)


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 128, p: float = 2.0, seed: int = 0) -> float:
    """Sliced p-Wasserstein distance: (mean over random unit directions of W_p^p of the
    projected samples)^(1/p), with directions drawn from a generator seeded by ``seed``."""
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples have {x.shape[1]} dimensions but the reference {y.shape[1]}")
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    return float(_wasserstein_1d(x @ directions, y @ directions, p).mean() ** (1 / p))


#: above this many features, the two-sample classifier sees the top principal components only
C2ST_MAX_FEATURES = 256
C2ST_COMPONENTS = 64


#: the fewest points a tree leaf may hold: scikit-learn's default of 20 for large training folds,
#: down to :data:`C2ST_MIN_LEAF` for small ones (a default leaf of 20 points cannot split a fold of
#: 32 training points, so every small test scored exactly 0.5)
C2ST_MAX_LEAF, C2ST_MIN_LEAF = 20, 2
#: a leaf holds at least 1 / C2ST_LEAF_DIVISOR of the training fold (within the bounds above)
C2ST_LEAF_DIVISOR = 20


def c2st_counts(x: Tensor, y: Tensor, seed: int = 0, folds: int = 5) -> tuple[int, int]:
    """Classifier two-sample test: gradient-boosted trees (scikit-learn's
    ``HistGradientBoostingClassifier``) tell ``x`` from ``y``, each of the 2n points (n of each
    set) scored once by a classifier of ``folds`` stratified, shuffled folds that never saw it.
    Returns (points classified correctly, 2n): a binomial count, so its uncertainty is known.

    Trees need no feature scaling. A leaf holds at least a twentieth of the training fold
    (:data:`C2ST_MIN_LEAF` to :data:`C2ST_MAX_LEAF` points), so small sets are split as
    readily as large ones. Above :data:`C2ST_MAX_FEATURES` features (images) a PCA to
    :data:`C2ST_COMPONENTS` components, fitted inside each fold, comes first. (An MLP with
    early stopping, used before, stopped before it had learned and called visibly wrong
    samples indistinguishable: 0.53 where trained classifiers reach 0.70.)
    """
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    n = min(x.shape[0], y.shape[0])
    if n < folds:
        raise ValueError(f"C2ST needs at least {folds} samples in each set, got {n}")
    features = _flat(torch.cat([x[:n], y[:n]])).numpy()
    labels = np.r_[np.zeros(n), np.ones(n)]
    fold_size = 2 * n - math.ceil(2 * n / folds)  # training points of the smallest training fold
    leaf = min(C2ST_MAX_LEAF, max(C2ST_MIN_LEAF, fold_size // C2ST_LEAF_DIVISOR))
    trees = HistGradientBoostingClassifier(min_samples_leaf=leaf, random_state=seed)
    clf = trees if features.shape[1] <= C2ST_MAX_FEATURES else make_pipeline(
        PCA(min(C2ST_COMPONENTS, fold_size), random_state=seed), trees)
    with threadpool_limits(limits=1):  # small problems: one thread is fastest on shared cores
        predicted = cross_val_predict(clf, features, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return int((predicted == labels).sum()), 2 * n


def c2st_accuracy(x: Tensor, y: Tensor, seed: int = 0, folds: int = 5) -> float:
    """The cross-validated accuracy of the classifier two-sample test (:func:`c2st_counts`):
    0.5 = indistinguishable. Equal numbers of each set are used."""
    correct, total = c2st_counts(x, y, seed, folds)
    return correct / total


def classifier_fd(
    samples: Tensor,
    reference: Any,
    extractor: Callable[[Tensor], Tensor] | None = None,
    classifier: Any = None,
    batch_size: int = 256,
) -> float:
    """The Frechet distance in a feature space: that of ``extractor`` (any module or callable
    mapping inputs to features), or the penultimate features of ``classifier`` (a
    :class:`fdrl.classifier.DigitClassifier` or the directory of a saved one). ``reference``
    is images or :class:`~fdrl.evaluate.frechet.FeatureStats` of the same features."""
    if (extractor is None) == (classifier is None):
        raise ValueError("classifier_fd needs exactly one of extractor= (a feature extractor) or classifier= "
                         "(a digit classifier or its directory)")
    if classifier is not None:
        return classifier_frechet_distance(samples, reference, classifier, batch_size)
    return frechet_feature_distance(samples, reference, extractor, batch_size)


#: name -> metric(samples, reference, **options) -> float. ``fid`` takes images in [-1, 1] (or
#: reference statistics) and ``inception_weights``, ``batch_size``, ``device``;
#: ``classifier_fd`` needs ``extractor=`` (any module or callable mapping inputs to features)
#: or ``classifier=`` (a digit classifier of :mod:`fdrl.classifier`, or its directory).
METRICS: dict[str, Callable[..., float]] = {
    "energy": energy_distance,
    "mmd": mmd2,
    "sliced_wasserstein": sliced_wasserstein,
    "c2st": c2st_accuracy,
    "fid": fid_from_samples,
    "classifier_fd": classifier_fd,
}


assert tuple(METRICS) == METRIC_NAMES, "fdrl.config.METRIC_NAMES must list fdrl.evaluate.METRICS"


def get_metric(name: str) -> Callable[..., float]:
    """``METRICS[name]``, with an error listing the valid names."""
    if name not in METRICS:
        raise ValueError(f"unknown metric '{name}'; choose one of: {', '.join(METRICS)}")
    return METRICS[name]
