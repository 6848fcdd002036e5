"""The data interface the trainer uses, finite arrays of vectors, and the ``data`` factory.

A data source has ``shape`` (one sample) and ``batch(step, n, seed, rank, world)``: the batch a
given rank uses at a given training step. Batches depend only on these numbers, so a resumed
or a distributed run sees exactly the data an uninterrupted single-process run would.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from fdrl import seeding
from fdrl.components import DATA_SPECS, DEFAULT_TEST_FRACTION, ArraySpec, DataSpec, ImageSpec, ToySpec, as_spec
from fdrl.data.columns import TableCodec, decode_rows, project
from fdrl.data.files import IN_MEMORY, line_of_row, read_data
from fdrl.data.images import build_held_out_images, build_image_data
from fdrl.data.order import SampleOrder
from fdrl.data.scaling import Standardizer
from fdrl.data.toy import ToyDistribution


class DataSource(Protocol):
    shape: tuple[int, ...]

    def batch(self, step: int, n: int, seed: int, rank: int = 0, world: int = 1) -> Tensor: ...

    def draw(self, n: int, seed: int) -> Tensor: ...


class ArrayData:
    """A finite dataset held as one tensor, visited in a fresh random order every epoch
    (:class:`SampleOrder`).

    ``heldout``: rows kept out of training, for scoring (:meth:`held_out`); ``scaler``: the
    :class:`~fdrl.data.scaling.Standardizer` the samples were standardised with (None: as
    given); ``codec``: the :class:`~fdrl.data.columns.TableCodec` of a table (None: arrays taken
    as they are).
    """

    def __init__(self, samples: Tensor, name: str = "array", heldout: Tensor | None = None,
                 scaler: Standardizer | None = None, codec: TableCodec | None = None):
        self.samples, self.name = _checked(samples, name, "sample(s)"), name
        self.heldout = None if heldout is None else _checked(heldout, name, "held-out row(s)")
        if self.heldout is not None and self.heldout.shape[1:] != self.samples.shape[1:]:
            raise ValueError(f"data '{name}': held-out rows have shape {tuple(self.heldout.shape[1:])} but training "
                             f"rows {tuple(self.samples.shape[1:])}")
        self.scaler, self.codec = scaler, codec
        self.shape = tuple(self.samples.shape[1:])
        self.order = SampleOrder(self.samples.shape[0])
        self.noise = None if codec is None else _noise_scales(codec, scaler)

    def __len__(self) -> int:
        return self.samples.shape[0]

    def indices(self, step: int, n: int, seed: int, rank: int = 0, world: int = 1) -> Tensor:
        return self.order.indices(step, n, seed, rank, world)

    def batch(self, step, n, seed, rank=0, world=1):
        """The training rows of ``rank`` at ``step``; a table's discrete features get their
        dequantisation noise (:meth:`fdrl.data.columns.TableCodec.dequantization`), drawn from
        a generator of (seed, step, rank) so that a resumed run replays it."""
        rows = self.samples[self.indices(step, n, seed, rank, world)]
        if self.noise is None:
            return rows
        gauss, uniform = self.noise
        g = seeding.generator(seed, "augment", step, rank)
        return rows + torch.randn(rows.shape, generator=g) * gauss + (torch.rand(rows.shape, generator=g) - 0.5) * uniform

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

    def decode(self, features: Tensor) -> Any:
        """Model-unit rows -> the user's table (a DataFrame of the file's columns and types,
        dates as datetimes whatever form the file wrote them in, for scoring); only for data
        read from a table or a 2-D array (:attr:`codec` set)."""
        if self.codec is None:
            raise ValueError(f"data '{self.name}' is not a table")
        return decode_rows(features, self.codec, self.scaler, dates_as_text=False)

    def project(self, features: Tensor) -> Tensor:
        """Model-unit rows -> the model units of the table rows they decode to
        (:func:`fdrl.data.columns.project`); as they are for data that is not a table."""
        return features if self.codec is None else project(features, self.codec, self.scaler)

    @property
    def column_kinds(self) -> dict[str, str]:
        """Column name -> kind (continuous, integer, categorical, datetime) of the columns of a table that
        the model generates (constants are put back exactly and left out)."""
        if self.codec is None:
            raise ValueError(f"data '{self.name}' is not a table")
        return {name: kind for name, kind in self.codec.kinds.items() if kind != "constant"}

    @classmethod
    def from_file(cls, path: str | Path, test_fraction: float = DEFAULT_TEST_FRACTION, test_path: str | None = None,
                  standardize: bool = False, split_seed: int = 0, columns: dict[str, str] | None = None,
                  missing: str = "model", returns: str | None = None) -> "ArrayData":
        """Rows of a table (``.csv``, ``.tsv``, ``.parquet``, compressed text: see
        :func:`fdrl.data.files.read_data`) or of a ``.npy`` array.

        A table, or a 2-D array, is typed column by column (:class:`~fdrl.data.columns.TableCodec`;
        ``columns`` overrides a column's kind by name, ``missing`` is the policy for missing
        cells) and encoded into model features; ``returns`` says what sampling gives back
        (default: a DataFrame for a table, a NumPy array for ``.npy``). Arrays of more than two
        dimensions (images) are taken as they are.
        Held out for scoring: the rows of ``test_path`` if given, else a ``test_fraction`` of
        the rows drawn with ``split_seed``. With ``standardize`` every feature is scaled to
        mean 0 and standard deviation 1 on the training rows (:class:`Standardizer`)."""
        name = Path(path).name
        found = _read_rows(path)
        if test_path is not None:
            other = _read_rows(test_path)
        else:
            if not 0.0 <= test_fraction < 1.0:
                raise ValueError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
            n_test = int(round(test_fraction * len(found)))
            if test_fraction > 0 and (n_test < 2 or len(found) - n_test < 2):
                named = getattr(found, "attrs", {}).get(IN_MEMORY, f"data '{name}'")
                rows = f"{len(found)} row{'' if len(found) == 1 else 's'}"
                raise ValueError(f"{named} has {rows}: too few to hold out a fraction of "
                                 f"{test_fraction} and train on the rest; add rows, or pass data.test_fraction=0")
        rows, codec = _encode(found, path, columns, missing, returns)
        if test_path is not None:
            heldout, _ = _encode(other, test_path, columns, missing, returns, codec)
            if heldout.shape[1:] != rows.shape[1:]:
                raise ValueError(f"test file '{test_path}' has rows of shape {tuple(heldout.shape[1:])}, but '{name}' "
                                 f"has {tuple(rows.shape[1:])}")
            train = rows
        else:
            kept, held = _split(rows, codec, n_test, split_seed)
            train, heldout = rows[kept], (rows[held] if n_test else None)
        scaler = Standardizer.fit(train) if standardize else None
        if scaler is not None:
            train = scaler.forward(train)
            heldout = None if heldout is None else scaler.forward(heldout)
        return cls(train, name=name, heldout=heldout, scaler=scaler, codec=codec)


def _split(rows: Tensor, codec: TableCodec | None, n_test: int, seed: int) -> tuple[Tensor, Tensor]:
    """Training and held-out row indices: ``n_test`` rows drawn with ``seed``, stratified by a
    table's labels. Rows are shuffled, grouped by their labels in every categorical column
    (a stable sort keeps the shuffle within a group), and every (n / n_test)-th row is held
    out, so each label's share is the same in both parts up to one row: on small tables a plain
    draw moved class shares by 4 points between the file and its training part."""
    order = np.random.default_rng(seed).permutation(len(rows))
    if codec is not None and n_test:
        labels, at = [], 0
        for c in codec.columns:
            if c.kind == "categorical":
                labels.append(rows[:, at:at + c.width].argmax(1).numpy())
            at += c.width
        if labels:  # lexsort is stable: the last key sorts first
            order = order[np.lexsort([column[order] for column in reversed(labels)])]
    picks = np.floor(np.arange(1, len(rows) + 1) * n_test / len(rows)) > np.floor(np.arange(len(rows)) * n_test / len(rows))
    return torch.from_numpy(order[~picks]), torch.from_numpy(order[picks])


def _noise_scales(codec: TableCodec, scaler: Standardizer | None) -> tuple[Tensor, Tensor] | None:
    """The codec's dequantisation noise in model units (None if the table has no discrete feature)."""
    gauss, uniform = (torch.from_numpy(a) for a in codec.dequantization())
    if not (gauss.any() or uniform.any()):
        return None
    if scaler is not None:
        gauss, uniform = gauss / scaler.scale, uniform / scaler.scale
    return gauss, uniform


