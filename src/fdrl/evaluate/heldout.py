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

Every score comes with its uncertainty: a 95% Wilson interval for the C2ST accuracy (2m
points, each scored once) and a jackknife standard error for the energy distance
(:mod:`fdrl.evaluate.uncertainty`), so that a difference smaller than the noise is not read
as one. :func:`memorisation` asks whether samples copy training rows, and
:func:`fdrl.report_text.verdict` says in words what the numbers mean (stored as ``verdict``).
When the data source can decode model-unit rows into the user's table (``decode`` and
``column_kinds``), per-column scores of :mod:`fdrl.evaluate.tabular` are added for fdrl and
the mixture (``columns``).

Scores are computed in the model's units: standardised features for a user's vectors (so
that no feature dominates a distance by its units), pixels in [-1, 1] for images (also for a
model that flows in a principal space of them: its samples are decoded into images).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fdrl import seeding
from fdrl.data import build_held_out
from fdrl.evaluate.metrics import c2st_counts, energy_distance
from fdrl.priors.mixture import component_count
from fdrl.evaluate.tabular import table_scores
from fdrl.evaluate.uncertainty import energy_distance_se, wilson_interval
from fdrl.priors import GaussianPrior
from fdrl.report_text import verdict

GMM_COMPONENTS = 10
#: above this many features the mixture baseline is left out (its full covariances grow as d^2)
GMM_MAX_DIM = 256
#: at most this many training rows are searched for nearest neighbours
NN_MAX_TRAIN = 20000
#: DCR share needs at least this many held-out rows that do not occur in training
DCR_MIN_ROWS = 20
#: the C2ST's cross-validation folds: with fewer rows than this in a set it is not computed
C2ST_FOLDS = 5
#: rows per call of the estimator when the report measures its ratio
RATIO_BATCH = 500


def scores(x: Tensor, heldout: Tensor, seed: int) -> dict[str, Any]:
    """Energy distance with its standard error and C2ST accuracy with its 95% interval, of
    ``x`` against ``heldout``; the accuracy and its interval are NaN for sets too small for
    :data:`C2ST_FOLDS` folds (the report says so: :func:`heldout_report`)."""
    try:
        energy, energy_se = energy_distance_se(x, heldout)
    except ValueError:  # too few points for the jackknife
        energy, energy_se = energy_distance(x, heldout), float("nan")
    if min(x.shape[0], heldout.shape[0]) < C2ST_FOLDS:
        return {"energy_distance": energy, "energy_distance_se": energy_se, "c2st_accuracy": float("nan"),
                "c2st_accuracy_ci": [float("nan"), float("nan")]}
    correct, total = c2st_counts(x, heldout, seed, folds=C2ST_FOLDS)
    return {"energy_distance": energy, "energy_distance_se": energy_se, "c2st_accuracy": correct / total,
            "c2st_accuracy_ci": list(wilson_interval(correct, total))}


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).float()


def row_ids(*sets: Tensor) -> list[Tensor]:
    """For each set, an id per row that two rows (of any of the sets) share exactly when they
    are equal."""
    flat = [_flat(s) for s in sets]
    _, inverse = torch.unique(torch.cat(flat), dim=0, return_inverse=True)
    return list(inverse.split([f.shape[0] for f in flat]))


def nearest_distances(x: Tensor, rows: Tensor, x_ids: Tensor | None = None, rows_ids: Tensor | None = None,
                      chunk: int = 1024) -> Tensor:
    """Each point of ``x``'s Euclidean distance to its nearest row of ``rows``; given ids
    (:func:`row_ids`), to its nearest row that is not an exact copy of it (inf if every row is)."""
    rows, out = _flat(rows), []
    for i in range(0, x.shape[0], chunk):
        d = torch.cdist(_flat(x[i:i + chunk]), rows)
        if x_ids is not None:
            d[x_ids[i:i + chunk, None] == rows_ids[None, :]] = float("inf")
        out.append(d.min(1).values)
    return torch.cat(out)


