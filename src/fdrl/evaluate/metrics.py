"""Distribution metrics for vector data: energy distance and a classifier two-sample test."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def _mean_distance(a: Tensor, b: Tensor, exclude_diagonal: bool, chunk: int = 2048) -> float:
    """Mean Euclidean distance over pairs (a_i, b_j), in float64, chunked to bound memory."""
    total = 0.0
    for start in range(0, a.shape[0], chunk):
        block = torch.cdist(a[start : start + chunk], b)
        total += float(block.sum())
    pairs = a.shape[0] * b.shape[0]
    if exclude_diagonal:
        pairs -= a.shape[0]
    return total / pairs


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Unbiased (U-statistic) energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| between two samples."""
    x = x.reshape(x.shape[0], -1).double()
    y = y.reshape(y.shape[0], -1).double()
    return 2 * _mean_distance(x, y, False) - _mean_distance(x, x, True) - _mean_distance(y, y, True)


def c2st_accuracy(x: Tensor, y: Tensor, seed: int = 0, hidden: tuple[int, ...] = (64, 64)) -> float:
    """Held-out accuracy of a small MLP classifier telling ``x`` from ``y`` (0.5 = indistinguishable).

    Half of each set trains the classifier, the other half scores it. Clumped or collapsed
    samples that a distance averaged over the whole set lets pass are caught here.
    """
    from sklearn.neural_network import MLPClassifier

    n = min(x.shape[0], y.shape[0])
    features = torch.cat([x[:n], y[:n]]).reshape(2 * n, -1).double().numpy()
    labels = np.r_[np.zeros(n), np.ones(n)]
    order = np.random.default_rng(seed).permutation(2 * n)
    features, labels = features[order], labels[order]
    mean, std = features.mean(0), features.std(0) + 1e-8
    features = (features - mean) / std
    half = n
    clf = MLPClassifier(hidden, max_iter=300, early_stopping=True, random_state=seed)
    clf.fit(features[:half], labels[:half])
    return float(clf.score(features[half:], labels[half:]))


def evaluate_vectors(samples: Tensor, data: Tensor, data_again: Tensor, prior: Tensor, seed: int = 0) -> dict[str, Any]:
    """The toy-study report: energy distance of samples, prior and a fresh data set (the floor)
    to the same data samples, their ratio, and the classifier two-sample accuracy."""
    ed_samples = energy_distance(samples, data)
    ed_prior = energy_distance(prior, data)
    return {
        "n": int(samples.shape[0]),
        "energy_distance": ed_samples,
        "energy_distance_prior": ed_prior,
        "energy_distance_floor": energy_distance(data_again, data),
        "energy_distance_ratio": ed_samples / ed_prior if ed_prior > 0 else float("nan"),
        "c2st_accuracy": c2st_accuracy(samples, data, seed),
        "c2st_accuracy_floor": c2st_accuracy(data_again, data, seed),
    }
