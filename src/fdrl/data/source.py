"""The data interface the trainer uses, finite arrays of vectors, and the ``data`` factory.

A data source has ``shape`` (one sample) and ``batch(step, n, seed, rank, world)``: the batch a
given rank uses at a given training step. Batches depend only on these numbers, so a resumed
or a distributed run sees exactly the data an uninterrupted single-process run would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from fdrl import seeding
from fdrl.data.toy import TOY_SAMPLERS, ToyDistribution


class DataSource(Protocol):
    shape: tuple[int, ...]

    def batch(self, step: int, n: int, seed: int, rank: int = 0, world: int = 1) -> Tensor: ...

    def draw(self, n: int, seed: int) -> Tensor: ...


class ArrayData:
    """A finite dataset held as one tensor, visited in a fresh random order every epoch.

    Global sample positions ``(step * world + rank) * n + i`` index a concatenation of per-epoch
    permutations (epoch e permuted by a generator seeded from (seed, e)).
    """

    def __init__(self, samples: Tensor, name: str = "array"):
        samples = torch.as_tensor(samples, dtype=torch.float32)
        if samples.ndim < 2 or samples.shape[0] < 2:
            raise ValueError(f"data '{name}' needs at least 2 samples of shape (n, ...); got {tuple(samples.shape)}")
        bad = ~torch.isfinite(samples)
        if bad.any():
            rows = bad.reshape(samples.shape[0], -1).any(1).nonzero().flatten()
            raise ValueError(
                f"data '{name}' has NaN or inf in {len(rows)} sample(s) (first at row {int(rows[0])}); "
                "drop or impute them before training"
            )
        self.samples, self.name = samples, name
        self.shape = tuple(samples.shape[1:])
        self._perms: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return self.samples.shape[0]

    def _permutation(self, epoch: int, seed: int) -> Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            g = seeding.generator(seed, "epoch", epoch)
            self._perms[epoch] = torch.randperm(len(self), generator=g)
        return self._perms[epoch]

    def indices(self, step: int, n: int, seed: int, rank: int = 0, world: int = 1) -> Tensor:
        start = (step * world + rank) * n
        positions = torch.arange(start, start + n)
        epochs, offsets = positions // len(self), positions % len(self)
        return torch.stack([self._permutation(int(e), seed)[int(o)] for e, o in zip(epochs, offsets)])

    def batch(self, step, n, seed, rank=0, world=1):
        return self.samples[self.indices(step, n, seed, rank, world)]

    def iter_batches(self, batch_size: int):
        """Every sample once, in order, in batches (for fitting a data-dependent prior)."""
        yield from self.samples.split(batch_size)

    def draw(self, n: int, seed: int) -> Tensor:
        g = seeding.generator(seed, "eval")
        return self.samples[torch.randint(len(self), (n,), generator=g)]

    @classmethod
    def from_file(cls, path: str | Path) -> "ArrayData":
        """Load vectors from ``.npy``, ``.csv`` or ``.txt`` (one sample per row)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"data file {path} does not exist; pass data.path=FILE (.npy, .csv or .txt)")
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif path.suffix in (".csv", ".txt"):
            array = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2)
        else:
            raise ValueError(f"unsupported data file {path.name}: use .npy, .csv or .txt")
        return cls(torch.from_numpy(np.asarray(array, dtype=np.float32)), name=path.name)


DATASETS = sorted([*TOY_SAMPLERS, "array"])


def build_data(name: str, **params: Any) -> DataSource:
    """The ``data`` section of a config: a toy distribution's name, or ``array`` with ``path``."""
    if name in TOY_SAMPLERS:
        return ToyDistribution(name, **params)
    if name == "array":
        if "path" not in params:
            raise ValueError("data 'array' needs data.params.path=FILE (.npy, .csv or .txt)")
        return ArrayData.from_file(params["path"])
    raise ValueError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