def _first_of_each(ids: Tensor) -> Tensor:
    """The positions of the first row of each distinct id, in the order of ``ids``."""
    order = torch.argsort(ids, stable=True)
    sorted_ids = ids[order]
    first = torch.ones_like(sorted_ids, dtype=torch.bool)
    first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    return order[first].sort().values


def dcr_share(samples: Tensor, train: Tensor, heldout: Tensor, generator: torch.Generator) -> tuple[float, int]:
    """Distance-to-closest-record share: how many of ``samples`` are closer to their nearest
    row of ``train`` than to their nearest row of ``heldout`` (ties count half), with as many
    rows of each, a random subset of the larger; returns (count, rows of each). About half for
    a model as far from its training rows as from unseen ones, all for one that copies."""
    k = min(train.shape[0], heldout.shape[0])
    train = train[torch.randperm(train.shape[0], generator=generator)[:k]]
    heldout = heldout[torch.randperm(heldout.shape[0], generator=generator)[:k]]
    to_train, to_heldout = nearest_distances(samples, train), nearest_distances(samples, heldout)
    return float((to_train < to_heldout).sum() + 0.5 * (to_train == to_heldout).sum()), k


def fresh_near_copy_share(m: int, n: int) -> tuple[float, float]:
    """The near-copy share that ``n`` fresh rows of the data's distribution score when the
    threshold is the 1% quantile of ``m`` held-out rows' distances, as (mean, 99% upper bound).
    At position p = 0.01 (m - 1) between order statistics the threshold is near the k = 1 + p-th,
    and a fresh distance falls below the k-th of m with a chance distributed as
    Beta(k, m + 1 - k), mean (1 + p) / (m + 1); the count among n is then beta-binomial. Mean
    0.011 for 1000 rows, 0.021 for 88, 0.042 for 30 (simulated on Gaussian rows: 0.0107, 0.0207,
    0.0385); 99% bound with as many samples as rows 0.021, 0.080, 0.20. NaN without rows."""
    from scipy.stats import betabinom

    if m < 1 or n < 1:
        return float("nan"), float("nan")
    k = 1.0 + 0.01 * (m - 1)
    return k / (m + 1), float(betabinom.ppf(0.99, n, k, m + 1 - k)) / n


def memorisation(samples: Tensor, train: Tensor, heldout: Tensor, seed: int = 0) -> dict[str, Any]:
    """Whether ``samples`` copy ``train``, measured against what the unseen rows ``heldout`` show.

    Duplicates: exactly repeated training rows and held-out rows that also occur in training
    are counted. Each held-out row's reference distance is to its nearest training row that is
    not an exact copy of it, so a held-out row duplicated in training is measured as if it were
    fresh, which it would be without the duplication (and no reference distance is 0). A
    sample's distance is to its nearest training row, copies included: a sample equal to a
    training row is a copy.

    * ``share_closer_than_heldout_1pct``: the share of samples closer to a training row than
      99% of held-out rows are (near-copies);
    * ``near_copy_share_fresh`` and ``near_copy_share_fresh_q99``: that share's mean and 99%
      bound for as many fresh rows (:func:`fresh_near_copy_share`): 0.01 and 0.02 for 1000
      held-out rows and samples, 0.04 and 0.20 for 30, where the 1% quantile is about the
      smallest distance and moves with it;
    * ``median_ratio``: median sample distance / median held-out distance (about 1: no
      copying; well below 1: samples sit on training rows);
    * ``dcr_share`` (:func:`dcr_share`) with its 95% interval, against equal numbers
      ``dcr_rows`` of distinct training rows and of distinct held-out rows that do not occur
      in training (None with fewer than :data:`DCR_MIN_ROWS` of those). 0.5 is ideal; a
      model copying its training rows scores ``dcr_share_copier`` = 0.5 + 0.5 k / N (its
      sample's row is among the k training rows compared with a chance k / N out of N
      distinct training rows; otherwise it is as near to either set). Its interval is
      Wilson's, which takes the samples as independent; the rows they share as neighbours
      widen the spread over repeated draws by about 10% (measured over 40 seeds: 0.031 where
      the binomial says 0.029, at 300 rows)."""
    train_ids, heldout_ids = row_ids(train, heldout)
    distinct_train = _first_of_each(train_ids)
    in_train = torch.isin(heldout_ids, train_ids)
    sample_d = nearest_distances(samples, train)
    heldout_d = nearest_distances(heldout, train, heldout_ids, train_ids)
    heldout_d = heldout_d[torch.isfinite(heldout_d)].double()
    close = float(torch.quantile(heldout_d, 0.01)) if heldout_d.numel() else 0.0
    reference = float(heldout_d.median()) if heldout_d.numel() else 0.0
    fresh, fresh_q99 = fresh_near_copy_share(heldout_d.numel(), samples.shape[0])
    report: dict[str, Any] = {
        "sample_to_train_median": float(sample_d.median()),
        "heldout_to_train_median": reference,
        "median_ratio": float(sample_d.median()) / reference if reference > 0 else float("nan"),
        "near_copy_distance": close,
        "share_closer_than_heldout_1pct": float((sample_d < close).double().mean()),
        "near_copy_share_fresh": fresh,
        "near_copy_share_fresh_q99": fresh_q99,
        "training_rows": train.shape[0],
        "duplicated_training_rows": train.shape[0] - distinct_train.numel(),
        "heldout_rows": heldout.shape[0],
        "heldout_rows_in_training": int(in_train.sum()),
    }
    unseen = _first_of_each(heldout_ids)
    unseen = unseen[~in_train[unseen]]
    k = min(unseen.numel(), distinct_train.numel())
    report["dcr_rows"] = k
    if k < DCR_MIN_ROWS:
        report.update({"dcr_share": None, "dcr_share_ci": None, "dcr_share_copier": None})
        return report
    closer, k = dcr_share(samples, train[distinct_train], heldout[unseen], torch.Generator().manual_seed(seed))
    report.update({"dcr_share": closer / samples.shape[0],
                   "dcr_share_ci": list(wilson_interval(closer, samples.shape[0])),
                   "dcr_share_copier": 0.5 + 0.5 * k / distinct_train.numel()})
    return report


