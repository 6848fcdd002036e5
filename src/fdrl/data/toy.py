"""Two-dimensional toy distributions: swiss roll, 8 and 25 Gaussians, a single Gaussian.

Each is an infinite source: every batch is a fresh draw from the distribution. The samplers'
options and their defaults are their specs' (:class:`fdrl.components.ToySpec`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.datasets import make_swiss_roll
from torch import Tensor

from fdrl import seeding
from fdrl.components import ToySpec, component_spec


def swissroll(n: int, rng: np.random.Generator, noise: float, scale: float) -> np.ndarray:
    """scikit-learn's ``make_swiss_roll``, the (x, z) plane, divided by ``scale``.

    noise 1.0 and scale 5 (the defaults) are the common convention of the FFJORD toy suite: a
    roll of radius about 2.5 in unit-ish coordinates, comparable to the N(0, I) prior of App. B.
    """
    points, _ = make_swiss_roll(n, noise=noise, random_state=int(rng.integers(2**31)))
    return points[:, [0, 2]] / scale


def _mixture(centres: np.ndarray, std: float) -> Callable[[int, np.random.Generator], np.ndarray]:
    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        return centres[rng.integers(len(centres), size=n)] + std * rng.standard_normal((n, 2))

    return sample


def eight_gaussians(n: int, rng: np.random.Generator, radius: float, std: float) -> np.ndarray:
    """Eight Gaussians (std ``std``) equally spaced on a circle of ``radius``."""
    angles = np.arange(8) * 2 * math.pi / 8
    return _mixture(radius * np.stack([np.cos(angles), np.sin(angles)], 1), std)(n, rng)


def twentyfive_gaussians(n: int, rng: np.random.Generator, spacing: float, std: float) -> np.ndarray:
    """A 5 x 5 grid of Gaussians at {-2, ..., 2} * ``spacing``."""
    grid = spacing * np.array([(i, j) for i in range(-2, 3) for j in range(-2, 3)], dtype=float)
    return _mixture(grid, std)(n, rng)


def gaussian(n: int, rng: np.random.Generator, mean: Sequence[float], variance: float) -> np.ndarray:
    """N(mean, variance I): the two ends of the density-chasm study (Section 3.1)."""
    mean_arr = np.asarray(mean, dtype=float)
    return mean_arr + math.sqrt(variance) * rng.standard_normal((n, mean_arr.size))


TOY_SAMPLERS: dict[str, Callable[..., np.ndarray]] = {
    "swissroll": swissroll,
    "8gaussians": eight_gaussians,
    "25gaussians": twentyfive_gaussians,
    "gaussian": gaussian,
}


class ToyDistribution:
    """An infinite data source drawing fresh samples from the toy distribution of ``spec``, or of
    a name and its options (``ToyDistribution("swissroll", noise=0.5)``)."""

    def __init__(self, spec: ToySpec | str, **params: object):
        if isinstance(spec, str):
            spec = component_spec("data", spec, params)
        elif params:
            raise TypeError("options go into the spec, not beside it")
        if not isinstance(spec, ToySpec):
            raise TypeError(f"ToyDistribution draws the 2-D toy sets, not data '{spec.name}'")
        self.spec, self.name = spec, spec.name
        self._sampler = TOY_SAMPLERS[spec.name]
        probe = self.sample(2, np.random.default_rng(0))
        self.shape = tuple(probe.shape[1:])

    def sample(self, n: int, rng: np.random.Generator) -> Tensor:
        return torch.as_tensor(self._sampler(n, rng, **self.spec.params), dtype=torch.float32)

    def batch(self, step: int, n: int, seed: int, rank: int = 0, world: int = 1) -> Tensor:
        """A fresh batch determined by (seed, step, rank)."""
        rng = np.random.default_rng(seeding.derived_seed(seed, "data", step, rank))
        return self.sample(n, rng)

    def draw(self, n: int, seed: int) -> Tensor:
        """``n`` samples for evaluation, from a stream disjoint from training batches."""
        return self.sample(n, np.random.default_rng(seeding.derived_seed(seed, "eval")))
