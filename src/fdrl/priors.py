"""Where particles start: the prior q'(x) of Algorithm 1 and 2.

* :class:`StandardNormalPrior`: N(0, I) (the swiss-roll prior of App. B).
* :class:`GaussianPrior`: N(mu, Sigma), fitted to data in a streaming pass (the data-dependent
  prior, Eq. 8), or given explicitly (the Gaussians of Section 3.1).
* :class:`LowRankGaussianPrior`: Eq. 8 with Sigma = top principal directions + a diagonal,
  fitted in streaming passes without a d x d matrix (LSUN Church's 3 x 128 x 128 images).
* :class:`UniformPrior`: U[a, b] (Lemma 1; the FDRL-UP ablation of Section 6.3).
* :class:`DatasetPrior`: draws from given samples (a source domain for translation, Sec. 6.5).
* :class:`DataSourcePrior`: draws augmented images from an image dataset (the same, read from disk).

:func:`build_prior` builds one from a config's ``prior`` section; fitted data-dependent priors
of image datasets are cached on disk (:func:`cached_prior`).

Every prior saves as plain tensors (safetensors) plus a JSON description, never pickles.
"""

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
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor


def _draw(shape: tuple[int, ...], generator: torch.Generator | None, device, fn) -> Tensor:
    """Draw with ``fn`` (torch.randn / torch.rand) on the generator's device, then move."""
    gen_device = generator.device if generator is not None else torch.device(device or "cpu")
    return fn(shape, generator=generator, device=gen_device).to(device or gen_device)


class Prior:
    """Base class: ``sample(n)`` returns a tensor of shape (n, *shape)."""

    kind: ClassVar[str]
    shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    def sample(
        self, n: int, generator: torch.Generator | None = None, device: str | torch.device | None = None
    ) -> Tensor:
        raise NotImplementedError

    def tensors(self) -> dict[str, Tensor]:
        return {}

    def params(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}

    def save(self, directory: str | Path, name: str = "prior") -> None:
        """Write ``name.json`` (kind and parameters) and ``name.safetensors`` (tensors)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{name}.json").write_text(json.dumps({"kind": self.kind, **self.params()}, indent=2))
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors().items()}
        save_file(tensors, str(directory / f"{name}.safetensors"))


class StandardNormalPrior(Prior):
    kind = "standard_normal"

    def __init__(self, shape: Iterable[int]):
        self.shape = tuple(int(s) for s in shape)

    def sample(self, n, generator=None, device=None):
        return _draw((n, *self.shape), generator, device, torch.randn)


class UniformPrior(Prior):
    """U[low, high] in every coordinate."""

    kind = "uniform"

    def __init__(self, shape: Iterable[int], low: float = -1.0, high: float = 1.0):
        if not high > low:
            raise ValueError(f"uniform prior needs high > low, got low={low}, high={high}")
        self.shape = tuple(int(s) for s in shape)
        self.low, self.high = float(low), float(high)

    def sample(self, n, generator=None, device=None):
        u = _draw((n, *self.shape), generator, device, torch.rand)
        return self.low + (self.high - self.low) * u

    def params(self):
        return {**super().params(), "low": self.low, "high": self.high}


class GaussianStats:
    """Streaming mean and covariance in float64 (Chan et al.'s pairwise merge of batches)."""

    def __init__(self, dim: int):
        self.n = 0
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.m2 = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, batch: Tensor) -> None:
        x = batch.detach().reshape(batch.shape[0], -1).to(device="cpu", dtype=torch.float64)
        nb = x.shape[0]
        if nb == 0:
            return
        mean_b = x.mean(0)
        centred = x - mean_b
        m2_b = centred.T @ centred
        delta = mean_b - self.mean
        total = self.n + nb
        self.m2 += m2_b + torch.outer(delta, delta) * (self.n * nb / total)
        self.mean += delta * (nb / total)
        self.n = total

    def covariance(self) -> Tensor:
        """The maximum-likelihood covariance E[(x - mu)(x - mu)^T] of Eq. 8."""
        if self.n < 2:
            raise ValueError(f"need at least 2 samples to fit a Gaussian prior, got {self.n}")
        return self.m2 / self.n


