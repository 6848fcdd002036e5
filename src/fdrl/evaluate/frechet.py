"""The Frechet distance between Gaussians fitted to features, and cached feature statistics.

FID (Heusel et al.) and the classifier Frechet distance both compare two sets through
``d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2})``.
:func:`frechet_distance` evaluates it in float64 through two symmetric eigen-decompositions,
so it stays finite and accurate when covariances are singular (fewer samples than feature
dimensions), where ``scipy.linalg.sqrtm(S1 @ S2)`` can return complex or inaccurate values.

:class:`FeatureStats` holds (mean, covariance, n) with a ``key`` saying what they describe
(dataset, preprocessing, feature extractor). :func:`cached_stats` computes reference
statistics once and reuses them only while the stored key equals the requested one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from fdrl.priors import GaussianStats

#: ``inputs`` of the feature helpers: one tensor (split into batches) or an iterable of batches.
Inputs = Tensor | Iterable[Tensor]
#: A feature extractor: any callable (an ``nn.Module`` included) mapping a batch to (b, d) features.
Extractor = Callable[[Tensor], Tensor]


def _as_float64(a: Tensor | np.ndarray) -> np.ndarray:
    return (a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)).astype(np.float64)


def _resolvable(values: np.ndarray, dim: int) -> np.ndarray:
    """Eigenvalues of a PSD matrix with those at round-off level (below ``d * eps * max|lambda|``,
    negative ones included) set to 0: they are not resolvable from the matrix, and keeping
    them would add sqrt(round-off) terms to a trace of square roots."""
    tol = np.abs(values).max(initial=0.0) * dim * np.finfo(np.float64).eps
    return np.where(values > tol, values, 0.0)


def trace_sqrt_product(sigma1: Tensor | np.ndarray, sigma2: Tensor | np.ndarray) -> float:
    """tr((S1^{1/2} S2 S1^{1/2})^{1/2}) for symmetric PSD ``S1``, ``S2`` (the cross term of the
    Frechet distance, equal to tr(sqrt(S1 S2))), from two symmetric eigen-decompositions.

    With S1 = U diag(l) U^T and W = U_r diag(l_r)^{1/2} over the r resolvable eigenvalues, the
    nonzero eigenvalues of S1^{1/2} S2 S1^{1/2} are those of the r x r matrix W^T S2 W, so a
    low-rank S1 (fewer samples than dimensions) also makes the second decomposition small.
    """
    s1, s2 = _as_float64(sigma1), _as_float64(sigma2)
    # One BLAS thread: right after a torch model ran, its OpenMP workers still spin on the same
    # cores, and a multithreaded LAPACK call beside them can take ten times longer.
    with threadpool_limits(limits=1, user_api="blas"):
        values, vectors = np.linalg.eigh((s1 + s1.T) / 2)
        values = _resolvable(values, len(values))
        keep = values > 0
        w = vectors[:, keep] * np.sqrt(values[keep])
        inner = w.T @ s2 @ w
        return float(np.sqrt(_resolvable(np.linalg.eigvalsh((inner + inner.T) / 2), len(values))).sum())


def frechet_distance(
    mu1: Tensor | np.ndarray, sigma1: Tensor | np.ndarray, mu2: Tensor | np.ndarray, sigma2: Tensor | np.ndarray
) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2), float64."""
    m1, m2, s1, s2 = (_as_float64(a) for a in (mu1, mu2, sigma1, sigma2))
    if m1.ndim != 1 or m1.shape != m2.shape or s1.shape != (m1.size,) * 2 or s2.shape != s1.shape:
        raise ValueError(
            f"Frechet distance needs means (d,) and covariances (d, d) of one d; got {m1.shape}, "
            f"{s1.shape}, {m2.shape}, {s2.shape}"
        )
    diff = m1 - m2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2)) - 2.0 * trace_sqrt_product(s1, s2)
    return max(value, 0.0)


@dataclass
class FeatureStats:
    """Mean and unbiased covariance (float64) of ``n`` feature vectors, and what they describe.

    ``key`` names the dataset (and which samples of it), the preprocessing and the feature
    extractor; two statistics are only comparable, and a cache entry only reusable, under the
    key they were computed with.
    """

    mean: Tensor
    cov: Tensor
    n: int
    key: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_batches(cls, batches: Iterable[Tensor], key: dict[str, Any] | None = None) -> "FeatureStats":
        """Streaming statistics of feature batches (b, d), accumulated in float64."""
        stats: GaussianStats | None = None
        for batch in batches:
            stats = stats or GaussianStats(batch[0].numel())
            stats.update(batch)
        if stats is None or stats.n < 2:
            raise ValueError(f"feature statistics need at least 2 samples, got {0 if stats is None else stats.n}")
        return cls(stats.mean, stats.m2 / (stats.n - 1), stats.n, dict(key or {}))

    def frechet_distance(self, other: "FeatureStats") -> float:
        """The squared Frechet distance between the Gaussians of ``self`` and ``other``."""
        return frechet_distance(self.mean, self.cov, other.mean, other.cov)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (safetensors: mean, cov) and ``path`` with suffix ``.json`` (n, key)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"mean": self.mean.contiguous(), "cov": self.cov.contiguous()}, str(path))
        meta = {"n": self.n, "key": _canonical(self.key)}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        """Inverse of :meth:`save` (no pickle is involved); a damaged file raises ValueError."""
        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.exists() or not meta_path.exists():
            raise FileNotFoundError(f"no feature statistics at {path} (needs {path.name} and {meta_path.name})")
        try:
            tensors = load_file(str(path))
            meta = json.loads(meta_path.read_text())
            return cls(tensors["mean"], tensors["cov"], int(meta["n"]), meta["key"])
        except (SafetensorError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"feature statistics at {path} are damaged ({err})") from None


