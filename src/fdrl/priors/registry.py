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

from fdrl.data.source import ArrayData
from fdrl.priors.dataset import DataSourcePrior, DatasetPrior
from fdrl.priors.gaussian import GaussianPrior
from fdrl.priors.low_rank import LowRankGaussianPrior, fit_batch_size
from fdrl.priors.simple import Prior, StandardNormalPrior, UniformPrior


PRIORS: dict[str, type[Prior]] = {
    cls.kind: cls
    for cls in (StandardNormalPrior, UniformPrior, GaussianPrior, LowRankGaussianPrior, DatasetPrior, DataSourcePrior)
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
    if kind == "dataset":
        return DatasetPrior(tensors["samples"])
    if kind == "data_source":
        return DataSourcePrior(meta["data"]["name"], meta["data"]["params"])
    raise ValueError(f"unknown prior kind '{kind}'; known: {', '.join(PRIORS)}")


PRIOR_NAMES = ["standard_normal", "gaussian", "data_gaussian", "uniform", "dataset"]

#: data_gaussian: above this many dimensions the low-rank form is used unless ``rank`` says
#: otherwise. 12288 = 3 x 64 x 64 keeps CIFAR10 and CelebA on the full covariance, as in the
#: paper (a d x d float64 accumulator of 1.2 GB at 12288); 3 x 128 x 128 would need 19 GB.
MAX_FULL_DIM = 12288
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


def _data_gaussian(params: dict[str, Any], data: Any, shape: tuple[int, ...]) -> Prior:
    """Eq. 8 fitted to ``data`` in the full or the low-rank form, through the cache."""
    dim = math.prod(shape)
    rank = params.get("rank")
    if rank not in (None, "full") and not (isinstance(rank, int) and rank >= 1):
        raise ValueError(f"prior.params.rank must be a positive integer or 'full', got {rank!r}")
    if rank is None:
        rank = "full" if dim <= int(params.get("max_full_dim", MAX_FULL_DIM)) else DEFAULT_RANK
    clamp = params.get("clamp", getattr(data, "value_range", None))
    clamp = tuple(clamp) if clamp else None
    batch_size, seed = int(params.get("batch_size", fit_batch_size(dim))), int(params.get("seed", 0))
    oversample, passes = int(params.get("oversample", 10)), int(params.get("passes", 2))

    def batches() -> Iterable[Tensor]:
        if hasattr(data, "iter_batches"):
            return data.iter_batches(batch_size)
        return [data.draw(int(params.get("fit_samples", 10000)), seed=seed)]

    def fit() -> Prior:
        if rank == "full":
            return GaussianPrior.fit(batches(), shape=shape, clamp=clamp)
        return LowRankGaussianPrior.fit(batches, rank, oversample, passes, shape, clamp, seed)

    if not hasattr(data, "fingerprint") or not params.get("cache", True):
        return fit()
    form = {"rank": "full"} if rank == "full" else {"rank": rank, "oversample": oversample, "passes": passes,
                                                   "seed": seed}
    key = {"prior": "data_gaussian", "data": data.fingerprint(), "form": form,
           "clamp": list(clamp) if clamp else None}
    return cached_prior(key, params.get("cache_dir") or default_cache_dir(), fit, str(key["data"].get("dataset")))


def build_prior(name: str, params: dict[str, Any], data: Any) -> Prior:
    """The ``prior`` section of a config, for samples shaped like ``data.shape``.

    * ``standard_normal``: N(0, I).
    * ``gaussian``: N(mean, variance I) with ``mean`` (list) and ``variance``.
    * ``data_gaussian``: Eq. 8 fitted to the training data (finite data: every clean sample,
      in batches of ``batch_size``; infinite toy data: ``fit_samples`` draws). ``rank``: an
      integer for :class:`LowRankGaussianPrior` with that many directions, ``full`` for the
      full covariance, unset for full up to ``max_full_dim`` dimensions (:data:`MAX_FULL_DIM`)
      and rank :data:`DEFAULT_RANK` above; ``oversample``, ``passes``, ``seed`` tune the
      low-rank fit. ``clamp: [low, high]`` defaults to the data's value range ([-1, 1] for
      images). Fits to data with a fingerprint (the image datasets) are cached under
      ``cache_dir`` (default :func:`default_cache_dir`), keyed by dataset, preprocessing and
      these options; ``cache: false`` turns that off.
    * ``uniform``: U[low, high] (default [-1, 1]).
    * ``dataset``: draws from the array in ``path`` (.npy, .csv, .txt), or from an image
      dataset ``data: {name: ..., params: {...}}`` with its augmentation (Sec. 6.5).
    """
    params = dict(params)
    shape = tuple(data.shape)
    try:
        if name == "standard_normal":
            return StandardNormalPrior(shape)
        if name == "gaussian":
            mean = params.get("mean", [0.0] * math.prod(shape))
            return GaussianPrior(
                torch.as_tensor(mean, dtype=torch.float32), math.sqrt(float(params.get("variance", 1.0)))
                * torch.eye(len(mean)), shape=shape,
            )
        if name == "data_gaussian":
            return _data_gaussian(params, data, shape)
        if name == "uniform":
            return UniformPrior(shape, float(params.get("low", -1.0)), float(params.get("high", 1.0)))
        if name == "dataset":
            if "data" in params:
                source = params["data"]
                return DataSourcePrior(source["name"], source.get("params", {}))
            if "path" not in params:
                raise ValueError("prior 'dataset' needs prior.params.path=FILE (.npy, .csv or .txt) or "
                                 "prior.params.data={name: DATASET, params: {...}}")
            samples = ArrayData.from_file(params["path"], test_fraction=0.0).samples
            scaler = getattr(data, "scaler", None)  # particles live in the data's standardised units
            return DatasetPrior(samples if scaler is None else scaler.forward(samples))
    except KeyError as err:
        raise ValueError(f"prior '{name}' is missing option {err}") from None
    raise ValueError(f"unknown prior '{name}'; choose one of: {', '.join(PRIOR_NAMES)}")