def gaussian_mixture_draws(train: Tensor, n: int, seed: int, components: int = GMM_COMPONENTS) -> Tensor:
    """``n`` draws of a Gaussian mixture with full covariances fitted to ``train`` (at most one
    component per 5 training rows and per distinct row)."""
    from sklearn.mixture import GaussianMixture

    flat = _flat(train).double().numpy()
    k = component_count(flat, components)
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
                   project: Callable[[Tensor], Tensor] | None = None, heldout_rows: int | None = None,
                   decode: Callable[[Tensor], Any] | None = None,
                   column_kinds: dict[str, str] | None = None,
                   ratio: Callable[[Tensor], Tensor] | None = None) -> dict[str, Any]:
    """Samples, baselines and the floor scored against ``heldout`` (module docstring), with the
    verdict. All sets are cut to the same size m = min(len(samples), len(heldout)); ``train``
    is the training part (the floor uses m of its rows, the Gaussian and the mixture are fitted
    to all of it). ``value_range`` clamps baseline draws as the data's samples are clamped;
    ``project`` maps baseline and prior draws to the rows they stand for, as the samples were
    (:meth:`fdrl.data.ArrayData.project`: a table's labels and integers).
    ``heldout_rows``: the size of the whole held-out part (None: fresh draws, unlimited), for
    the verdict's advice. ``decode`` (model-unit rows -> the user's pandas DataFrame) and
    ``column_kinds`` (column -> "continuous" | "integer" | "categorical") add per-column
    scores for fdrl and the mixture. ``ratio`` (rows -> the estimator's r = q~/p on each) adds
    ``estimator_ratio`` (:func:`estimator_ratio`), for a held-out part that is unseen data."""
    m = min(samples.shape[0], heldout.shape[0])
    samples, heldout = samples[:m], heldout[:m]
    g = torch.Generator().manual_seed(seed)
    train_m = train[torch.randperm(train.shape[0], generator=g)[:m]]
    project = project or (lambda x: x)
    gaussian = project(GaussianPrior.fit([_flat(train)], shape=tuple(train.shape[1:]), clamp=value_range).sample(m, g))
    report: dict[str, Any] = {"n": m, **scores(samples, heldout, seed)}
    baselines: dict[str, dict[str, Any]] = {"gaussian": scores(gaussian, heldout, seed)}
    mixture = None
    if math.prod(train.shape[1:]) <= GMM_MAX_DIM:
        try:
            mixture = project(gaussian_mixture_draws(train, m, seed))
        except ValueError:
            mixture = None  # reported as absent rather than failing the whole report
        if mixture is not None:
            mixture = mixture if value_range is None else mixture.clamp(*value_range)
            baselines["gmm"] = scores(mixture, heldout, seed)
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
        "memorisation": memorisation(samples, train_nn, heldout, seed),
    })
    if m < C2ST_FOLDS:
        report["notes"] = [f"only {m} rows to score: the C2ST needs {C2ST_FOLDS} in each set, so its accuracies "
                           "are NaN; hold out more rows (data.test_fraction) or use more data"]
    if decode is not None and column_kinds is not None:
        real = decode(heldout)
        report["columns"] = table_scores(real, decode(samples), column_kinds, seed)
        if mixture is not None:
            baselines["gmm"]["columns"] = table_scores(real, decode(mixture), column_kinds, seed)
    if ratio is not None:
        report["estimator_ratio"] = estimator_ratio(ratio, train_m, heldout)
    report["verdict"] = verdict(report, heldout_rows)
    return report


