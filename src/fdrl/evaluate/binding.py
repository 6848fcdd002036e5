"""A metric bound to a run's reference data: what ``fdrl evaluate``, ``fdrl ablate-steps`` and
the trainer's periodic evaluation (``train.eval_every``) share.

:func:`bind_metric` turns a metric name of :data:`fdrl.evaluate.METRICS` and a dataset into a
:class:`BoundMetric`, a function of the samples alone:

* ``fid``: Inception statistics of every training image of a finite dataset (App. F:
  "against the training set"), or ``n`` fresh draws of an infinite source, cached on disk
  under a key naming the dataset, its preprocessing and the extractor;
* ``classifier_fd``: the same reference in the penultimate features of a digit classifier
  (statistics cached under the classifier's weights hash);
* every other metric (energy, mmd, sliced_wasserstein, c2st): ``n`` draws of an infinite source,
  or min(n, size) distinct rows of a finite dataset.

Lower values are better for every metric but ``c2st``, where 0.5 (indistinguishable) is best:
:meth:`BoundMetric.better` knows which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fdrl.classifier import PenultimateFeatures, load_classifier
from fdrl.evaluate.fid import fid_from_samples, fid_reference_stats
from fdrl.evaluate.frechet import cached_stats, default_cache_dir, feature_stats, file_sha256, frechet_feature_distance
from fdrl.evaluate.metrics import METRICS, get_metric


def dataset_identity(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The data config, plus the SHA-256 of every data file it names (``path`` options), so
    cached reference statistics go stale when a file's content changes."""
    identity: dict[str, Any] = {"name": name, "params": dict(params)}
    files = {k: Path(v) for k, v in params.items() if isinstance(v, str) and Path(v).is_file()}
    if files:
        identity["sha256"] = {k: file_sha256(path) for k, path in files.items()}
    return identity


def reference_batches(data: Any, n: int, seed: int, batch: int) -> Iterator[Tensor]:
    """Every sample of a finite dataset, else ``n`` draws; read only when iterated."""
    if hasattr(data, "iter_batches"):
        yield from data.iter_batches(batch)
    else:
        yield data.draw(n, seed)


@dataclass
class BoundMetric:
    """``score(samples) -> float`` against a fixed reference, with what identifies it."""

    name: str
    score: Callable[[Tensor], float]
    dataset: dict[str, Any]
    reference_n: int
    extractor: dict[str, Any] | None = None
    #: the drawn reference (metrics on data draws), for figures; None for cached statistics
    reference: Tensor | None = field(default=None, repr=False)

    def __call__(self, samples: Tensor) -> float:
        return self.score(samples)

    def better(self, value: float, than: float | None) -> bool:
        """Whether ``value`` beats ``than`` (None: nothing to beat)."""
        if than is None:
            return True
        if self.name == "c2st":
            return abs(value - 0.5) < abs(than - 0.5)
        return value < than


def bind_metric(
    name: str,
    data: Any,
    dataset: dict[str, Any],
    n: int,
    seed: int = 0,
    batch_size: int | None = None,
    classifier: str | Path | None = None,
    inception_weights: str | Path | None = None,
    stats_cache: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> BoundMetric:
    """Bind metric ``name`` to ``data`` (a :mod:`fdrl.data` source; ``dataset`` is its
    identity from :func:`dataset_identity`). Raises ValueError with one line when the metric
    cannot apply (FID on vectors, classifier_fd without a classifier or of the wrong shape)."""
    metric = get_metric(name)  # an unknown name raises, listing the valid ones
    dataset = dict(dataset)
    finite = hasattr(data, "iter_batches")
    if name in ("fid", "classifier_fd"):
        dataset["subset"] = "all" if finite else f"draw n={n} seed={seed}"
    if name == "classifier_fd":
        return _bind_classifier(data, dataset, n, seed, batch_size or 256, classifier, stats_cache, device)
    if name == "fid":
        if len(data.shape) != 3:
            raise ValueError(
                f"FID needs image data (C, H, W); these samples have shape {tuple(data.shape)}: "
                f"use one of {', '.join(m for m in METRICS if m not in ('fid', 'classifier_fd'))}"
            )
        batch = batch_size or 50
        stats = fid_reference_stats(reference_batches(data, n, seed, batch), dataset, cache_dir=stats_cache,
                                    batch_size=batch, inception_weights=inception_weights, device=device)
        return BoundMetric(name, lambda samples: fid_from_samples(samples, stats, batch_size=batch,
                                                                  inception_weights=inception_weights, device=device),
                           dataset, stats.n, extractor=stats.key["extractor"])
    # a finite dataset gives distinct rows: drawn with replacement, n = 2000 from 1200 rows repeats
    # most of them, and a two-sample classifier then learns the repeated points themselves (C2ST
    # 0.66 instead of 0.51 for fresh draws of the data's own Gaussian, tests/test_eval_metrics.py)
    reference = data.subset(n, seed) if finite else data.draw(n, seed)
    dataset["subset"] = f"{'distinct rows' if finite else 'draw'} n={reference.shape[0]} seed={seed}"
    return BoundMetric(name, lambda samples: metric(samples, reference), dataset, reference.shape[0],
                       reference=reference)


def _bind_classifier(data: Any, dataset: dict[str, Any], n: int, seed: int, batch: int,
                     classifier: str | Path | None, stats_cache: str | Path | None,
                     device: str | torch.device) -> BoundMetric:
    if classifier is None:
        raise ValueError("classifier_fd needs a feature extractor: pass --classifier DIR (in training: "
                         "train.eval_classifier=DIR; train one with: fdrl train-classifier digits --out DIR)")
    model = load_classifier(classifier, device=device)
    if tuple(data.shape) != model.in_shape:
        raise ValueError(f"classifier '{classifier}' takes images of shape {model.in_shape}, "
                         f"but the samples have shape {tuple(data.shape)}")
    extractor = PenultimateFeatures(model)
    key = {"dataset": dataset, "extractor": extractor.identity}
    stats = cached_stats(stats_cache or default_cache_dir(), key,
                         lambda: feature_stats(reference_batches(data, n, seed, batch), extractor, batch))
    return BoundMetric("classifier_fd", lambda samples: frechet_feature_distance(samples, stats, extractor, batch),
                       dataset, stats.n, extractor={**extractor.identity, "path": str(classifier)})
