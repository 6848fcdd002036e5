"""Scoring a trained model on held-out data, beside the baselines a user would try first.

A generative model is only as good as its distance to data it never saw, compared with what
simpler models reach. :func:`heldout_report` scores ``m`` samples (Algorithm 2, EMA weights)
against the held-out part of the data (a vector file's held-out rows, an image dataset's test
split, or fresh draws of a toy distribution) with the energy distance and the classifier
two-sample test (C2ST accuracy, 0.5 = indistinguishable), and scores the same way:

* ``gaussian``: the Gaussian of Eq. 8 fitted to the training part (the data-dependent prior);
* ``gmm``: a Gaussian mixture (scikit-learn, full covariances, :data:`GMM_COMPONENTS`
  components) fitted to the training part, for vectors of at most :data:`GMM_MAX_DIM` features;
* ``prior``: draws of the run's prior (where the flow starts);
* ``floor``: training rows against held-out rows: what a perfect model would score.

A memorisation check compares each sample's distance to its nearest training row with the
held-out rows' distances to theirs: a model that copies its training data has samples much
closer to training rows (ratio well below 1, many near-copies) than fresh data is.

Scores are computed in the model's units: standardised features for a user's vectors (so
that no feature dominates a distance by its units), pixels in [-1, 1] for images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fdrl.evaluate.metrics import c2st_accuracy, energy_distance

GMM_COMPONENTS = 10
#: above this many features the mixture baseline is left out (its full covariances grow as d^2)
GMM_MAX_DIM = 256
#: at most this many training rows are searched for nearest neighbours
NN_MAX_TRAIN = 20000
#: the C2ST's cross-validation folds: with fewer rows than this in a set it is not computed
C2ST_FOLDS = 5


def scores(x: Tensor, heldout: Tensor, seed: int) -> dict[str, float]:
    """Energy distance and C2ST accuracy of ``x`` against ``heldout``; the accuracy is NaN for
    sets too small for :data:`C2ST_FOLDS` folds (the report says so: :func:`heldout_report`)."""
    small = min(x.shape[0], heldout.shape[0]) < C2ST_FOLDS
    return {"energy_distance": energy_distance(x, heldout),
            "c2st_accuracy": float("nan") if small else c2st_accuracy(x, heldout, seed, folds=C2ST_FOLDS)}


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).float()


def nearest_distances(x: Tensor, rows: Tensor, chunk: int = 1024) -> Tensor:
    """Each point of ``x``'s Euclidean distance to its nearest row of ``rows``."""
    rows = _flat(rows)
    return torch.cat([torch.cdist(_flat(x[i:i + chunk]), rows).min(1).values for i in range(0, x.shape[0], chunk)])


def memorisation(samples: Tensor, train: Tensor, heldout: Tensor) -> dict[str, float]:
    """Nearest-training-row distances of samples against those of held-out rows: the median
    ratio (about 1: no copying; well below 1: samples sit on training rows) and the share of
    samples closer to a training row than all but 1% of held-out rows are (about 0.01 with no
    copying)."""
    sample_d, heldout_d = nearest_distances(samples, train), nearest_distances(heldout, train)
    close = float(torch.quantile(heldout_d.double(), 0.01))
    return {
        "sample_to_train_median": float(sample_d.median()),
        "heldout_to_train_median": float(heldout_d.median()),
        "median_ratio": float(sample_d.median() / heldout_d.median().clamp_min(1e-12)),
        "share_closer_than_heldout_1pct": float((sample_d < close).double().mean()),
    }