def estimator_ratio(ratio: Callable[[Tensor], Tensor], train: Tensor, heldout: Tensor) -> dict[str, float]:
    """The estimator's mean r = q~/p (App. C) on training rows and on as many held-out rows
    (``ratio``: rows -> r). After training q~ is close to p on the data, so both are about 1; an
    estimator that has learnt its training rows themselves gives r well below 1 on them and far
    above 1 on unseen rows (on 320 photos after 1000 steps: 0.58 and 17; tables, digits and
    MNIST: 1.0-1.3 and 1.0-1.7), where its log_ratio then says nothing about new data."""
    with torch.no_grad():
        return {name: float(torch.cat([ratio(part) for part in rows.split(RATIO_BATCH)]).double().mean())
                for name, rows in (("train", train), ("heldout", heldout))}


def evaluate_heldout(model: Any, config: Any, data: Any, n: int) -> dict[str, Any]:
    """:func:`heldout_report` for a trained ``model`` (an :class:`fdrl.FDRL`) of a run with
    ``config`` and training data source ``data``: up to ``n`` samples against the held-out part
    (:func:`fdrl.data.build_held_out`), fresh draws for toy data, or, for a finite dataset with
    nothing held out, the training data itself (then memorisation cannot be seen, and the
    report says so under ``reference``). A data source with ``decode`` and ``column_kinds``
    (a table's rows) gets per-column scores too."""
    seed = config.train.seed
    held = build_held_out(config.data.spec, data)
    data = getattr(data, "image_data", data)  # a principal space's samples are images, scored against images
    finite = hasattr(data, "iter_batches")
    heldout_rows = None
    if held is not None:
        heldout, heldout_rows = held.subset(n, seed + 2), len(held)
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
    prior_draws = model.decode(model.prior.sample(m, seeding.generator(seed + 3, "eval")),
                               seeding.generator(seed + 3, "decode"))
    table = getattr(data, "codec", None) is not None
    report = heldout_report(samples, train, heldout, prior_draws, seed, getattr(data, "value_range", None),
                            getattr(data, "project", None), heldout_rows, data.decode if table else None,
                            data.column_kinds if table else None, _ratio_of(model) if held is not None else None)
    units = "standardised features" if getattr(data, "scaler", None) is not None else "the data's own"
    return {"reference": reference, "units": units, **report}


def _ratio_of(model: Any) -> Callable[[Tensor], Tensor]:
    """Rows as the report holds them (model units; a principal space's images in pixels) -> the
    estimator's r on each."""
    def ratio(x: Tensor) -> Tensor:
        z = model.space.encode(x) if model.space is not None else x
        return model.objective.ratio(model.estimator(z.to(model.device))).cpu()
    return ratio
