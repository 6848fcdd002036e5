"""Eq. 8 with a memory-bounded covariance: the top principal directions of the data plus a
diagonal, fitted in streaming passes (a randomised Nystrom sketch) without a d x d matrix."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from fdrl.priors.gaussian import cholesky_with_jitter
from fdrl.priors.simple import Prior, _draw


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