def _read_rows(path: str | Path) -> Any:
    """A data file's rows: a DataFrame for a table or a 2-D array, an array of more dimensions
    as it is; at least one row and one column."""
    found = read_data(path)
    if isinstance(found, np.ndarray):
        if found.ndim == 0:
            raise ValueError(f"data file '{path}' holds a single number, not rows of samples")
        if found.ndim <= 2:
            found = _array_frame(found)
    shape = found.shape
    if shape[0] == 0 or (len(shape) > 1 and math.prod(shape[1:]) == 0):
        raise ValueError(f"data file '{path}' has shape {tuple(shape)}: it needs at least one row and one column")
    return found


def _encode(found: Any, path: str | Path, columns: dict[str, str] | None, missing: str, returns: str | None,
            codec: TableCodec | None = None) -> tuple[Tensor, TableCodec | None]:
    """Rows of :func:`_read_rows` as model features (float32), and the codec that typed them
    (``codec``: encode them as this one does, for a test file)."""
    where = f"data file '{path}'"
    if isinstance(found, np.ndarray):  # images and other arrays of more than two dimensions
        if columns:
            raise ValueError(f"data.params.columns is for tables; '{path}' holds arrays of shape {found.shape[1:]}")
        with np.errstate(over="ignore"):
            return _checked(torch.from_numpy(found.astype(np.float32)), Path(path).name, "sample(s)"), None
    frame = found
    where = frame.attrs.get(IN_MEMORY, where)
    if codec is None:
        array_dtype = frame.attrs.get("array_dtype")
        # a cell is found by its line in a text table, by its row in parquet, .npy or memory
        text = "sep" in frame.attrs and IN_MEMORY not in frame.attrs
        codec = TableCodec.fit(frame, columns, missing, returns or ("numpy" if array_dtype else "dataframe"),
                               array_dtype, where, line_of_row=(lambda row: line_of_row(path, row)) if text else None)
    elif [str(c) for c in frame.columns] != [str(c.name) for c in codec.columns]:
        raise ValueError(f"{where} has columns {', '.join(map(str, frame.columns))}; the training data has "
                         f"{', '.join(str(c.name) for c in codec.columns)}")
    frame = _missing_cells(frame, codec, where)
    if len(frame) == 0:
        raise ValueError(f"{where} has no rows without a missing cell; use data.params.missing=model or impute")
    try:
        features = codec.encode(frame)
    except ValueError as err:  # a held-out file's cell the training data cannot hold: name the file
        raise ValueError(f"{where}: {err}") from None
    return torch.from_numpy(features), codec