def cholesky_with_jitter(cov: Tensor, max_tries: int = 8) -> tuple[Tensor, float]:
    """Cholesky factor of ``cov``, adding diagonal jitter (growing x10) until it succeeds."""
    scale = float(cov.diagonal().mean().clamp_min(1e-12))
    eye = torch.eye(cov.shape[0], dtype=cov.dtype)
    for attempt in range(max_tries + 1):
        jitter = 0.0 if attempt == 0 else scale * 10.0 ** (attempt - 1 - max_tries)
        factor, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        if int(info) == 0:
            return factor, jitter
    raise ValueError(f"covariance is not positive definite even with jitter {jitter:.3g}")


class GaussianPrior(Prior):
    """N(mean, L L^T), optionally clamped to [low, high] (images use [-1, 1])."""

    kind = "gaussian"

    def __init__(
        self,
        mean: Tensor,
        scale_tril: Tensor,
        shape: Iterable[int] | None = None,
        clamp: tuple[float, float] | None = None,
        jitter: float = 0.0,
    ):
        self.mean = mean.reshape(-1).float()
        self.scale_tril = scale_tril.float()
        self.shape = tuple(int(s) for s in shape) if shape is not None else (self.mean.numel(),)
        if self.scale_tril.shape != (self.dim, self.dim) or self.mean.numel() != self.dim:
            raise ValueError(
                f"Gaussian prior of shape {self.shape} needs mean ({self.dim},) and scale_tril "
                f"({self.dim}, {self.dim}); got {tuple(mean.shape)} and {tuple(scale_tril.shape)}"
            )
        self.clamp = tuple(clamp) if clamp is not None else None
        self.jitter = float(jitter)

    @classmethod
    def isotropic(cls, mean: Iterable[float], variance: float) -> "GaussianPrior":
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
        return cls(mean_t, math.sqrt(variance) * torch.eye(mean_t.numel()))

    @classmethod
    def fit(
        cls,
        batches: Iterable[Tensor],
        shape: Iterable[int] | None = None,
        clamp: tuple[float, float] | None = None,
    ) -> "GaussianPrior":
        """Fit Eq. 8 in one pass over ``batches`` (float64 accumulation, Cholesky with jitter)."""
        stats: GaussianStats | None = None
        for batch in batches:
            if stats is None:
                stats = GaussianStats(batch[0].numel())
                shape = shape if shape is not None else tuple(batch.shape[1:])
            stats.update(batch)
        if stats is None:
            raise ValueError("cannot fit a Gaussian prior to an empty dataset")
        factor, jitter = cholesky_with_jitter(stats.covariance())
        return cls(stats.mean, factor, shape=shape, clamp=clamp, jitter=jitter)

    @property
    def covariance(self) -> Tensor:
        return self.scale_tril @ self.scale_tril.T

    def sample(self, n, generator=None, device=None):
        z = _draw((n, self.dim), generator, device, torch.randn)
        x = self.mean.to(z.device) + z @ self.scale_tril.to(z.device).T
        if self.clamp is not None:
            x = x.clamp(*self.clamp)
        return x.reshape(n, *self.shape)

    def tensors(self):
        return {"mean": self.mean, "scale_tril": self.scale_tril}

    def params(self):
        return {**super().params(), "clamp": list(self.clamp) if self.clamp else None, "jitter": self.jitter}


#: rows of a batch converted to float64 at once by :class:`CovarianceSketch` (bounds its memory)
SKETCH_ROWS = 128


