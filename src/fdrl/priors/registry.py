"""Priors by name: :func:`build_prior` (a config's ``prior`` section), :func:`load_prior` (the
inverse of :meth:`~fdrl.priors.Prior.save`) and the on-disk cache of fitted data-dependent
priors (:func:`cached_prior`)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from fdrl.components import (
    PRIOR_SPECS, DataGaussianSpec, DataMixtureSpec, GaussianPriorSpec, PriorSpec, StandardNormalSpec, UniformSpec,
    as_spec,
)
from fdrl.data.source import ArrayData
from fdrl.priors.dataset import DataSourcePrior, DatasetPrior
from fdrl.priors.gaussian import GaussianPrior
from fdrl.priors.low_rank import LowRankGaussianPrior, fit_batch_size
from fdrl.priors.mixture import GaussianMixturePrior
from fdrl.priors.simple import Prior, StandardNormalPrior, UniformPrior


PRIORS: dict[str, type[Prior]] = {
    cls.kind: cls
    for cls in (StandardNormalPrior, UniformPrior, GaussianPrior, LowRankGaussianPrior, GaussianMixturePrior,
                DatasetPrior, DataSourcePrior)
}


def load_prior(directory: str | Path, name: str = "prior") -> Prior:
    """Inverse of :meth:`Prior.save`. FileNotFoundError if there is none; ValueError naming the
    files if they are damaged (truncated, empty, of another kind, or from another version)."""
    directory = Path(directory)
    meta_path, tensor_path = directory / f"{name}.json", directory / f"{name}.safetensors"
    if not meta_path.exists():
        raise FileNotFoundError(f"no prior at {meta_path}")
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(tensor_path)) if tensor_path.exists() else {}
        return _prior_from(meta, tensors)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RuntimeError, SafetensorError) as err:
        what = f"{type(err).__name__}: {err}".strip().splitlines()[0]
        raise ValueError(f"the prior in '{meta_path}' / '{tensor_path.name}' is damaged ({what})") from None


def _prior_from(meta: dict[str, Any], tensors: dict[str, Tensor]) -> Prior:
    """The prior a saved ``{name}.json`` mapping and its tensors describe."""
    meta = dict(meta)
    kind = meta.pop("kind")
    clamp = tuple(meta["clamp"]) if meta.get("clamp") else None
    if kind == "standard_normal":
        return StandardNormalPrior(meta["shape"])
    if kind == "uniform":
        return UniformPrior(meta["shape"], meta["low"], meta["high"])
    if kind == "gaussian":
        return GaussianPrior(
            tensors["mean"], tensors["scale_tril"], meta["shape"], clamp, meta.get("jitter", 0.0)
        )
    if kind == "low_rank_gaussian":
        return LowRankGaussianPrior(tensors["mean"], tensors["components"], tensors["eigenvalues"],
                                    tensors["residual"], meta["shape"], clamp, meta["total_variance"])
    if kind == "gaussian_mixture":
        return GaussianMixturePrior(tensors["weights"], tensors["means"], tensors["scale_trils"], meta["shape"], clamp)
    if kind == "dataset":
        return DatasetPrior(tensors["samples"])
    if kind == "data_source":
        return DataSourcePrior(meta["data"]["name"], meta["data"]["params"])
    raise ValueError(f"unknown prior kind '{kind}'; known: {', '.join(PRIORS)}")


#: every prior.name
PRIOR_NAMES = list(PRIOR_SPECS)
#: data_gaussian: the rank used when the low-rank form is chosen automatically
DEFAULT_RANK = 256


def default_cache_dir() -> Path:
    """``$FDRL_CACHE_DIR/priors``, else ``~/.cache/fdrl/priors``."""
    root = os.environ.get("FDRL_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "fdrl") / "priors"


def cached_prior(key: dict[str, Any], cache_dir: str | Path, fit: Callable[[], Prior], label: str = "prior") -> Prior:
    """The prior stored under ``cache_dir`` for ``key`` (a JSON-able mapping), else ``fit()``,
    stored there for next time. Entries are folders named by a hash of the key, holding
    ``key.json`` and the prior's files; an entry is reused only if its ``key.json`` equals
    ``key``; ``label`` starts the folder name. An unwritable cache is reported and skipped."""
    text = json.dumps(key, sort_keys=True)
    entry = Path(cache_dir).expanduser() / f"{label}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    key_file = entry / "key.json"
    if key_file.is_file() and key_file.read_text() == text:
        return load_prior(entry)
    prior = fit()
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=entry.parent))
        prior.save(staging)
        (staging / "key.json").write_text(text)
        shutil.rmtree(entry, ignore_errors=True)
        staging.replace(entry)
    except OSError as err:
        warnings.warn(f"could not cache the fitted prior in {entry} ({err}); it will be fitted again next time")
    return prior


def _data_gaussian(spec: DataGaussianSpec, data: Any, shape: tuple[int, ...]) -> Prior:
    """Eq. 8 fitted to ``data`` in the full or the low-rank form, through the cache."""
    dim = math.prod(shape)
    rank = spec.rank
    if rank is None:
        rank = "full" if dim <= spec.max_full_dim else DEFAULT_RANK
    clamp = spec.clamp if spec.clamp is not None else getattr(data, "value_range", None)
    clamp = tuple(clamp) if clamp else None
    batch_size = spec.batch_size if spec.batch_size is not None else fit_batch_size(dim)

    def batches() -> Iterable[Tensor]:
        if hasattr(data, "iter_batches"):
            return data.iter_batches(batch_size)
        return [data.draw(spec.fit_samples, seed=spec.seed)]

    def fit() -> Prior:
        if rank == "full":
            return GaussianPrior.fit(batches(), shape=shape, clamp=clamp)
        return LowRankGaussianPrior.fit(batches, rank, spec.oversample, spec.passes, shape, clamp, spec.seed)

    if not hasattr(data, "fingerprint") or not spec.cache:
        return fit()
    form = {"rank": "full"} if rank == "full" else {"rank": rank, "oversample": spec.oversample,
                                                   "passes": spec.passes, "seed": spec.seed}
    key = {"prior": "data_gaussian", "data": data.fingerprint(), "form": form,
           "clamp": list(clamp) if clamp else None}
    return cached_prior(key, spec.cache_dir or default_cache_dir(), fit, str(key["data"].get("dataset")))


def _data_mixture(spec: DataMixtureSpec, data: Any, shape: tuple[int, ...]) -> Prior:
    """A Gaussian mixture fitted to the training rows (a finite data set's every row, or
    ``fit_samples`` draws of an endless one); above ``max_dim`` dimensions, where full
    covariances per component cost too much, the one Gaussian of Eq. 8."""
    clamp = spec.clamp if spec.clamp is not None else getattr(data, "value_range", None)
    clamp = tuple(clamp) if clamp else None
    rows = data.samples if hasattr(data, "samples") else data.draw(spec.fit_samples, spec.seed)
    if math.prod(shape) > spec.max_dim:
        return GaussianPrior.fit([rows], shape=shape, clamp=clamp)
    return GaussianMixturePrior.fit(rows, spec.components, spec.seed, shape, clamp)


def build_prior(spec: PriorSpec | str, data: Any, /, **params: Any) -> Prior:
    """The prior of ``spec`` (:mod:`fdrl.components`; or a ``prior.name`` with its
    ``prior.params`` as keywords), for samples shaped like ``data.shape``.

    * ``standard_normal``: N(0, I).
    * ``gaussian``: N(mean, variance I) with ``mean`` (list; the origin if unset) and ``variance``.
    * ``data_gaussian``: Eq. 8 fitted to the training data (finite data: every clean sample,
      in batches of ``batch_size``; infinite toy data: ``fit_samples`` draws). ``rank``: an
      integer for :class:`LowRankGaussianPrior` with that many directions, ``full`` for the
      full covariance, unset for full up to ``max_full_dim`` dimensions
      (:data:`~fdrl.components.MAX_FULL_DIM`) and rank :data:`DEFAULT_RANK` above;
      ``oversample``, ``passes``, ``seed`` tune the low-rank fit. ``clamp: [low, high]``
      defaults to the data's value range ([-1, 1] for images). Fits to data with a fingerprint
      (the image datasets) are cached under ``cache_dir`` (default :func:`default_cache_dir`),
      keyed by dataset, preprocessing and these options; ``cache: false`` turns that off.
    * ``data_mixture``: a Gaussian mixture with full covariances fitted to the training rows
      (:class:`~fdrl.priors.GaussianMixturePrior`): ``components`` (10; at most one per 5
      rows), ``clamp`` as above; above ``max_dim`` (512) dimensions the one Gaussian of Eq. 8.
    * ``uniform``: U[low, high] (default [-1, 1]).
    * ``dataset``: draws from the array in ``path`` (.npy, .csv, .txt), or from an image
      dataset ``data: {name: ..., params: {...}}`` with its augmentation (Sec. 6.5).
    """
    spec = as_spec("prior", spec, params)
    shape = tuple(data.shape)
    if isinstance(spec, StandardNormalSpec):
        return StandardNormalPrior(shape)
    if isinstance(spec, GaussianPriorSpec):
        mean = spec.mean if spec.mean is not None else [0.0] * math.prod(shape)
        return GaussianPrior(torch.as_tensor(mean, dtype=torch.float32),
                             math.sqrt(spec.variance) * torch.eye(len(mean)), shape=shape)
    if isinstance(spec, DataGaussianSpec):
        return _data_gaussian(spec, data, shape)
    if isinstance(spec, DataMixtureSpec):
        return _data_mixture(spec, data, shape)
    if isinstance(spec, UniformSpec):
        return UniformPrior(shape, spec.low, spec.high)
    if spec.data is not None:
        return DataSourcePrior(spec.data["name"], spec.data.get("params", {}))
    if spec.path is None:
        raise ValueError("prior 'dataset' needs prior.params.path=FILE (.npy, .csv or .txt) or "
                         "prior.params.data={name: DATASET, params: {...}}")
    samples = ArrayData.from_file(spec.path, test_fraction=0.0).samples
    scaler = getattr(data, "scaler", None)  # particles live in the data's standardised units
    return DatasetPrior(samples if scaler is None else scaler.forward(samples))