def _array_frame(array: np.ndarray) -> Any:
    """A 1-D or 2-D array as a table of columns 0..d-1 (no header), remembering its dtype."""
    import pandas as pd

    frame = pd.DataFrame(array.reshape(array.shape[0], -1))
    frame.attrs.update(header=False, array_dtype=str(array.dtype))
    return frame


def _missing_cells(frame: Any, codec: TableCodec, where: str) -> Any:
    """Apply the missing-cell policy (:mod:`fdrl.data.columns`), saying what it did."""
    # only the modelled columns count: an empty or dropped column's cells are no one's to fill
    cells = int(frame[[c.name for c in codec.columns if c.width]].isna().to_numpy().sum())
    if not cells:
        return frame
    drop = codec.rows_to_drop(frame)
    if drop.any():
        warnings.warn(f"{where}: left out {int(drop.sum())} of {len(frame)} rows that have a missing cell "
                      "(data.params.missing=drop)", stacklevel=3)
        return frame[~drop]
    how = ("filled with the column's median or most frequent label (data.params.missing=impute)"
           if codec.missing_policy == "impute" else "modelled: samples have missing cells at the data's rate "
           "(data.params.missing=impute fills them, =drop leaves their rows out)")
    warnings.warn(f"{where}: {cells} missing cell(s) {how}", stacklevel=3)
    return frame


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


#: every data.name
DATASETS = sorted(DATA_SPECS)


def build_held_out(spec: DataSpec, data: DataSource) -> DataSource | None:
    """The held-out part of a finite dataset ``data`` (built from ``spec``): the rows a vector
    file kept out of training, an image dataset's test split; None for infinite toy data (fresh
    draws are held out by construction) and datasets without a split."""
    if isinstance(data, ArrayData):
        return data.held_out()
    if isinstance(spec, ImageSpec):
        return build_held_out_images(spec)
    return None


def build_data(spec: DataSpec | str, **params: Any) -> DataSource:
    """The data source of ``spec`` (:mod:`fdrl.components`): a toy distribution, a table or
    array file, or an image dataset of :mod:`fdrl.data.images`. ``spec`` may also be a
    ``data.name`` with its ``data.params`` as keywords (``build_data("digits", split="test")``).
    Images are given in pixels whatever ``pca`` says: a run's data in its principal space is
    :func:`fdrl.data.principal.build_run_data`."""
    spec = as_spec("data", spec, params)
    spec.require()
    if isinstance(spec, ToySpec):
        return ToyDistribution(spec)
    if isinstance(spec, ArraySpec):
        return ArrayData.from_file(**spec.params)
    return build_image_data(spec)