def _canonical(key: dict[str, Any]) -> dict[str, Any]:
    """``key`` as it reads back from JSON (tuples become lists, keys and paths strings)."""
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def cache_path(cache_dir: str | Path, key: dict[str, Any]) -> Path:
    """Where :func:`cached_stats` keeps the statistics for ``key``: a readable prefix (the
    dataset's name where the key has one) and a hash of the whole key."""
    text = json.dumps(_canonical(key), sort_keys=True)
    dataset = key.get("dataset")
    label = dataset.get("name", "stats") if isinstance(dataset, dict) else str(dataset or "stats")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(label)).strip("-") or "stats"
    return Path(cache_dir) / f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.safetensors"


def cached_stats(cache_dir: str | Path, key: dict[str, Any], compute: Callable[[], FeatureStats]) -> FeatureStats:
    """Statistics for ``key`` from ``cache_dir``, or ``compute()`` them and store them there.

    A cached entry is reused only if the key stored with it equals ``key``; anything else (a
    changed dataset, preprocessing or extractor; an edited or unreadable file) recomputes.
    """
    path = cache_path(cache_dir, key)
    wanted = _canonical(key)
    try:
        cached = FeatureStats.load(path)
    except (OSError, ValueError):  # missing, unreadable or damaged entry: recompute
        cached = None
    if cached is not None and cached.key == wanted:
        return cached
    stats = compute()
    stats.key = wanted
    stats.save(path)
    return stats


def _device_of(extractor: Extractor) -> torch.device:
    if isinstance(extractor, nn.Module):
        for tensor in extractor.parameters():
            return tensor.device
    return torch.device("cpu")


def batched_features(inputs: Inputs, extractor: Extractor, batch_size: int = 256) -> Iterator[Tensor]:
    """Features (b, d), float64 on the CPU, of ``inputs`` in batches of at most ``batch_size``.

    An ``nn.Module`` extractor runs in eval mode (its mode is restored afterwards) without
    gradients, on its own device.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    batches = [inputs] if isinstance(inputs, Tensor) else inputs
    device = _device_of(extractor)
    module = extractor if isinstance(extractor, nn.Module) else None
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                for chunk in batch.split(batch_size):
                    features = extractor(chunk.to(device))
                    yield features.reshape(features.shape[0], -1).to(device="cpu", dtype=torch.float64)
    finally:
        if module is not None:
            module.train(was_training)


def feature_stats(
    inputs: Inputs, extractor: Extractor, batch_size: int = 256, key: dict[str, Any] | None = None
) -> FeatureStats:
    """:class:`FeatureStats` of ``extractor``'s features of ``inputs``, streamed in batches."""
    return FeatureStats.from_batches(batched_features(inputs, extractor, batch_size), key)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's content, read in blocks (for keys naming weights or data files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$FDRL_CACHE_DIR/stats``, or ``~/.cache/fdrl/stats``: where reference statistics live."""
    return Path(os.environ.get("FDRL_CACHE_DIR") or Path.home() / ".cache" / "fdrl") / "stats"


def frechet_feature_distance(
    samples: Inputs, reference: Inputs | FeatureStats, extractor: Extractor, batch_size: int = 256
) -> float:
    """Frechet distance between ``extractor`` features of ``samples`` and of ``reference``
    (raw inputs, or :class:`FeatureStats` computed with the same extractor). With a digit
    classifier's penultimate layer as the extractor this is the classifier Frechet distance.

    An extractor with an ``identity`` attribute (e.g. the FID Inception network) is checked
    against the ``extractor`` entry of the reference statistics' key.
    """
    if isinstance(reference, FeatureStats):
        identity, stored = getattr(extractor, "identity", None), reference.key.get("extractor")
        if identity is not None and stored is not None and _canonical(identity) != _canonical(stored):
            raise ValueError(f"reference statistics were computed with extractor {stored}, not {identity}")
        ref = reference
    else:
        ref = feature_stats(reference, extractor, batch_size)
    return feature_stats(samples, extractor, batch_size).frechet_distance(ref)