def gaussian_mixture_draws(train: Tensor, n: int, seed: int, components: int = GMM_COMPONENTS) -> Tensor:
    """``n`` draws of a Gaussian mixture with full covariances fitted to ``train`` (at most one
    component per 5 training rows)."""
    from sklearn.mixture import GaussianMixture

    flat = _flat(train).double().numpy()
    k = max(1, min(components, flat.shape[0] // 5))
    for reg_covar in (1e-6, 1e-4, 1e-2):  # duplicated or discrete rows make a component singular
        try:
            gmm = GaussianMixture(k, covariance_type="full", random_state=seed, reg_covar=reg_covar).fit(flat)
            break
        except ValueError:
            continue
    else:
        raise ValueError("the Gaussian mixture baseline could not be fitted (singular covariances)")
    draws, _ = gmm.sample(n)
    order = np.random.default_rng(seed).permutation(n)  # sklearn returns draws grouped by component
    return torch.from_numpy(draws[order]).float().reshape(n, *train.shape[1:])


def heldout_report(samples: Tensor, train: Tensor, heldout: Tensor, prior_draws: Tensor, seed: int = 0,
                   value_range: tuple[float, float] | None = None,
                   project: Callable[[Tensor], Tensor] | None = None) -> dict[str, Any]:
    """Samples, baselines and the floor scored against ``heldout`` (module docstring). All
    sets are cut to the same size m = min(len(samples), len(heldout)); ``train`` is the
    training part (the floor uses m of its rows, the Gaussian and the mixture are fitted to
    all of it). ``value_range`` clamps baseline draws as the data's samples are clamped;
    ``project`` maps baseline and prior draws to the rows they stand for, as the samples were
    (:meth:`fdrl.data.ArrayData.project`: a table's labels and integers)."""
    from fdrl.priors import GaussianPrior

    m = min(samples.shape[0], heldout.shape[0])
    samples, heldout = samples[:m], heldout[:m]
    g = torch.Generator().manual_seed(seed)
    train_m = train[torch.randperm(train.shape[0], generator=g)[:m]]
    project = project or (lambda x: x)
    gaussian = project(GaussianPrior.fit([_flat(train)], shape=tuple(train.shape[1:]), clamp=value_range).sample(m, g))
    report: dict[str, Any] = {"n": m, **scores(samples, heldout, seed)}
    baselines: dict[str, dict[str, float]] = {"gaussian": scores(gaussian, heldout, seed)}
    if math.prod(train.shape[1:]) <= GMM_MAX_DIM:
        try:
            mixture = project(gaussian_mixture_draws(train, m, seed))
        except ValueError:
            mixture = None  # reported as absent rather than failing the whole report
        if mixture is not None:
            baselines["gmm"] = scores(mixture if value_range is None else mixture.clamp(*value_range), heldout, seed)
    baselines["prior"] = scores(project(prior_draws[:m]), heldout, seed)
    floor = scores(train_m, heldout, seed)
    train_nn = train if train.shape[0] <= NN_MAX_TRAIN else train[torch.randperm(train.shape[0], generator=g)[:NN_MAX_TRAIN]]
    report.update({
        "energy_distance_prior": baselines["prior"]["energy_distance"],
        "energy_distance_floor": floor["energy_distance"],
        "energy_distance_ratio": report["energy_distance"] / baselines["prior"]["energy_distance"]
        if baselines["prior"]["energy_distance"] > 0 else float("nan"),
        "c2st_accuracy_floor": floor["c2st_accuracy"],
        "baselines": baselines,
        "floor": floor,
        "memorisation": memorisation(samples, train_nn, heldout),
    })
    if m < C2ST_FOLDS:
        report["notes"] = [f"only {m} rows to score: the C2ST needs {C2ST_FOLDS} in each set, so its accuracies "
                           "are NaN; hold out more rows (data.test_fraction) or use more data"]
    return report


def evaluate_heldout(model: Any, config: Any, data: Any, n: int) -> dict[str, Any]:
    """:func:`heldout_report` for a trained ``model`` (an :class:`fdrl.FDRL`) of a run with
    ``config`` and training data source ``data``: up to ``n`` samples against the held-out part
    (:func:`fdrl.data.build_held_out`), fresh draws for toy data, or, for a finite dataset with
    nothing held out, the training data itself (then memorisation cannot be seen, and the
    report says so under ``reference``)."""
    from fdrl import seeding
    from fdrl.data import build_held_out

    seed = config.train.seed
    held = build_held_out(config.data.name, config.data.params, data)
    finite = hasattr(data, "iter_batches")
    if held is not None:
        heldout = held.subset(n, seed + 2)
        reference = f"held-out part ({len(held)} samples, never trained on)"
    elif finite:
        heldout = data.subset(n, seed + 2)
        reference = "training data (nothing held out: data.test_fraction=0; memorisation cannot be seen)"
    else:
        heldout = data.draw(n, seed + 2)
        reference = "fresh draws of the data distribution"
    train = data.subset(max(n, NN_MAX_TRAIN), seed + 4) if finite else data.draw(n, seed + 4)
    m = heldout.shape[0]
    samples = model.sample(m, seed=seed + 1, batch_size=min(m, 500), standardized=True)
    prior_draws = model.prior.sample(m, seeding.generator(seed + 3, "eval"))
    report = heldout_report(samples, train, heldout, prior_draws, seed, getattr(data, "value_range", None),
                            getattr(data, "project", None))
    units = "standardised features" if getattr(data, "scaler", None) is not None else "the data's own"
    return {"reference": reference, "units": units, **report}
