"""Image figures drawn from a trained run (Sec. 6.2, App. G): PNG grids, no axes.

* :func:`samples_figure`: a grid of samples (Fig. 4), the same samples as ``fdrl sample``.
* :func:`flow_figure`: the flow process (Fig. 8): one row per sample, one column per chosen
  flow step, from the prior draw (step 0) to the final sample.
* :func:`interpolation_figure`: interpolation in prior space (Fig. 9): one row per pair of
  prior draws, each interpolant flowed with the *same* noise (a generator of one seed for
  every interpolant), so the columns differ only by their starting point.
* :func:`neighbours_figure`: nearest neighbours in the training set (App. G, Fig. 12-13): a
  column of samples, a red bar, then each sample's ``k`` nearest training images by L2
  distance in pixel space, or in a feature space (a digit classifier's penultimate features
  or any extractor).
* :func:`prior_figure`: draws from the prior (Fig. 11).

Interpolation (:func:`interpolate_prior`) works on the standard-normal latent z of a Gaussian
prior: x = mu + L z for :class:`~fdrl.priors.GaussianPrior` (then its clamp), the matching map
for :class:`~fdrl.priors.LowRankGaussianPrior`, x = z for the standard normal. The default is
spherical interpolation (slerp) of z: a linear path between two draws of N(0, I) in d
dimensions passes through points of norm about sqrt(d / 2), far from the shell of radius
sqrt(d) where the prior's mass lies, so its middle images would be atypically smooth; slerp
keeps the norm. ``mode="linear"`` interpolates z linearly. Priors without a Gaussian latent
(uniform, dataset) are interpolated linearly in sample space. The endpoints are exactly the
prior draws ``prior.sample(rows, seeding.generator(seed, "prior", 0 | 1))``.

Every grid has 1 pixel of padding between cells; images are scaled up by an integer
``scale`` (nearest neighbour; default :func:`fdrl.image_io.default_scale`, 4 for 8x8 digits), so a grid of
``r`` rows and ``c`` columns of H x W images is ``r (sH + 1) + 1`` by ``c (sW + 1) + 1``
pixels (the neighbours figure adds a 3-pixel red bar and one padding column).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from functools import reduce
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fdrl import seeding
from fdrl.image_io import default_scale, image_grid, rows_grid, save_png
from fdrl.model import FDRL
from fdrl.priors import GaussianPrior, LowRankGaussianPrior, Prior, StandardNormalPrior

#: pixels of the red bar between samples and their neighbours
SEPARATOR = 3
INTERPOLATION_MODES = ("slerp", "linear")


# -- loading -------------------------------------------------------------------------------

def load_image_run(run: str | Path, device: str | torch.device = "cpu", checkpoint: str | Path | None = None) -> FDRL:
    """:meth:`FDRL.load` for a run (or saved model) of images; vector runs are refused."""
    model = FDRL.load(run, device=device, checkpoint=checkpoint)
    model.require_pixels("an image figure")
    if len(model.prior.shape) != 3:
        raise ValueError(f"image figures need a run on images (C, H, W); '{run}' has samples of shape "
                         f"{tuple(model.prior.shape)} (use `fdrl figure swissroll` for 2-D runs)")
    return model


def _positive(value: int, name: str) -> None:
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")


# -- samples and prior (Fig. 4, Fig. 11) -------------------------------------------------------

def samples_figure(model: FDRL, out: str | Path, n: int = 64, seed: int = 0, steps: int | None = None,
                   nrow: int | None = None, scale: int | None = None) -> Path:
    """Fig. 4: ``n`` samples (Algorithm 2, ``model.sample(n, steps, seed)``) in a grid of
    ``nrow`` columns (default about sqrt(n))."""
    _positive(n, "n")
    samples = model.sample(n, steps=steps, seed=seed)
    nrow = nrow or max(1, round(math.sqrt(n)))
    return save_png(image_grid(samples, nrow, scale or default_scale(samples.shape)), out)


def prior_figure(model: FDRL, out: str | Path, n: int = 64, seed: int = 0, nrow: int | None = None,
                 scale: int | None = None) -> Path:
    """Fig. 11: ``n`` draws from the run's prior (the flow's starting points for ``seed``)."""
    _positive(n, "n")
    draws = model.prior.sample(n, seeding.generator(seed, "prior", 0))
    nrow = nrow or max(1, round(math.sqrt(n)))
    return save_png(image_grid(draws, nrow, scale or default_scale(draws.shape)), out)


# -- the flow process (Fig. 8) -----------------------------------------------------------------

def default_flow_steps(total: int, columns: int = 8) -> list[int]:
    """``columns`` flow steps spread evenly over 0 .. ``total`` (fewer if they coincide)."""
    _positive(columns, "columns")
    if columns == 1:
        return [total]
    return sorted({round(i * total / (columns - 1)) for i in range(columns)})


def flow_snapshots(model: FDRL, n: int, show: Sequence[int], seed: int = 0) -> Tensor:
    """Particles at the flow steps ``show``: (n, len(show), C, H, W). The flow starts from
    ``prior.sample(n, generator(seed, "prior", 0))`` with noise from ``generator(seed, "flow",
    0)``, so the column at step K + kappa is ``model.particles(n, seed=seed)``: the flow's own
    particles, which ``model.sample`` also gives unless a marginal map applies to its samples."""
    _positive(n, "n")
    show = [int(s) for s in show]
    if not show or min(show) < 0:
        raise ValueError(f"flow steps to show must be >= 0 and at least one; got {show}")
    last = max(show)
    every = max(1, reduce(math.gcd, show, last))
    x0 = model.prior.sample(n, seeding.generator(seed, "prior", 0), device=model.device)
    trajectory: list[Tensor] = []
    model.flow(x0, last, seeding.generator(seed, "flow", 0, device=model.device), trajectory=trajectory,
               record_every=every)
    return torch.stack([trajectory[s // every] for s in show], dim=1)


def flow_figure(model: FDRL, out: str | Path, n: int = 8, show: Sequence[int] | None = None, seed: int = 0,
                columns: int = 8, scale: int | None = None) -> Path:
    """Fig. 8: one row per sample, one column per flow step in ``show`` (default ``columns``
    steps from 0, the prior draw, to K + kappa, the sample)."""
    if show is None:
        show = default_flow_steps(model.sampling_steps, columns)
    stack = flow_snapshots(model, n, show, seed)
    return save_png(rows_grid(stack, scale or default_scale(stack.shape)), out)


# -- interpolation in prior space (Fig. 9) -----------------------------------------------------

def has_gaussian_latent(prior: Prior) -> bool:
    return isinstance(prior, (StandardNormalPrior, GaussianPrior, LowRankGaussianPrior))


def prior_latent(prior: Prior, n: int, generator: torch.Generator | None = None) -> Tensor:
    """The standard-normal latent of ``n`` draws of a Gaussian prior, drawn exactly as its
    ``sample`` draws it, so ``prior_from_latent(prior, prior_latent(prior, n, g))`` equals
    ``prior.sample(n, g)`` for a generator in the same state."""
    if isinstance(prior, LowRankGaussianPrior):
        dim = prior.rank + prior.dim
    elif has_gaussian_latent(prior):
        dim = prior.dim
    else:
        raise ValueError(f"prior '{prior.kind}' has no Gaussian latent; interpolate with mode linear")
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn((n, dim), generator=generator, device=device)


def prior_from_latent(prior: Prior, z: Tensor) -> Tensor:
    """The affine map (and clamp) a Gaussian prior applies to its latent ``z`` in ``sample``."""
    n, to = z.shape[0], z.device
    if isinstance(prior, StandardNormalPrior):
        return z.reshape(n, *prior.shape)
    if isinstance(prior, GaussianPrior):
        x = prior.mean.to(to) + z @ prior.scale_tril.to(to).T
    elif isinstance(prior, LowRankGaussianPrior):
        low, diag = z[:, : prior.rank], z[:, prior.rank :]
        x = (prior.mean.to(to) + (low * prior.eigenvalues.to(to).sqrt()) @ prior.components.to(to).T
             + diag * prior.residual.to(to).sqrt())
    else:
        raise ValueError(f"prior '{prior.kind}' has no Gaussian latent; interpolate with mode linear")
    if prior.clamp is not None:
        x = x.clamp(*prior.clamp)
    return x.reshape(n, *prior.shape)


def interpolate(a: Tensor, b: Tensor, t: float, mode: str = "slerp") -> Tensor:
    """Row-wise interpolation between ``a`` and ``b`` (n, d) at ``t`` in [0, 1]: spherical
    (slerp: the great-circle path, norms interpolated too; linear where the rows are
    parallel) or linear. t = 0 gives ``a`` and t = 1 gives ``b`` exactly."""
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"unknown interpolation mode '{mode}'; choose one of: {', '.join(INTERPOLATION_MODES)}")
    if t == 0.0:
        return a.clone()
    if t == 1.0:
        return b.clone()
    linear = (1 - t) * a + t * b
    if mode == "linear":
        return linear
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum(1) / (a64.norm(dim=1) * b64.norm(dim=1)).clamp_min(1e-12)
    omega = cos.clamp(-1, 1).acos()
    sin = omega.sin()
    wa, wb = ((1 - t) * omega).sin() / sin, (t * omega).sin() / sin
    spherical = (wa[:, None] * a64 + wb[:, None] * b64).to(a.dtype)
    return torch.where((sin > 1e-6)[:, None], spherical, linear)


def interpolate_prior(model: FDRL, rows: int = 4, points: int = 8, seed: int = 0, mode: str | None = None,
                      steps: int | None = None) -> tuple[Tensor, Tensor]:
    """Interpolate between ``rows`` pairs of prior draws at ``points`` evenly spaced t in
    [0, 1]; flow every interpolant for ``steps`` (default K + kappa) with the same noise.

    ``mode``: slerp (default for Gaussian priors) or linear in the latent z; priors without a
    Gaussian latent only allow linear, in sample space. Returns (starting points, flowed
    samples), each (rows, points, C, H, W); columns 0 and -1 start from the prior draws
    ``prior.sample(rows, generator(seed, "prior", 0))`` and ``(..., 1)``.
    """
    _positive(rows, "rows")
    if points < 2:
        raise ValueError(f"interpolation needs at least 2 points (the endpoints), got {points}")
    prior = model.prior
    gaussian = has_gaussian_latent(prior)
    mode = mode or ("slerp" if gaussian else "linear")
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"unknown interpolation mode '{mode}'; choose one of: {', '.join(INTERPOLATION_MODES)}")
    if not gaussian and mode != "linear":
        raise ValueError(f"prior '{prior.kind}' has no Gaussian latent to slerp; use mode linear "
                         "(interpolates in sample space)")
    generators = [seeding.generator(seed, "prior", i) for i in (0, 1)]
    if gaussian:
        ends = [prior_latent(prior, rows, g) for g in generators]
        to_sample = lambda z: prior_from_latent(prior, z)  # noqa: E731
    else:
        ends = [prior.sample(rows, g).reshape(rows, -1) for g in generators]
        to_sample = lambda x: x.reshape(rows, *prior.shape)  # noqa: E731
    starts, flowed = [], []
    for i in range(points):
        t = i / (points - 1)
        x0 = to_sample(interpolate(ends[0], ends[1], t, mode)).to(model.device)
        starts.append(x0.cpu())
        noise = seeding.generator(seed, "flow", 0, device=model.device)
        flowed.append(model.flow(x0, steps, noise).cpu())
    return torch.stack(starts, dim=1), torch.stack(flowed, dim=1)


def interpolation_figure(model: FDRL, out: str | Path, rows: int = 4, points: int = 8, seed: int = 0,
                         mode: str | None = None, steps: int | None = None, scale: int | None = None) -> Path:
    """Fig. 9: one row per pair of prior draws, ``points`` columns from one to the other."""
    _, flowed = interpolate_prior(model, rows, points, seed, mode, steps)
    return save_png(rows_grid(flowed, scale or default_scale(flowed.shape)), out)


# -- nearest neighbours in the training set (App. G) --------------------------------------------

def _flat_features(x: Tensor, extractor: Callable[[Tensor], Tensor] | None) -> Tensor:
    if extractor is None:
        return x.reshape(x.shape[0], -1).double()
    with torch.no_grad():
        device = next(extractor.parameters()).device if isinstance(extractor, torch.nn.Module) else x.device
        features = extractor(x.to(device))
    return features.reshape(features.shape[0], -1).double().cpu()


def nearest_neighbours(
    queries: Tensor, data: Iterable[Tensor], k: int = 10, extractor: Callable[[Tensor], Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest training images of each query by L2 distance in pixel space
    (``extractor`` None) or between ``extractor``'s features. ``data`` is an iterable of
    batches (e.g. ``ImageData.iter_batches``), read once. Returns (distances, indices), each
    (n, k), nearest first; indices count images in the order ``data`` yields them."""
    _positive(k, "k")
    if isinstance(extractor, torch.nn.Module):
        extractor.eval()
    q = _flat_features(queries, extractor)
    best_d = torch.full((q.shape[0], 0), float("inf"), dtype=torch.float64)
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
    offset = 0
    for batch in data:
        if tuple(batch.shape[1:]) != tuple(queries.shape[1:]):
            raise ValueError(f"training images have shape {tuple(batch.shape[1:])}, samples {tuple(queries.shape[1:])}")
        d = torch.cdist(q, _flat_features(batch, extractor))
        index = torch.arange(offset, offset + batch.shape[0]).expand(q.shape[0], -1)
        best_d, order = torch.cat([best_d, d], 1).sort(dim=1, stable=True)
        best_i = torch.cat([best_i, index], 1).gather(1, order)
        best_d, best_i = best_d[:, :k], best_i[:, :k]
        offset += batch.shape[0]
    if offset < k:
        raise ValueError(f"the training set has {offset} images, fewer than k = {k} neighbours")
    return best_d, best_i


def neighbours_figure(
    model: FDRL,
    data: Any,
    out: str | Path,
    n: int = 8,
    k: int = 10,
    extractor: Callable[[Tensor], Tensor] | None = None,
    seed: int = 0,
    steps: int | None = None,
    scale: int | None = None,
    batch_size: int = 1024,
) -> Path:
    """App. G: ``n`` samples (left of a red bar) and their ``k`` nearest images of ``data`` (an
    :class:`~fdrl.data.ImageData`, e.g. the run's training set, clean images) to the right."""
    _positive(n, "n")
    if tuple(data.shape) != tuple(model.prior.shape):
        raise ValueError(f"training images have shape {tuple(data.shape)}, the run's samples "
                         f"{tuple(model.prior.shape)}")
    samples = model.sample(n, steps=steps, seed=seed)
    _, indices = nearest_neighbours(samples, data.iter_batches(batch_size), k, extractor)
    neighbours = data.images(indices.reshape(-1))
    scale = scale or default_scale(samples.shape)
    left, right = image_grid(samples, 1, scale), image_grid(neighbours, k, scale)
    bar = torch.zeros(3, left.shape[1], SEPARATOR)
    bar[0] = 1.0
    return save_png(torch.cat([left, bar, right], dim=2), out)
