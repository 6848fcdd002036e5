"""Marginal calibration of samples: each sampled feature (a numeric column of a table, a
principal coefficient, a pixel of an image) is passed through the monotone map that takes the trained sampler's marginal onto the
training data's marginal.

The flow of Eq. 9 carries particles with a learned, noisy gradient field. Its errors matter
most where the data has point masses and bounds: an integer pixel that is 0 in 94% of rows came
back 0 in 71% of samples, and an image's background came back speckled. A classifier two-sample
test sees every such feature, while the joint arrangement (which sample is high in which feature)
is what the flow gets right. A monotone map per feature keeps that arrangement (each sample's
rank in every feature) and gives each feature the training data's distribution. It is fitted
once, after training, from particles of the finished sampler (K + kappa steps, Algorithm 2;
a principal space's coefficients, before decoding), as the piecewise-linear map between the two
sets of quantiles (:func:`quantile_count`), and stored in the run (``marginals.safetensors``);
every sample is then mapped on its own (the map does not depend on the other samples drawn with
it). Only the sampler it was fitted to is mapped: samples with another number of flow steps, or
guided towards a class, are left as the flow gives them. Labels (one-hot features) are not
mapped. On a small table whose columns take few values the map puts samples on the rows' own
values column by column, which can make near-copies of rows: the trainer then applies it only
part of the way (``strength``), the most of it that keeps near-copies at the smoothing's 5%.
A table's column whose sampled marginal is already within the sampling noise of the rows' is
left out of the map (:data:`TABLE_GAP`): mapping it would only add the noise of the rows'
quantiles.

Hand-written (``torch.quantile`` and a batched ``torch.searchsorted``) rather than
scikit-learn's ``QuantileTransformer``: that transform maps data to a reference distribution
for training, where this one maps finished samples, in torch, for thousands of pixels at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

MARGINALS_FILE = "marginals.safetensors"
#: features whose quantiles ``torch.quantile`` computes at once (it refuses inputs of more than
#: 2**24 elements)
_QUANTILE_CHUNK_ELEMENTS = 1 << 23
#: quantiles per feature: one per ROWS_PER_QUANTILE training rows, between MIN_QUANTILES and
#: MAX_QUANTILES (0, 1/(Q-1), ..., 1: the extremes included, so nothing maps beyond the training
#: rows' range). With a quantile per row or two the map would put samples on the training rows'
#: own values, column by column, and on a small table of few columns that makes near-copies of
#: rows (moons, 400 rows: 4.7% near-copies with 256 quantiles against 2.3% unmapped)
ROWS_PER_QUANTILE, MIN_QUANTILES, MAX_QUANTILES = 10, 16, 256
#: a table's column is mapped only when its two sets of quantiles differ by more than this many
#: times their sampling variance (:func:`quantile_gap`). Below it the map would move a sample by
#: the noise of a few hundred rows' quantiles, which on thin joint structure (two moons, tight
#: clusters) pushes samples off it. Measured over three splits (docs/tables-quality.md):
#: gated at 1.5, moons C2ST 0.531 / blobs 0.508 / diabetes 0.518 / wine 0.544 against 0.535 /
#: 0.530 / 0.537 / 0.552 mapping every column, the rest level; shrinking each column's map by
#: 1 - noise / gap instead lost diabetes (0.75): a map weakened at all blurs a column's point
#: masses, which a classifier sees
TABLE_GAP = 1.5


def quantile_count(rows: int) -> int:
    """How many quantiles describe a marginal of ``rows`` training rows."""
    return max(MIN_QUANTILES, min(MAX_QUANTILES, rows // ROWS_PER_QUANTILE))


def _quantiles(x: Tensor, probs: Tensor) -> Tensor:
    """The ``probs`` quantiles of every column of ``x``: shape (columns, len(probs)), float64."""
    chunk = max(1, _QUANTILE_CHUNK_ELEMENTS // max(1, x.shape[0]))
    return torch.cat([torch.quantile(part.double(), probs, dim=0).T for part in x.split(chunk, dim=1)]) \
        if x.shape[1] else torch.zeros(0, probs.numel(), dtype=torch.float64)


def _interpolate(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Row j of ``x`` (features, n) through the piecewise-linear map (xp[j], fp[j]) (features, Q),
    xp[j] non-decreasing; constant beyond the ends. At ties in xp (a point mass of the sampler) a
    value on the tie maps to the first of its quantiles."""
    i = torch.searchsorted(xp.contiguous(), x.contiguous()).clamp(1, xp.shape[1] - 1)
    x0, x1 = xp.gather(1, i - 1), xp.gather(1, i)
    y0, y1 = fp.gather(1, i - 1), fp.gather(1, i)
    weight = ((x - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    return y0 + weight * (y1 - y0)


def _quantile_variance(q: Tensor, levels: Tensor, n: int) -> Tensor:
    """The sampling variance of the quantiles ``q`` (features, Q) at ``levels`` of ``n`` draws,
    p (1 - p) / (n f(q_p)^2), with 1 / f = dq/dp from the quantiles' own differences: 0 inside a
    point mass, where the quantile does not move."""
    slope = torch.gradient(q, spacing=(levels,), dim=1)[0]
    return levels * (1 - levels) / n * slope ** 2


def quantile_gap(source: Tensor, target: Tensor, levels: Tensor, particles: int, rows: int) -> Tensor:
    """Per feature, the mean over the inner quantiles of (target - source)^2 over the sum of their
    sampling variances: about 1 or less where the sampler already draws the rows' marginal, large
    where it does not (a blurred point mass is infinitely far). The end quantiles are left out:
    there the slope from the quantiles' differences understates an extreme's variance."""
    gap = (target - source) ** 2
    variance = _quantile_variance(source, levels, particles) + _quantile_variance(target, levels, rows)
    scale = (target[:, -1:] - target[:, :1]) ** 2  # a floor for 0 / 0 inside a point mass of both
    return (gap / (variance + 1e-8 * scale + 1e-30))[:, 1:-1].mean(1)


class MarginalMap:
    """Feature ``features[j]`` of a sample (flattened: a pixel's index for an image) goes through the
    map with quantiles ``source[j]`` (the sampler's) -> ``target[j]`` (the training data's);
    ``steps``: the flow steps of the sampler it was fitted to."""

    def __init__(self, features: list[int], source: Tensor, target: Tensor, steps: int, strength: float = 1.0):
        self.features, self.steps, self.strength = [int(f) for f in features], int(steps), float(strength)
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"a marginal map's strength must be in (0, 1], got {strength}")
        self.source, self.target = source.float(), target.float()
        if self.source.shape != self.target.shape or self.source.shape[0] != len(self.features):
            raise ValueError(f"a marginal map needs source and target quantiles of shape ({len(self.features)}, Q), "
                             f"got {tuple(self.source.shape)} and {tuple(self.target.shape)}")
        if not (torch.isfinite(self.source).all() and torch.isfinite(self.target).all()):
            raise ValueError("a marginal map's quantiles must be finite")

    @classmethod
    def fit(cls, samples: Tensor, rows: Tensor, features: list[int], steps: int,
            quantiles: int | None = None, min_gap: float | None = None) -> "MarginalMap":
        """The map from the marginals of ``samples`` (the sampler's particles, model units) to
        those of the training ``rows`` for each feature index in ``features`` (of the flattened
        samples), through ``quantiles`` quantiles (None: :func:`quantile_count` of the rows).
        With ``min_gap``, only the features whose :func:`quantile_gap` exceeds it are kept."""
        n = rows.shape[0]
        quantiles = quantiles or quantile_count(n)
        probs = torch.linspace(0, 1, quantiles, dtype=torch.float64)
        index = torch.as_tensor(features, dtype=torch.long)
        # the rows' quantile at p is their order statistic of rank r = 1 + p (n - 1); the
        # sampler's quantile that goes onto it is taken at the level where that order statistic
        # sits in the distribution the rows were drawn from, Blom's (r - 3/8) / (n + 1/4), not at
        # p: the rows' minimum is not the distribution's, and mapping the sampler's extremes over
        # thousands of particles onto it squeezes the tails (128 Gaussian rows, 16 quantiles:
        # mapped standard deviation 0.929 at p, 0.993 at Blom's levels; the rows' own 0.991)
        levels = (1 + probs * (n - 1) - 0.375) / (n + 0.25)
        source = _quantiles(samples.flatten(1)[:, index], levels)
        target = _quantiles(rows.flatten(1)[:, index], probs)
        if min_gap is not None and len(features):
            kept = quantile_gap(source, target, levels, samples.shape[0], n) > min_gap
            features = [f for f, keep in zip(features, kept.tolist()) if keep]
            source, target = source[kept], target[kept]
        return cls(features, source, target, steps)

    def __call__(self, x: Tensor) -> Tensor:
        """``x`` with each listed feature moved ``strength`` of the way to its mapped value."""
        flat = x.flatten(1)
        if not self.features or flat.shape[0] == 0:
            return x.clone()
        index = torch.as_tensor(self.features, dtype=torch.long)
        values = flat[:, index].float()
        mapped = _interpolate(values.T, self.source, self.target).T
        out = flat.clone()
        out[:, index] = (mapped if self.strength == 1.0 else values + self.strength * (mapped - values)).to(x.dtype)
        return out.view_as(x)

    def weakened(self, strength: float) -> "MarginalMap":
        """The same map applied only ``strength`` of the way."""
        return MarginalMap(self.features, self.source, self.target, self.steps, strength)

    def save(self, directory: str | Path) -> None:
        meta = {"features": json.dumps(self.features), "steps": str(self.steps), "strength": repr(self.strength)}
        save_file({"source": self.source.contiguous(), "target": self.target.contiguous()},
                  str(Path(directory) / MARGINALS_FILE), metadata=meta)

    @classmethod
    def load(cls, directory: str | Path) -> "MarginalMap | None":
        """The map saved in ``directory``, or None if there is none; ValueError naming the file
        if it is damaged."""
        path = Path(directory) / MARGINALS_FILE
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:  # metadata and tensors in one read
                meta = handle.metadata() or {}
                source, target = handle.get_tensor("source"), handle.get_tensor("target")
            return cls(json.loads(meta["features"]), source, target, int(meta["steps"]),
                       float(meta.get("strength", 1.0)))
        except (ValueError, KeyError, TypeError, RuntimeError, OSError, SafetensorError) as err:
            raise ValueError(f"'{path}' is damaged ({type(err).__name__}: {err})") from None
