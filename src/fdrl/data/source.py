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

from fdrl.data.files import read_array
from fdrl.data.images import IMAGE_DATASETS, build_held_out_images, build_image_data
from fdrl.data.order import SampleOrder
from fdrl.data.scaling import Standardizer
from fdrl.data.toy import TOY_SAMPLERS, ToyDistribution

#: the share of a user's rows or images held out for scoring, unless data.test_fraction says otherwise
DEFAULT_TEST_FRACTION = 0.2


class DataSource(Protocol):
    shape: tuple[int, ...]

    def batch(self, step: int, n: int, seed: int, rank: int = 0, world: int = 1) -> Tensor: ...

    def draw(self, n: int, seed: int) -> Tensor: ...


class ArrayData:
    """A finite dataset held as one tensor, visited in a fresh random order every epoch
    (:class:`SampleOrder`).

    ``heldout``: rows kept out of training, for scoring (:meth:`held_out`); ``scaler``: the
    :class:`~fdrl.data.scaling.Standardizer` the samples were standardised with (None: as
    given); ``columns``: the CSV header of the file they came from.
    """

    def __init__(self, samples: Tensor, name: str = "array", heldout: Tensor | None = None,
                 scaler: Standardizer | None = None, columns: list[str] | None = None):
        self.samples, self.name = _checked(samples, name, "sample(s)"), name
        self.heldout = None if heldout is None else _checked(heldout, name, "held-out row(s)")
        if self.heldout is not None and self.heldout.shape[1:] != self.samples.shape[1:]:
            raise ValueError(f"data '{name}': held-out rows have shape {tuple(self.heldout.shape[1:])} but training "
                             f"rows {tuple(self.samples.shape[1:])}")
        self.scaler, self.columns = scaler, columns
        self.shape = tuple(self.samples.shape[1:])
        self.order = SampleOrder(self.samples.shape[0])

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

    def subset(self, n: int, seed: int) -> Tensor:
        """min(n, len) distinct rows (all of them when n >= len)."""
        return self.samples[self.order.subset_indices(n, seed)]

    def held_out(self) -> "ArrayData | None":
        """The held-out rows as a dataset of their own (in the same units), or None."""
        return None if self.heldout is None else ArrayData(self.heldout, f"{self.name} (held out)")

    @classmethod
    def from_file(cls, path: str | Path, test_fraction: float = DEFAULT_TEST_FRACTION, test_path: str | None = None,
                  standardize: bool = False, split_seed: int = 0) -> "ArrayData":
        """Vectors from ``.npy``, ``.csv`` or ``.txt`` (one sample per row; a CSV header is kept).

        Held out for scoring: the rows of ``test_path`` if given, else a ``test_fraction`` of
        the rows drawn with ``split_seed``. With ``standardize`` every feature is scaled to
        mean 0 and standard deviation 1 on the training rows (:class:`Standardizer`)."""
        found = read_array(path)
        name = Path(path).name
        rows = _checked(torch.from_numpy(found.values), name, "sample(s)")  # NaN / inf: rows as in the file
        if test_path is not None:
            other = read_array(test_path)
            if other.values.shape[1:] != found.values.shape[1:]:
                raise ValueError(f"test file '{test_path}' has rows of shape {other.values.shape[1:]}, but '{name}' "
                                 f"has {found.values.shape[1:]}")
            train, heldout = rows, torch.from_numpy(other.values)
        else:
            if not 0.0 <= test_fraction < 1.0:
                raise ValueError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
            n_test = int(round(test_fraction * len(rows)))
            if test_fraction > 0 and (n_test < 2 or len(rows) - n_test < 2):
                raise ValueError(f"data '{name}' has {len(rows)} rows: too few to hold out a fraction of "
                                 f"{test_fraction} and train on the rest; add rows, or pass data.test_fraction=0")
            order = torch.from_numpy(np.random.default_rng(split_seed).permutation(len(rows)))
            train, heldout = rows[order[n_test:]], (rows[order[:n_test]] if n_test else None)
        scaler = Standardizer.fit(train, found.columns) if standardize else None
        if scaler is not None:
            train = scaler.forward(train)
            heldout = None if heldout is None else scaler.forward(_checked(heldout, name, "held-out row(s)"))
        return cls(train, name=name, heldout=heldout, scaler=scaler, columns=found.columns)


def _checked(samples: Tensor, name: str, what: str) -> Tensor:
    samples = torch.as_tensor(samples, dtype=torch.float32)
    if samples.ndim < 2 or samples.shape[0] < 2:
        raise ValueError(f"data '{name}' needs at least 2 {what.replace('(s)', 's')} of shape (n, ...); got {tuple(samples.shape)}")
    if samples[0].numel() == 0:
        raise ValueError(f"data '{name}' has rows with no features (shape {tuple(samples.shape)})")
    bad = ~torch.isfinite(samples)
    if bad.any():
        rows = bad.reshape(samples.shape[0], -1).any(1).nonzero().flatten()
        raise ValueError(
            f"data '{name}' has NaN or inf in {len(rows)} {what} (first at row {int(rows[0])}); "
            "drop or impute them before training"
        )
    return samples


DATASETS = sorted([*TOY_SAMPLERS, "array", *IMAGE_DATASETS])


def build_held_out(name: str, params: dict[str, Any], data: DataSource) -> DataSource | None:
    """The held-out part of a finite dataset ``data`` (built from ``name`` and ``params``): the
    rows a vector file kept out of training, an image dataset's test split; None for infinite
    toy data (fresh draws are held out by construction) and datasets without a split."""
    if isinstance(data, ArrayData):
        return data.held_out()
    if name in IMAGE_DATASETS:
        return build_held_out_images(name, **params)
    return None


def build_data(name: str, **params: Any) -> DataSource:
    """The ``data`` section of a config: a toy distribution's name, ``array`` with ``path``, or
    an image dataset of :mod:`fdrl.data.images` with its options."""
    if name in TOY_SAMPLERS:
        return ToyDistribution(name, **params)
    if name == "array":
        params = dict(params)
        if "path" not in params:
            raise ValueError("data 'array' needs data.params.path=FILE (.npy, .csv or .txt)")
        try:
            return ArrayData.from_file(params.pop("path"), **params)
        except TypeError:
            raise ValueError(f"unknown option(s) {', '.join(sorted(params))} for data 'array'; valid: path, "
                             "test_fraction, test_path, standardize, split_seed") from None
    if name in IMAGE_DATASETS:
        return build_image_data(name, **params)
    raise ValueError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
