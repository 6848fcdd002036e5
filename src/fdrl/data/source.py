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

from fdrl.data.images import IMAGE_DATASETS, build_image_data
from fdrl.data.order import SampleOrder
from fdrl.data.toy import TOY_SAMPLERS, ToyDistribution


class DataSource(Protocol):
    shape: tuple[int, ...]

    def batch(self, step: int, n: int, seed: int, rank: int = 0, world: int = 1) -> Tensor: ...

    def draw(self, n: int, seed: int) -> Tensor: ...


class ArrayData:
    """A finite dataset held as one tensor, visited in a fresh random order every epoch
    (:class:`SampleOrder`)."""

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
        self.order = SampleOrder(samples.shape[0])

    def __len__(self) -> int:
        return self.samples.shape[0]

    def indices(self, step: int, n: int, seed: int, rank: int = 0, world: int = 1) -> Tensor:
        return self.order.indices(step, n, seed, rank, world)

    def batch(self, step, n, seed, rank=0, world=1):
        return self.samples[self.indices(step, n, seed, rank, world)]

    def iter_batches(self, batch_size: int):
        """Every sample once, in order, in batches (for fitting a data-dependent prior)."""
        yield from self.samples.split(batch_size)

    def draw(self, n: int, seed: int) -> Tensor:
        return self.samples[self.order.draw_indices(n, seed)]

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


DATASETS = sorted([*TOY_SAMPLERS, "array", *IMAGE_DATASETS])


def build_data(name: str, **params: Any) -> DataSource:
    """The ``data`` section of a config: a toy distribution's name, ``array`` with ``path``, or
    an image dataset of :mod:`fdrl.data.images` with its options."""
    if name in TOY_SAMPLERS:
        return ToyDistribution(name, **params)
    if name == "array":
        if "path" not in params:
            raise ValueError("data 'array' needs data.params.path=FILE (.npy, .csv or .txt)")
        return ArrayData.from_file(params["path"])
    if name in IMAGE_DATASETS:
        return build_image_data(name, **params)
    raise ValueError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