def fit_batch_size(dim: int, budget_elements: int = 2**24) -> int:
    """Data rows per batch when fitting a prior: at most 1024, and at most ``budget_elements``
    numbers per batch (64 MB in float32), so a 3 x 128 x 128 dataset streams 341 images at a time."""
    return max(1, min(1024, budget_elements // max(dim, 1)))


class CovarianceSketch:
    """One streaming pass over data, in float64: the count, the mean and per-coordinate
    variance (the diagonal of Sigma_D in Eq. 8), and the product Sigma_D @ omega for a d x k
    test matrix ``omega``, without ever forming the d x d matrix.

    Sums are taken around ``centre`` (the first batch's mean when not given), which keeps
    the one-pass formula E[(x-c)(x-c)^T] - (mu-c)(mu-c)^T free of cancellation when the data's
    mean is far from 0. Memory: two d x k and three length-d float64 arrays, plus one batch and
    float64 copies of at most :data:`SKETCH_ROWS` of its rows at a time.
    """

    def __init__(self, omega: Tensor, centre: Tensor | None = None):
        self.omega = omega.to(torch.float64)
        self.centre = centre
        self.n = 0
        dim, k = self.omega.shape
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.sum_sq = torch.zeros(dim, dtype=torch.float64)
        self.product = torch.zeros(dim, k, dtype=torch.float64)

    def update(self, batch: Tensor) -> None:
        flat = batch.detach().reshape(batch.shape[0], -1).to(device="cpu")
        if flat.shape[0] == 0:
            return
        if self.centre is None:
            self.centre = flat.sum(0, dtype=torch.float64) / flat.shape[0]
        for rows in flat.split(SKETCH_ROWS):
            x = rows.to(torch.float64).sub_(self.centre)
            self.n += x.shape[0]
            self.sum += x.sum(0)
            self.sum_sq += x.square().sum(0)
            self.product += x.T @ (x @ self.omega)

    def mean(self) -> Tensor:
        return self.centre + self.sum / self.n

    def variance(self) -> Tensor:
        shift = self.sum / self.n
        return (self.sum_sq / self.n - shift * shift).clamp_min(0.0)

    def covariance_times_omega(self) -> Tensor:
        """Sigma_D @ omega with Sigma_D the maximum-likelihood covariance of Eq. 8."""
        shift = self.sum / self.n
        return self.product / self.n - torch.outer(shift, shift @ self.omega)


def _stream(batches: Callable[[], Iterable[Tensor]], sketch: CovarianceSketch) -> CovarianceSketch:
    for batch in batches():
        sketch.update(batch)
    if sketch.n < 2:
        raise ValueError(f"need at least 2 samples to fit a Gaussian prior, got {sketch.n}")
    return sketch


def nystrom_eigh(omega: Tensor, product: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenpairs (descending) of the Nystrom approximation
    Sigma ~ Y (Omega^T Y)^+ Y^T of a PSD matrix from Y = Sigma @ Omega, computed stably as in
    Tropp, Yurtsever, Udell and Cevher (2017, Alg. 3): shift by a tiny nu, Cholesky of
    Omega^T Y_nu, SVD of Y_nu L^-T, subtract nu from the squared singular values."""
    dim = product.shape[0]
    nu = math.sqrt(dim) * torch.finfo(torch.float64).eps * float(torch.linalg.matrix_norm(product, 2))
    y_nu = product + nu * omega
    core = omega.T @ y_nu
    factor, _ = cholesky_with_jitter((core + core.T) / 2)
    e = torch.linalg.solve_triangular(factor, y_nu.T, upper=False).T
    u, s, _ = torch.linalg.svd(e, full_matrices=False)
    return (s * s - nu).clamp_min(0.0), u


class LowRankGaussianPrior(Prior):
    """Eq. 8 for images too large for a d x d covariance: N(mu, U diag(lambda) U^T + diag(D)).

    U holds the top ``rank`` principal directions of the data covariance Sigma_D and lambda
    their variances; the diagonal D = diag(Sigma_D) - diag(U diag(lambda) U^T) >= 0 keeps every
    pixel's variance exact, so only the correlations outside the top directions are dropped.
    Storage is d * (rank + 2) + rank numbers (50 MB for 3x128x128 at rank 256) where the full
    Cholesky factor needs d^2 (9.7 GB). Samples are clamped to ``clamp`` (images: [-1, 1],
    as in the authors' code).

    :meth:`fit` is a randomized range finder (Halko, Martinsson and Tropp, 2011) run over
    streamed data: each pass accumulates Sigma_D @ Omega batch by batch (:class:`CovarianceSketch`,
    memory O(d k) with k = rank + oversample), the first with a Gaussian Omega, each later one
    with Omega = an orthonormal basis of the previous product (a power iteration, sharpening
    the subspace). The eigenpairs come from the Nystrom approximation of the last product
    (:func:`nystrom_eigh`), which for a PSD matrix is at least as accurate as projecting onto the
    range. ``passes=2`` (default) costs two reads of the dataset; ``passes=1`` one read, with
    a less accurate subspace when the spectrum decays slowly.
    """

    kind = "low_rank_gaussian"

    def __init__(
        self,
        mean: Tensor,
        components: Tensor,
        eigenvalues: Tensor,
        residual: Tensor,
        shape: Iterable[int] | None = None,
        clamp: tuple[float, float] | None = None,
        total_variance: float | None = None,
    ):
        self.mean = mean.reshape(-1).float()
        self.components = components.float()
        self.eigenvalues = eigenvalues.float()
        self.residual = residual.reshape(-1).float()
        self.shape = tuple(int(s) for s in shape) if shape is not None else (self.mean.numel(),)
        rank = self.eigenvalues.numel()
        if (self.mean.numel() != self.dim or self.components.shape != (self.dim, rank)
                or self.residual.numel() != self.dim):
            raise ValueError(
                f"low-rank Gaussian prior of shape {self.shape} needs mean and residual ({self.dim},) and "
                f"components ({self.dim}, rank); got {tuple(mean.shape)}, {tuple(components.shape)}, "
                f"{tuple(residual.shape)}"
            )
        if bool((self.eigenvalues < 0).any()) or bool((self.residual < 0).any()):
            raise ValueError("low-rank Gaussian prior needs non-negative eigenvalues and residual variances")
        self.clamp = tuple(clamp) if clamp is not None else None
        self.total_variance = (float(total_variance) if total_variance is not None
                               else float(self.eigenvalues.sum() + self.residual.sum()))

    @property
    def rank(self) -> int:
        return self.eigenvalues.numel()

    @classmethod
    def fit(
        cls,
        batches: Callable[[], Iterable[Tensor]],
        rank: int,
        oversample: int = 10,
        passes: int = 2,
        shape: Iterable[int] | None = None,
        clamp: tuple[float, float] | None = None,
        seed: int = 0,
    ) -> "LowRankGaussianPrior":
        """Fit to the data ``batches()`` yields (called once per pass; see the class docstring)."""
        if rank < 1 or oversample < 0 or passes < 1:
            raise ValueError(f"need rank >= 1, oversample >= 0, passes >= 1; got {rank}, {oversample}, {passes}")
        if shape is None:
            first = next(iter(batches()), None)
            if first is None:
                raise ValueError("cannot fit a Gaussian prior to an empty dataset")
            shape = tuple(first.shape[1:])
        shape = tuple(shape)
        dim = math.prod(shape)
        k = min(dim, rank + oversample)
        g = torch.Generator().manual_seed(seed)
        omega = torch.randn(dim, k, generator=g, dtype=torch.float64)
        sketch = _stream(batches, CovarianceSketch(omega))
        mean, variance = sketch.mean(), sketch.variance()
        product = sketch.covariance_times_omega()
        for _ in range(passes - 1):
            omega = torch.linalg.qr(product).Q
            product = _stream(batches, CovarianceSketch(omega, centre=mean)).covariance_times_omega()
        eigenvalues, components = nystrom_eigh(omega, product)
        rank = min(rank, k)
        eigenvalues, components = eigenvalues[:rank], components[:, :rank]
        residual = (variance - (components * components) @ eigenvalues).clamp_min(0.0)
        return cls(mean, components, eigenvalues, residual, shape, clamp, float(variance.sum()))

    @staticmethod
    def fit_memory_bytes(dim: int, rank: int, oversample: int = 10, batch_size: int | None = None) -> int:
        """Peak memory of :meth:`fit`, in bytes: about five d x k float64 arrays (Omega, the
        running product, and Y_nu, its triangular solve and U in :func:`nystrom_eigh`), a float32
        batch (default :func:`fit_batch_size`) and two float64 blocks of :data:`SKETCH_ROWS` rows."""
        k = min(dim, rank + oversample)
        batch_size = fit_batch_size(dim) if batch_size is None else batch_size
        return 8 * (5 * dim * k + 2 * min(batch_size, SKETCH_ROWS) * dim + 4 * dim) + 4 * batch_size * dim

    def memory_bytes(self) -> int:
        """Bytes held by the fitted prior's tensors (float32)."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def variance_kept(self) -> float:
        """The share of the data's total variance trace(Sigma_D) along the top ``rank``
        directions; the rest is kept only as per-pixel variance in D."""
        return float(self.eigenvalues.sum()) / self.total_variance if self.total_variance > 0 else 1.0

    @property
    def covariance(self) -> Tensor:
        """U diag(lambda) U^T + diag(D) as a dense d x d matrix (small d only)."""
        return (self.components * self.eigenvalues) @ self.components.T + torch.diag(self.residual)

    def sample(self, n, generator=None, device=None):
        z = _draw((n, self.rank + self.dim), generator, device, torch.randn)
        to = z.device
        low, diag = z[:, : self.rank], z[:, self.rank :]
        x = (self.mean.to(to) + (low * self.eigenvalues.to(to).sqrt()) @ self.components.to(to).T
             + diag * self.residual.to(to).sqrt())
        if self.clamp is not None:
            x = x.clamp(*self.clamp)
        return x.reshape(n, *self.shape)

    def tensors(self):
        return {"mean": self.mean, "components": self.components, "eigenvalues": self.eigenvalues,
                "residual": self.residual}

    def params(self):
        return {**super().params(), "clamp": list(self.clamp) if self.clamp else None,
                "total_variance": self.total_variance}


class DatasetPrior(Prior):
    """Draws uniformly (with replacement) from given samples, e.g. a source image domain."""

    kind = "dataset"

    def __init__(self, samples: Tensor):
        if samples.ndim < 2 or samples.shape[0] == 0:
            raise ValueError("a dataset prior needs a non-empty batch of samples, shape (n, ...)")
        self.samples = samples.detach().float().cpu()
        self.shape = tuple(self.samples.shape[1:])

    def sample(self, n, generator=None, device=None):
        idx = _draw((n,), generator, None, lambda s, **kw: torch.randint(self.samples.shape[0], s, **kw))
        return self.samples[idx.cpu()].to(device or "cpu")

    def tensors(self):
        return {"samples": self.samples}


class DataSourcePrior(Prior):
    """Draws augmented images from a finite image dataset, e.g. the source domain of unpaired
    image-to-image translation (Sec. 6.5: q' is the cat domain, p the dog domain). Saved as the
    dataset's name and options, so nothing but its description is stored."""

    kind = "data_source"

    def __init__(self, name: str, params: dict[str, Any] | None = None):
        from fdrl.data import ImageData, build_data

        self.data_name, self.data_params = name, dict(params or {})
        self.data = build_data(name, **self.data_params)
        if not isinstance(self.data, ImageData):
            raise ValueError(f"a dataset prior with data= needs an image dataset, not '{name}'")
        self.shape = tuple(self.data.shape)

    def sample(self, n, generator=None, device=None):
        return self.data.sample(n, generator).to(device or "cpu")

    def params(self):
        return {**super().params(), "data": {"name": self.data_name, "params": self.data_params}}


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
            from fdrl.data.source import ArrayData

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
