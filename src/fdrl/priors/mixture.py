"""The Gaussian-mixture prior: Eq. 8's data-dependent Gaussian with several components, fitted to
the training rows by EM.

FDRL needs only draws from its prior q' (Algorithm 1 flows them; Algorithm 2 samples from them);
the closer q' is to the data, the less the flow of Eq. 9 has to carry. One Gaussian (Eq. 8)
misses the clusters a table has; a mixture of a few full-covariance Gaussians has them, and the
flow corrects what a mixture cannot give (docs/tables-quality.md measures both).

EM is scikit-learn's (``GaussianMixture``, a kept implementation); the prior stores weights,
means and Cholesky factors as tensors and draws with torch generators like every other prior.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from fdrl.priors.simple import Prior, _draw

#: covariance regularisations tried in turn (discrete or repeated rows make a component singular)
REG_COVARS = (1e-6, 1e-4, 1e-2)
#: components by default (at most one per ROWS_PER_COMPONENT rows)
DEFAULT_COMPONENTS = 10
#: fewest training rows per component
ROWS_PER_COMPONENT = 5
#: EM sees at most this many rows (a seeded subset of bigger tables: the mixture's few
#: parameters are fixed long before, and EM on millions of rows would take minutes)
MAX_FIT_ROWS = 50_000


def component_count(rows: np.ndarray, components: int = DEFAULT_COMPONENTS) -> int:
    """``components``, but at most one per :data:`ROWS_PER_COMPONENT` rows and one per distinct
    row (a table of few distinct rows, such as one column of codes, has no more clusters for
    EM to find), and at least one."""
    distinct = len(np.unique(rows, axis=0)) if rows.shape[0] > 0 else 0
    return max(1, min(components, rows.shape[0] // ROWS_PER_COMPONENT, distinct))


def _fit_em(rows: np.ndarray, components: int, seed: int):
    """scikit-learn's EM with full covariances, regularised as little as the rows allow."""
    from sklearn.mixture import GaussianMixture

    for reg_covar in REG_COVARS:
        try:
            return GaussianMixture(components, covariance_type="full", reg_covar=reg_covar, random_state=seed,
                                   max_iter=200).fit(rows)
        except ValueError:
            continue
    raise ValueError(f"a Gaussian mixture with {components} components could not be fitted to these rows "
                     "(singular covariances even with regularisation 1e-2)")


class GaussianMixturePrior(Prior):
    """sum_k w_k N(mu_k, L_k L_k^T), optionally clamped to [low, high]."""

    kind = "gaussian_mixture"

    def __init__(self, weights: Tensor, means: Tensor, scale_trils: Tensor, shape: Iterable[int] | None = None,
                 clamp: tuple[float, float] | None = None):
        self.weights = weights.reshape(-1).float()
        self.means = means.float()
        self.scale_trils = scale_trils.float()
        k, d = self.means.shape
        self.shape = tuple(int(s) for s in shape) if shape is not None else (d,)
        if self.weights.numel() != k or self.scale_trils.shape != (k, d, d) or self.dim != d:
            raise ValueError(f"a mixture prior of shape {self.shape} needs weights ({k},), means ({k}, {d}) and "
                             f"scale_trils ({k}, {d}, {d}); got {tuple(weights.shape)}, {tuple(means.shape)}, "
                             f"{tuple(scale_trils.shape)}")
        if not (bool(torch.isfinite(self.weights).all()) and float(self.weights.min()) >= 0
                and abs(float(self.weights.sum()) - 1) < 1e-3):
            raise ValueError("a mixture prior's weights must be non-negative and sum to 1")
        self.clamp = tuple(clamp) if clamp is not None else None

    @property
    def components(self) -> int:
        return int(self.weights.numel())

    @classmethod
    def fit(cls, rows: Tensor, components: int = DEFAULT_COMPONENTS, seed: int = 0,
            shape: Iterable[int] | None = None, clamp: tuple[float, float] | None = None) -> "GaussianMixturePrior":
        """EM on ``rows`` (n, ...): ``components`` components (:func:`component_count`), fitted
        to at most :data:`MAX_FIT_ROWS` of them."""
        flat = rows.detach().reshape(rows.shape[0], -1).double().cpu().numpy()
        if flat.shape[0] < 2:
            raise ValueError(f"need at least 2 rows to fit a mixture prior, got {flat.shape[0]}")
        if flat.shape[0] > MAX_FIT_ROWS:
            flat = flat[np.random.default_rng(seed).choice(flat.shape[0], MAX_FIT_ROWS, replace=False)]
        gmm = _fit_em(flat, component_count(flat, components), seed)
        as_tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
        shape = tuple(shape) if shape is not None else tuple(rows.shape[1:])
        return cls(as_tensor(gmm.weights_), as_tensor(gmm.means_), as_tensor(np.linalg.cholesky(gmm.covariances_)),
                   shape=shape, clamp=clamp)

    def sample(self, n, generator=None, device=None):
        gen_device = generator.device if generator is not None else torch.device(device or "cpu")
        which = torch.multinomial(self.weights.to(gen_device), n, replacement=True, generator=generator)
        z = _draw((n, self.dim), generator, device, torch.randn)
        which = which.to(z.device)
        x = torch.empty_like(z)
        for k in range(self.components):  # one matmul per component: no (n, d, d) gather
            rows = (which == k).nonzero().squeeze(1)
            x[rows] = self.means[k].to(z.device) + z[rows] @ self.scale_trils[k].to(z.device).T
        if self.clamp is not None:
            x = x.clamp(*self.clamp)
        return x.reshape(n, *self.shape)

    def tensors(self):
        return {"weights": self.weights, "means": self.means, "scale_trils": self.scale_trils}

    def params(self):
        return {**super().params(), "clamp": list(self.clamp) if self.clamp else None, "components": self.components}
