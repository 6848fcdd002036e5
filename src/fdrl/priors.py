"""Where particles start: the prior q'(x) of Algorithm 1 and 2.

* :class:`StandardNormalPrior`: N(0, I) (the swiss-roll prior of App. B).
* :class:`GaussianPrior`: N(mu, Sigma), fitted to data in a streaming pass (the data-dependent
  prior, Eq. 8), or given explicitly (the Gaussians of Section 3.1).
* :class:`UniformPrior`: U[a, b] (Lemma 1; the FDRL-UP ablation of Section 6.3).
* :class:`DatasetPrior`: draws from given samples (a source domain for translation, Sec. 6.5).

Every prior saves as plain tensors (safetensors) plus a JSON description, never pickles.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import torch
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


PRIORS: dict[str, type[Prior]] = {
    cls.kind: cls for cls in (StandardNormalPrior, UniformPrior, GaussianPrior, DatasetPrior)
}


def load_prior(directory: str | Path, name: str = "prior") -> Prior:
    """Inverse of :meth:`Prior.save`."""
    directory = Path(directory)
    meta_path, tensor_path = directory / f"{name}.json", directory / f"{name}.safetensors"
    if not meta_path.exists():
        raise FileNotFoundError(f"no prior at {meta_path}")
    meta = json.loads(meta_path.read_text())
    tensors = load_file(str(tensor_path)) if tensor_path.exists() else {}
    kind = meta.pop("kind")
    if kind == "standard_normal":
        return StandardNormalPrior(meta["shape"])
    if kind == "uniform":
        return UniformPrior(meta["shape"], meta["low"], meta["high"])
    if kind == "gaussian":
        clamp = tuple(meta["clamp"]) if meta.get("clamp") else None
        return GaussianPrior(
            tensors["mean"], tensors["scale_tril"], meta["shape"], clamp, meta.get("jitter", 0.0)
        )
    if kind == "dataset":
        return DatasetPrior(tensors["samples"])
    raise ValueError(f"unknown prior kind '{kind}' in {meta_path}; known: {', '.join(PRIORS)}")


PRIOR_NAMES = ["standard_normal", "gaussian", "data_gaussian", "uniform", "dataset"]


def build_prior(name: str, params: dict[str, Any], data: Any) -> Prior:
    """The ``prior`` section of a config, for samples shaped like ``data.shape``.

    * ``standard_normal``: N(0, I).
    * ``gaussian``: N(mean, variance I) with ``mean`` (list) and ``variance``.
    * ``data_gaussian``: Eq. 8 fitted to the training data (finite data: every sample, in
      batches; infinite toy data: ``fit_samples`` draws); optional ``clamp: [low, high]``.
    * ``uniform``: U[low, high] (default [-1, 1]).
    * ``dataset``: draws from the array in ``path`` (.npy, .csv, .txt).
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
            clamp = tuple(params["clamp"]) if params.get("clamp") else None
            if hasattr(data, "iter_batches"):
                batches = data.iter_batches(int(params.get("batch_size", 1024)))
            else:
                batches = [data.draw(int(params.get("fit_samples", 10000)), seed=int(params.get("seed", 0)))]
            return GaussianPrior.fit(batches, shape=shape, clamp=clamp)
        if name == "uniform":
            return UniformPrior(shape, float(params.get("low", -1.0)), float(params.get("high", 1.0)))
        if name == "dataset":
            from fdrl.data.source import ArrayData

            if "path" not in params:
                raise ValueError("prior 'dataset' needs prior.params.path=FILE (.npy, .csv or .txt)")
            return DatasetPrior(ArrayData.from_file(params["path"]).samples)
    except KeyError as err:
        raise ValueError(f"prior '{name}' is missing option {err}") from None
    raise ValueError(f"unknown prior '{name}'; choose one of: {', '.join(PRIOR_NAMES)}")
