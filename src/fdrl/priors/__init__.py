"""Where particles start: the prior q'(x) of Algorithm 1 and 2.

* :class:`StandardNormalPrior`: N(0, I) (the swiss-roll prior of App. B).
* :class:`GaussianPrior`: N(mu, Sigma), fitted to data in a streaming pass (the data-dependent
  prior, Eq. 8), or given explicitly (the Gaussians of Section 3.1).
* :class:`LowRankGaussianPrior`: Eq. 8 with Sigma = top principal directions + a diagonal,
  fitted in streaming passes without a d x d matrix (LSUN Church's 3 x 128 x 128 images).
* :class:`GaussianMixturePrior`: Eq. 8 with several components, fitted by EM to the training rows
  (the default for tables, where one Gaussian misses the clusters).
* :class:`UniformPrior`: U[a, b] (Lemma 1; the FDRL-UP ablation of Section 6.3).
* :class:`DatasetPrior`: draws from given samples (a source domain for translation, Sec. 6.5).
* :class:`DataSourcePrior`: draws augmented images from an image dataset (the same, read from disk).

:func:`build_prior` builds one from a config's ``prior`` section; fitted data-dependent priors
of image datasets are cached on disk (:func:`cached_prior`).

Every prior saves as plain tensors (safetensors) plus a JSON description, never pickles.

The package: :mod:`~fdrl.priors.simple` (the interface, N(0, I), uniform),
:mod:`~fdrl.priors.gaussian`, :mod:`~fdrl.priors.low_rank`, :mod:`~fdrl.priors.mixture`, :mod:`~fdrl.priors.dataset` and
:mod:`~fdrl.priors.registry` (by name, loading, the cache).
"""

from fdrl.components import MAX_FULL_DIM
from fdrl.priors.dataset import DatasetPrior, DataSourcePrior
from fdrl.priors.gaussian import GaussianPrior, GaussianStats, cholesky_with_jitter
from fdrl.priors.low_rank import SKETCH_ROWS, CovarianceSketch, LowRankGaussianPrior, fit_batch_size, nystrom_eigh
from fdrl.priors.mixture import GaussianMixturePrior
from fdrl.priors.registry import (
    DEFAULT_RANK, PRIOR_NAMES, PRIORS, build_prior, cached_prior, default_cache_dir, load_prior,
)
from fdrl.priors.simple import Prior, StandardNormalPrior, UniformPrior

__all__ = [
    "DEFAULT_RANK", "MAX_FULL_DIM", "PRIORS", "PRIOR_NAMES", "SKETCH_ROWS", "CovarianceSketch", "DataSourcePrior",
    "DatasetPrior", "GaussianMixturePrior", "GaussianPrior", "GaussianStats", "LowRankGaussianPrior", "Prior", "StandardNormalPrior",
    "UniformPrior", "build_prior", "cached_prior", "cholesky_with_jitter", "default_cache_dir", "fit_batch_size",
    "load_prior", "nystrom_eigh",
]
