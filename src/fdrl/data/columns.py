"""Column types of a user's table and the codec between its rows and the model's features.

FDRL flows continuous particles (Eq. 9), so every table is turned into real-valued features
for training and turned back into the user's columns after sampling. Each column is typed
once, when the data is read, and the types are stored in the run (``table.json``) so that a
loaded model gives back exactly the columns, labels and dtypes it was trained on:

* ``continuous``: the value itself (standardised later, with every other feature);
* ``integer``: the value, rounded back to an integer inside the observed range;
* ``categorical`` (strings, booleans, pandas categories, integer-valued columns with at most
  :data:`MAX_INTEGER_LEVELS` distinct values, and fractional columns of that few values that
  recur): one one-hot feature per label, decoded by
  the largest feature. One-hot rather than one numeric code per column because codes put an
  order and distances between labels that the data does not have (a flow between "red" and
  "blue" would pass through "green"), and an argmax cannot return a label that is not one;
* ``datetime`` (pandas datetime columns, and text columns whose every cell is a date or a
  date and time written with numbers, e.g. 2020-01-31, 31.01.2020, 2020-01-31 12:00:00): the
  seconds since the column's earliest value, as one continuous feature; sampled values are
  rounded to the data's resolution (a day if every value is at midnight, else a minute or a
  second when the data's values all are whole ones), kept inside the data's span (a date
  before the first or after the last row's is moved to that end: a period the data never
  covered is not made up) and written back in the data's form (the text format it was
  written in, or datetimes);
* ``constant``: no feature at all; its value is put back exactly;
* ``drop``: only on request (``data.params.columns.NAME=drop``): left out, not returned.

Numbers written with thousands separators (``12,345.67``) or with a unit sign (``12.5%``,
``$1,234.50``) are numbers (:func:`_has_grouped_numbers`, :func:`_unit`), sampled without them. A
column that numbers the rows (:func:`_looks_like_row_number`: a written pandas index, an ``id``
of distinct numbers) is left out like an identifier, with a warning. A column with no value at all is given
back as it is, empty; one that has no name either (a separator at the end of every line) is left
out.

Missing cells (``data.params.missing``; in a column of numbers, cells holding a mark such as
``?`` or ``-`` count as missing, :func:`_missing_marks`): ``model`` (default) keeps their rate: a numeric column
with missing cells gets one more feature, 1 where the cell was missing (the value itself is
filled with the column's median for training), and a categorical column a label of its own;
sampled rows then have missing cells at the data's rate. ``impute`` fills them (median, or the
most frequent label) and returns complete rows; ``drop`` leaves out the rows that have one.
Either way the count is said in a warning, so that no row is lost silently.

Over 400 lines as one module because typing a column, encoding it and decoding it are one codec
that a run stores and loads whole; split, each part would need the others' rules.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fdrl.data.table_format import ZERO_PADDED

TABLE_FILE = "table.json"
COLUMN_KINDS = ("continuous", "integer", "categorical", "datetime", "constant", "drop")
#: a text cell that is a date (year, month and day as numbers in any order, separated by - / or .)
#: with an optional time and UTC offset; only such columns are read as dates, so that labels
#: such as "May" or "Q3" stay labels
_DATE_CELL = re.compile(r"\s*\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?\s*")
_DAY_SECONDS = 86400.0
#: a cell that marks a missing value in a column of numbers: one to three punctuation characters
_MISSING_MARK = re.compile(r"[^\w\s]{1,3}")
#: a number written with thousands separators: 1,234 or -12,345,678.5
_GROUPED_NUMBER = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?")
#: signs written with numbers, before them (after a minus sign, if any) or after them, as
#: spreadsheets export formatted cells: 12.5%, $1,234.50, 12 €
_UNIT_SIGNS = ("%", "$", "€", "£", "¥")
#: what pandas names a column whose header cell is empty (a trailing separator, a written index)
_UNNAMED = re.compile(r"Unnamed: \d+")
#: a column name that ``data.params.columns.NAME=KIND`` cannot carry (the key is split at dots, the
#: argument at '=' and blanks)
_SPLIT_NAME = re.compile(r"[.=\s]")
#: the name of a column that numbers or identifies rows
_ROW_NUMBER_NAME = re.compile(r"(?i)(unnamed: \d+|index|idx|id|row|rowid|row_?(number|num|no))")
#: numeric columns with at most this many distinct values are categorical (class labels, counts of
#: a few levels, 0/1 flags; fractional ones only if each value recurs): their shares then come
#: back as in the data
MAX_INTEGER_LEVELS = 10
#: a string column with more distinct labels than this (and than half its rows) is an identifier
MAX_LABELS = 500
#: how the model's samples are handed back
RETURN_TYPES = ("dataframe", "numpy", "tensor")
MISSING_POLICIES = ("model", "impute", "drop")
#: what pandas' infer_dtype calls an object column whose cells are numbers, not text
_NUMBER_KINDS = ("integer", "floating", "mixed-integer-float", "decimal")
#: the largest magnitude a value may have: model features are float32
FEATURE_MAX = float(np.finfo(np.float32).max)
#: the standard deviation of the Gaussian noise on one-hot features in training batches
ONE_HOT_NOISE = 0.15


def native_scalar(value: Any) -> Any:
    """A JSON-able Python scalar for a label (NumPy scalars, booleans, strings)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _few_levels(values: np.ndarray) -> int:
    """The number of distinct ``values`` if at most :data:`MAX_INTEGER_LEVELS`, else that plus one.

    Counting every distinct value of a big continuous column is the slow part of typing it, so a
    sample of rows answers first: more than the maximum there is more than the maximum overall."""
    if len(np.unique(values[:1000])) > MAX_INTEGER_LEVELS:
        return MAX_INTEGER_LEVELS + 1
    return min(len(np.unique(values)), MAX_INTEGER_LEVELS + 1)


def _is_missing(values: Any) -> np.ndarray:
    import pandas as pd

    return np.asarray(pd.isna(values), dtype=bool)


def _decimals(values: np.ndarray, sample: int = 10000) -> int | None:
    """The fewest decimals (0-8) that write every value back exactly, or None for more."""
    values = values[:sample].astype(np.float64)
    for d in range(9):
        if np.allclose(np.round(values, d), values, rtol=0, atol=1e-9 * max(1.0, float(np.abs(values).max(initial=0)))):
            return d
    return None


@dataclass
class Column:
    """One column: its label in the table, kind, pandas dtype to give back, and what decoding
    needs (labels of a categorical column, the range of an integer one, a constant's value)."""

    name: Any
    kind: str
    dtype: str
    categories: list[Any] | None = None
    value: Any = None
    low: float | None = None
    high: float | None = None
    fill: Any = None
    missing: bool = False
    decimals: int | None = None
    #: a datetime column's encoding: ``origin`` (its earliest value, in seconds since 1970),
    #: ``step`` (its resolution in seconds), ``format`` (the text format it was written in, or
    #: None for datetimes) and ``tz`` (the time zone of aware values, or None)
    time: dict[str, Any] | None = None
    #: cells that mark a missing value in this column of numbers ("?", "-"), read as missing
    marks: list[str] | None = None
    #: numbers written with thousands separators (1,234.5), read without them
    thousands: bool = False
    #: the sign written with its numbers (``%``, ``$``: :data:`_UNIT_SIGNS`), read without it
    unit: str | None = None
    #: a pandas category column's dtype: all its categories (also those no row uses) and
    #: whether they are ordered, so that samples come back in the same dtype
    dtype_categories: list[Any] | None = None
    ordered: bool = False
    #: the dtype of those categories (int8 categories are not JSON's ints: they would come back int64)
    categories_dtype: str | None = None
    #: an integer column's grid step when more than 1 (:func:`_grid_step`): samples land on it
    step: float | None = None

    @property
    def width(self) -> int:
        """How many model features this column takes."""
        if self.kind in ("constant", "drop"):
            return 0
        if self.kind == "categorical":
            return len(self.categories) + self.missing
        return 1 + self.missing


@dataclass
class TableCodec:
    """A table's columns and how its rows map to model features (module docstring).

    ``header``: the file had a header row (otherwise the labels are 0..d-1 and sampled CSV has
    no header); ``csv_sep`` / ``decimal``: how sampled CSV is written, as the file was (a
    ``;``-separated file with decimal commas gets one back; anything else commas and points);
    ``returns``: what :meth:`fdrl.FDRL.sample` gives back; ``dtype``: the array dtype for
    ``numpy`` / ``tensor`` returns.
    """

    columns: list[Column]
    header: bool = True
    csv_sep: str = ","
    decimal: str = "."
    returns: str = "dataframe"
    dtype: str | None = None
    missing_policy: str = "model"
    feature_names: list[str] = field(default_factory=list)

    # -- typing ---------------------------------------------------------------------------------
    @classmethod
    def fit(cls, frame: Any, kinds: dict[str, str] | None = None, missing: str = "model",
            returns: str = "dataframe", dtype: str | None = None, where: str = "data",
            line_of_row: Any = None) -> "TableCodec":
        """Type every column of the DataFrame ``frame`` (``kinds``: overrides by column name,
        as written in the header, or its 0-based position as text for a file without one).
        ``where`` names the data in errors; ``line_of_row(i)``: the file line of row i, for
        errors about a cell."""
        if missing not in MISSING_POLICIES:
            raise ValueError(f"data.params.missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
        if returns not in RETURN_TYPES:
            raise ValueError(f"data.params.returns must be one of {', '.join(RETURN_TYPES)}, got {returns!r}")
        kinds = {str(k): v for k, v in (kinds or {}).items()}
        unknown = sorted(set(kinds) - {str(c) for c in frame.columns})
        if unknown:
            awkward = [c for c in frame.columns if _SPLIT_NAME.search(str(c))]
            hint = f" (a name with a dot, '=' or a blank goes in JSON: {override_text(awkward[0], 'KIND')})" \
                if awkward else ""
            raise ValueError(f"data.params.columns names {', '.join(repr(u) for u in unknown)}, which {where} does not "
                             f"have; its columns: {', '.join(str(c) for c in frame.columns)}{hint}")
        for name, kind in kinds.items():
            if kind not in COLUMN_KINDS:
                raise ValueError(f"{override_text(name, str(kind))}: a column kind is one of {', '.join(COLUMN_KINDS)}")
        columns = [_type_column(frame[name], name, kinds.get(str(name)), missing, where, line_of_row)
                   for name in frame.columns]
        if not any(c.width for c in columns):
            raise ValueError(f"{where} has no column that varies (all are constant or dropped); there is nothing to learn")
        codec = cls(columns, header=bool(frame.attrs.get("header", True)), returns=returns, dtype=dtype,
                    missing_policy=missing, csv_sep=";" if frame.attrs.get("sep") == ";" else ",",
                    decimal="," if frame.attrs.get("decimal") == "," else ".")
        codec.feature_names = codec._feature_names()
        return codec

    def _feature_names(self) -> list[str]:
        names = []
        for c in self.columns:
            if c.kind == "categorical":
                names += [f"{c.name}={label}" for label in c.categories] + ([f"{c.name}=<missing>"] if c.missing else [])
            elif c.width:
                names += [str(c.name)] + ([f"{c.name} is missing"] if c.missing else [])
        return names

    @property
    def width(self) -> int:
        """The number of model features."""
        return sum(c.width for c in self.columns)

    @property
    def numeric_features(self) -> list[int]:
        """The feature index of each continuous or integer column's value (not its missing-cell
        flag, not one-hot labels)."""
        found, at = [], 0
        for c in self.columns:
            if c.kind in ("continuous", "integer", "datetime"):
                found.append(at)
            at += c.width
        return found

    @property
    def kinds(self) -> dict[str, str]:
        """Column name -> kind, for the columns a sample has (dropped ones left out)."""
        return {c.name: c.kind for c in self.columns if c.kind != "drop"}

    def dequantization(self) -> tuple[np.ndarray, np.ndarray]:
        """Per feature, the Gaussian standard deviation and the uniform width of the noise that
        training batches get (:meth:`fdrl.data.ArrayData.batch`): one-hot and missing-cell
        features :data:`ONE_HOT_NOISE`, integers uniform over one unit (one step of their grid),
        continuous features none.
        A density ratio between continuous particles and data with point masses has no finite
        value (on the one-hot vertices the data's density is infinite), and the flow diverged on
        such tables; with the noise the data has a density, and decoding (largest one-hot
        feature, rounding) removes it again."""
        gauss, uniform = np.zeros(self.width, np.float32), np.zeros(self.width, np.float32)
        at = 0
        for c in self.columns:
            if c.kind == "categorical":
                gauss[at:at + c.width] = ONE_HOT_NOISE
            elif c.width:
                grid = {"integer": c.step or 1.0, "datetime": c.time["step"] if c.time else 0.0}
                uniform[at] = grid.get(c.kind, 0.0)
                if c.missing:
                    gauss[at + 1] = ONE_HOT_NOISE
            at += c.width
        return gauss, uniform

    @property
    def is_plain(self) -> bool:
        """Every column continuous with no missing cells: features are the columns themselves."""
        return all(c.kind == "continuous" and not c.missing for c in self.columns)

    # -- rows <-> features ----------------------------------------------------------------------
    def rows_to_drop(self, frame: Any) -> np.ndarray:
        """Under the ``drop`` policy, the rows with a missing cell in a kept column."""
        if self.missing_policy != "drop":
            return np.zeros(len(frame), dtype=bool)
        kept = [c.name for c in self.columns if c.width]
        return _is_missing(frame[kept]).any(axis=1)

    def encode(self, frame: Any) -> np.ndarray:
        """Rows of the table -> float32 features (n, :attr:`width`)."""
        import pandas as pd

        lacking = [str(c.name) for c in self.columns if c.width and c.name not in frame.columns]
        if lacking:
            raise ValueError(f"the rows lack column(s) {', '.join(map(repr, lacking))} of the training data (its "
                             f"columns: {', '.join(str(c.name) for c in self.columns if c.kind != 'drop')})")
        n = len(frame)
        out = np.zeros((n, self.width), dtype=np.float32)
        at = 0
        for c in self.columns:
            if not c.width:
                continue
            raw = _without_unit(frame[c.name], c.unit) if c.unit else frame[c.name]
            raw = _ungrouped(raw) if c.thousands else raw
            raw = _unmarked(raw, c.marks) if c.marks else raw
            absent = _is_missing(raw)
            if c.kind == "categorical":
                index = {label: i for i, label in enumerate(c.categories)}
                labels = raw.tolist()
                gone = len(c.categories) if c.missing else -1 if c.fill is None else index[c.fill]
                codes = np.array([gone if a else index.get(native_scalar(v), -1) for v, a in zip(labels, absent)],
                                 dtype=np.int64)
                unseen = codes < 0
                if unseen.any():
                    label = labels[int(np.flatnonzero(unseen)[0])]
                    raise ValueError(f"column '{c.name}' holds {label!r}, a label the training data does not have")
                out[np.arange(n), at + codes] = 1.0
            else:
                values = (_seconds(raw, c.time) - c.time["origin"] if c.kind == "datetime"
                          else np.asarray(pd.to_numeric(raw, errors="coerce"), dtype=np.float64))
                unread = np.isnan(values) & ~absent
                if unread.any():
                    cell = raw.iloc[int(np.flatnonzero(unread)[0])]
                    raise ValueError(f"column '{c.name}' holds {cell!r}, which is not a number ({c.kind} in the "
                                     "training data)")
                if absent.any():
                    if c.fill is None:
                        raise ValueError(f"column '{c.name}' has missing cells, which the training data did not have")
                    values = np.where(absent, c.fill, values)
                out[:, at] = values
                if c.missing:
                    out[:, at + 1] = absent
            at += c.width
        return out

    def decode(self, features: np.ndarray, dates_as_text: bool = True) -> Any:
        """Model features (n, :attr:`width`) in the data's units -> a DataFrame of the user's
        columns and dtypes (integers rounded into range, labels by the largest one-hot feature,
        constants exact, missing cells where the missing feature says so; dates inside the
        data's span, as the data wrote them, or as datetimes without ``dates_as_text``)."""
        import pandas as pd

        features = np.asarray(features, dtype=np.float64)
        n, at, data = features.shape[0], 0, {}
        for c in self.columns:
            if c.kind == "drop":
                continue
            if c.kind == "constant":
                data[c.name] = _restore(pd.Series([c.value] * n), c)
                continue
            block = features[:, at:at + c.width]
            at += c.width
            if c.kind == "categorical":
                codes = block.argmax(1)
                labels = [None if k == len(c.categories) else c.categories[k] for k in codes]
                data[c.name] = _restore(pd.Series(labels, dtype=object), c)
                continue
            values = block[:, 0]
            if c.kind == "integer":  # onto the data's grid (whole numbers, or multiples of its step)
                step = c.step or 1.0
                values = np.clip(c.low + np.round((values - c.low) / step) * step, c.low, c.high)
            if c.missing:
                values = np.where(block[:, 1] > 0.5, np.nan, values)
            if c.kind == "datetime":  # inside the data's span, as synthetic-data tools do by default
                times = _times(np.clip(values, c.low, c.high), c.time, dates_as_text)
                # text in the column's own string dtype (a gap then reads as the file's did)
                data[c.name] = _restore(times, c) if dates_as_text or c.time["format"] is None else times
            else:
                data[c.name] = _restore(pd.Series(values), c)
        return pd.DataFrame(data)

    def output(self, frame: Any) -> Any:
        """A decoded table in the form the data came in: the DataFrame, a NumPy array or a tensor
        of :attr:`dtype`."""
        if self.returns == "dataframe":
            return frame
        array = frame.to_numpy(dtype=np.dtype(self.dtype or "float32"))
        if self.returns == "numpy":
            return array
        import torch

        return torch.tensor(array)

    # -- storage --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"header": self.header, "returns": self.returns, "dtype": self.dtype, "missing": self.missing_policy,
                "csv_sep": self.csv_sep, "decimal": self.decimal, "columns": [asdict(c) for c in self.columns]}

    def save(self, directory: str | Path) -> None:
        path = Path(directory) / TABLE_FILE
        tmp = path.with_name(f".{TABLE_FILE}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, directory: str | Path) -> "TableCodec | None":
        """The codec saved in ``directory``, or None (a run without one: plain vectors or images)."""
        path = Path(directory) / TABLE_FILE
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            columns = [Column(**c) for c in record["columns"]]
            for c in columns:
                if c.kind not in COLUMN_KINDS or (c.kind == "categorical" and not c.categories):
                    raise ValueError(f"column {c.name!r} has kind {c.kind!r}")
            codec = cls(columns, header=bool(record["header"]), returns=record["returns"], dtype=record["dtype"],
                        missing_policy=record["missing"], csv_sep=str(record.get("csv_sep", ",")),
                        decimal=str(record.get("decimal", ".")))
            if (codec.csv_sep, codec.decimal) not in ((",", "."), (";", "."), (";", ",")):
                raise ValueError(f"CSV separator {codec.csv_sep!r} with decimal mark {codec.decimal!r}")
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"'{path}' is damaged ({type(err).__name__}: {err})") from None
        codec.feature_names = codec._feature_names()
        return codec


def _restore(series: Any, c: Column) -> Any:
    """``series`` in the column's stored pandas dtype (a category keeps its labels)."""
    import pandas as pd

    if c.dtype == "category":
        categories = c.dtype_categories if c.dtype_categories is not None else [x for x in c.categories if x is not None]
        if c.categories_dtype is not None:
            categories = pd.Index(categories, dtype=c.categories_dtype)
        return pd.Series(pd.Categorical(series, categories=categories, ordered=c.ordered))
    if c.dtype == "bool" and series.isna().any():
        return series.astype("boolean")
    if c.dtype.startswith("timedelta64"):  # the value is a count of the dtype's unit
        return pd.to_timedelta(series.round(), unit=np.datetime_data(np.dtype(c.dtype))[0]).astype(c.dtype)
    try:
        return series.astype(c.dtype)
    except (TypeError, ValueError):
        return series.astype(object)


def _present_row(series: Any, k: int) -> int:
    """The row of ``series`` that holds its ``k``-th present (not missing) cell."""
    return int(np.flatnonzero(~_is_missing(series))[k])


def _cell(where: str, row: int, line_of_row: Any) -> str:
    """Where a cell is, as the user finds it: the file and its line (``line_of_row`` maps a row
    to the line an editor shows), or the row of an in-memory table."""
    return f"{where}, line {line_of_row(row)}" if line_of_row is not None else f"{where}, row {row}"


def _numeric_view(series: Any, name: Any, where: str, line_of_row: Any) -> np.ndarray | None:
    """A text column's values as numbers when nearly all of them are (a stray typo is an error
    naming its cell); None for a column of labels."""
    import pandas as pd

    present = series[~_is_missing(series)]
    if present.empty or pd.api.types.infer_dtype(present, skipna=True) == "boolean":  # True/False are labels
        return None
    if present.astype(str).str.fullmatch(ZERO_PADDED).any():  # codes such as 00123 are labels
        return None
    numbers = pd.to_numeric(present, errors="coerce")
    bad = numbers.isna().to_numpy()
    if not bad.any():
        return np.asarray(pd.to_numeric(series, errors="coerce"), dtype=np.float64)
    if bad.mean() <= 0.05 and len(present) >= 20:
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{_cell(where, _present_row(series, first), line_of_row)}: column '{name}' holds "
                         f"'{present.iloc[first]}' where "
                         f"{1 - bad.mean():.0%} of its cells are numbers; fix the cell, or treat the column as labels "
                         f"with {override_text(name, 'categorical')}")
    return None


def _seconds(values: Any, time: dict[str, Any]) -> np.ndarray:
    """Cells of a datetime column (datetimes, or text in ``time["format"]``) -> seconds since
    1970 of their wall-clock time (in the column's zone, if it has one: a day is then 86400 s
    also across a daylight-saving change); NaN where a cell is missing or is not a date."""
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stamps = pd.Series(pd.to_datetime(values if time["format"] is None else values.astype(str).str.strip(),
                                          format=time["format"], errors="coerce", utc=time["tz"] is not None))
    if time["tz"] is not None:
        stamps = stamps.dt.tz_convert(time["tz"]).dt.tz_localize(None)
    return ((stamps - pd.Timestamp(0)) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64, na_value=np.nan)


def _times(values: np.ndarray, time: dict[str, Any], as_text: bool = True) -> Any:
    """Features of a datetime column (seconds since its origin; NaN: missing) -> its cells,
    rounded to its resolution: datetimes, or (``as_text``) text in its format if it had one."""
    import pandas as pd

    step = time["step"]
    offsets = np.round(values / step) * step if step else values
    # pandas holds datetimes between the years 1677 and 2262; a sample beyond is put at that end
    seconds = np.clip(time["origin"] + offsets, -9.2e9, 9.2e9)
    stamps = pd.Series(pd.to_datetime(seconds, unit="s"))
    if time["tz"] is not None:  # wall-clock time; an hour that occurs twice is taken as standard time
        stamps = stamps.dt.tz_localize(time["tz"], ambiguous=np.zeros(len(stamps), dtype=bool),
                                       nonexistent="shift_forward")
    if time["format"] is None or not as_text:
        return stamps
    return stamps.dt.strftime(time["format"]).astype(object).where(stamps.notna(), None)


def _date_view(series: Any, name: Any, where: str, line_of_row: Any) -> tuple[np.ndarray, dict[str, Any]] | None:
    """A column of datetimes, or of text whose every cell is a date written with numbers
    (:data:`_DATE_CELL`), as (seconds since 1970, its ``time`` encoding with origin 0); None
    otherwise. A text column's format is guessed from its first cell, month first, then day
    first if that does not read every cell; a cell that neither reads (2020-13-45 among dates)
    is an error naming it."""
    import pandas as pd
    from pandas.tseries.api import guess_datetime_format

    present = series[~_is_missing(series)]
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        tz = series.dt.tz
        time = {"format": None, "tz": None if tz is None else str(tz)}
        local = present
    else:
        text = present.astype(str).str.strip()
        if text.empty or not text.str.fullmatch(_DATE_CELL).all():
            return None
        tried = []
        for dayfirst in (False, True):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fmt = guess_datetime_format(text.iloc[0], dayfirst=dayfirst)
                local = pd.Series(pd.to_datetime(text, format=fmt, errors="coerce")) if fmt else None
            if local is not None and not local.isna().any():
                break
            if local is not None:
                tried.append((fmt, local))
        else:
            if not tried:
                return None
            fmt, local = min(tried, key=lambda t: int(t[1].isna().sum()))
            bad = int(np.flatnonzero(local.isna().to_numpy())[0])
            raise ValueError(f"{_cell(where, _present_row(series, bad), line_of_row)}: column '{name}' holds "
                             f"'{text.iloc[bad]}', which is not a date in the format "
                             f"{fmt} of its other cells; fix the cell, or treat the column as labels with "
                             f"{override_text(name, 'categorical')}")
        time = {"format": fmt, "tz": "UTC" if "%z" in fmt else None}
    # the resolution, judged on wall-clock time: a day, a minute, a second, or none (no rounding)
    if bool((local.dt.normalize() == local).all()):
        step = _DAY_SECONDS
    elif bool(((local.dt.second == 0) & (local.dt.microsecond == 0)).all()):
        step = 60.0
    else:
        step = 1.0 if bool((local.dt.microsecond == 0).all()) else 0.0
    time = {**time, "origin": 0.0, "step": step}
    return _seconds(series, time), time


def _is_text(series: Any) -> bool:
    """Whether a column is held as text (not numbers, booleans or a pandas category), so that its
    cells may be numbers written in a way pandas did not read."""
    import pandas as pd

    return not (pd.api.types.is_numeric_dtype(series.dtype) or isinstance(series.dtype, pd.CategoricalDtype)
                or series.dtype == bool or str(series.dtype) == "boolean")


def _present_text(series: Any) -> Any:
    """The column's present cells as stripped text."""
    return series[~_is_missing(series)].astype(str).str.strip()


def _missing_marks(series: Any) -> list[str]:
    """The punctuation cells (``?``, ``-``, ``--``, ``.``: at most three characters, no letter or
    digit) of a text column whose every other cell is a number or missing: marks of a missing
    value, as UCI tables write "?" and spreadsheets "-". Empty if the column is anything else."""
    import pandas as pd

    if not _is_text(series):
        return []
    text = _present_text(series)
    marked = text.str.fullmatch(_MISSING_MARK)
    if not marked.any() or marked.all() or pd.to_numeric(text[~marked], errors="coerce").isna().any():
        return []
    return sorted(set(text[marked]))


def _has_grouped_numbers(series: Any) -> bool:
    """Whether a text column holds numbers written with thousands separators (``1,234``,
    ``-12,345,678.5``: a comma before each group of three digits, a point for decimals), and
    otherwise only plain numbers, marks of a missing value or missing cells."""
    import pandas as pd

    if not _is_text(series):
        return False
    text = _present_text(series)
    grouped = text.str.fullmatch(_GROUPED_NUMBER)
    rest = text[~grouped & ~text.str.fullmatch(_MISSING_MARK)]
    return bool(grouped.any()) and not pd.to_numeric(rest, errors="coerce").isna().any()


def _ungrouped(values: Any) -> Any:
    """``values`` with the thousands separators of its grouped numbers taken out."""
    text = values.astype(str).str.strip()
    return values.mask(text.str.fullmatch(_GROUPED_NUMBER) & ~_is_missing(values),
                       text.str.replace(",", "", regex=False))


def _unit_stripped(text: Any, unit: str) -> Any:
    """Text cells without ``unit`` at their end (``12.5%``, ``12 €``) or at their start, kept
    after a minus sign (``$5``, ``-$5`` is -5)."""
    sign = re.escape(unit)
    return text.str.replace(rf"\s*{sign}$", "", regex=True).str.replace(rf"^([+-]?)\s*{sign}\s*", r"\1", regex=True)


def _unit(series: Any) -> str | None:
    """The sign of :data:`_UNIT_SIGNS` that a text column writes with its numbers (``12.5%``,
    ``$1,234.50``, ``-€3``) when every other present cell is a number without it (thousands
    separators allowed) or a mark of a missing value; None for any other column."""
    import pandas as pd

    if not _is_text(series):
        return None
    text = _present_text(series)
    for unit in _UNIT_SIGNS:
        if not text.str.contains(unit, regex=False).any():  # a quick look before the rewrite
            continue
        bare = _unit_stripped(text, unit)
        plain = bare[~bare.str.fullmatch(_MISSING_MARK)]
        if (bare != text).any() and not pd.to_numeric(_ungrouped(plain), errors="coerce").isna().any():
            return unit
    return None


def _without_unit(values: Any, unit: str) -> Any:
    """``values`` with ``unit`` taken off the cells that carry it."""
    text = values.astype(str).str.strip()
    bare = _unit_stripped(text, unit)
    return values.mask((bare != text) & ~_is_missing(values), bare)


def _unmarked(values: Any, marks: list[str]) -> Any:
    """``values`` with the cells that hold one of ``marks`` missing."""
    return values.mask(values.astype(str).str.strip().isin(marks) & ~_is_missing(values))


def _type_column(series: Any, name: Any, kind: str | None, missing: str, where: str, line_of_row: Any) -> Column:
    """Infer (or apply ``kind`` to) one column; see the module docstring for the rules. Numbers
    written with thousands separators (:func:`_has_grouped_numbers`) are read as numbers, and marks
    of a missing value in a column of numbers (:func:`_missing_marks`) as missing cells."""
    numeric = kind in (None, "continuous", "integer")
    unit = _unit(series) if numeric else None
    if unit:
        series = _without_unit(series, unit)
        warnings.warn(f"{where}: column '{name}' holds numbers written with '{unit}' (such as "
                      f"{'12.5%' if unit == '%' else unit + '1234.5'}): read as numbers, and sampled without it",
                      stacklevel=4)
    grouped = numeric and _has_grouped_numbers(series)
    if grouped:
        series = _ungrouped(series)
        warnings.warn(f"{where}: column '{name}' holds numbers written with thousands separators (such as 1,234.5): "
                      "read as numbers, and sampled without separators", stacklevel=4)
    marks = _missing_marks(series) if numeric else []
    if marks:
        count = int(series.astype(str).str.strip().isin(marks).sum())
        warnings.warn(f"{where}: column '{name}' holds numbers and {', '.join(repr(m) for m in marks)} in {count} "
                      f"cell(s): read as missing cells (to keep the column as labels: "
                      f"{override_text(name, 'categorical')})", stacklevel=4)
        series = _unmarked(series, marks)
    column = _type_values(series, name, kind, missing, where, line_of_row)
    column.marks, column.thousands, column.unit = marks or None, grouped, unit
    return column


def _type_values(series: Any, name: Any, kind: str | None, missing: str, where: str, line_of_row: Any) -> Column:
    """:func:`_type_column` of a column without marks of missing values."""
    import pandas as pd

    dtype = str(series.dtype)
    absent = _is_missing(series)
    if absent.all():
        if kind == "drop" or (kind is None and _UNNAMED.fullmatch(str(name))):
            if kind is None:
                warnings.warn(f"{where}: column '{name}' has neither a name nor a value (a separator at the end of "
                              "every line?): it is left out", stacklevel=4)
            return Column(name, "drop", dtype)
        if kind not in (None, "constant"):
            raise ValueError(f"{override_text(name, kind)}, but the column has no values (every cell is missing)")
        warnings.warn(f"{where}: column '{name}' has no values (every cell is missing): samples have it, empty "
                      f"(leave it out with {override_text(name, 'drop')})", stacklevel=4)
        return Column(name, "constant", dtype, value=None)
    has_missing = bool(absent.any()) and missing == "model"
    if kind == "drop":
        return Column(name, "drop", dtype)
    if kind in (None, "datetime") and (kind == "datetime" or not pd.api.types.is_numeric_dtype(series.dtype)):
        dates = _date_view(series, name, where, line_of_row)
        if dates is None and kind == "datetime":
            raise ValueError(f"{where}: column '{name}' is not dates (datetimes, or text such as 2020-01-31 in every "
                             "cell); it cannot be datetime")
        if dates is not None:
            return _datetime_column(series, name, dtype, *dates, absent, has_missing)
    categorical_dtype = isinstance(series.dtype, pd.CategoricalDtype)
    numbers = None
    if not categorical_dtype and series.dtype != bool and str(series.dtype) != "boolean":
        if pd.api.types.is_numeric_dtype(series.dtype):
            numbers = series.to_numpy(dtype=np.float64, na_value=np.nan)
        elif kind not in ("categorical",):
            numbers = _numeric_view(series, name, where, line_of_row)
            if numbers is None and kind in ("continuous", "integer"):
                raise ValueError(f"{where}: column '{name}' holds labels, not numbers; it cannot be {kind}")
            # text that holds numbers comes back as numbers; an object column of numbers themselves
            # (a DataFrame's) as it was, and durations as durations
            held = dtype == "object" and pd.api.types.infer_dtype(series, skipna=True) in _NUMBER_KINDS
            if numbers is not None and not held and not dtype.startswith("timedelta64"):
                dtype = "float64"
    present = series[~absent]
    if numbers is not None:
        finite = numbers[~absent]
        if not np.isfinite(finite).all():
            row = int(np.flatnonzero(np.isinf(numbers))[0])
            raise ValueError(f"{_cell(where, row, line_of_row)}: column '{name}' holds inf; replace it by a number or "
                             "leave the cell empty (a missing cell)")
        if np.abs(finite).max(initial=0) > FEATURE_MAX:
            raise ValueError(f"{where}: column '{name}' holds values up to {np.abs(finite).max():.3g}, beyond what the "
                             f"model's float32 features hold ({FEATURE_MAX:.3g}); rescale the column")
        integral = bool(np.all(finite == np.round(finite)))
        levels = 1 if finite.min() == finite.max() else len(np.unique(finite)) if integral else _few_levels(finite)
    else:
        levels = present.nunique()
    inferred = kind is None
    if kind is None:
        if levels == 1 and not absent.any():
            kind = "constant"
        elif numbers is None:
            kind = "categorical"
        else:
            # a fractional column of a few values (a 0/1 flag stored as -0.05/0.05, ratings in half
            # steps) is a set of labels too, when each value recurs (at least twice on average)
            discrete = levels <= MAX_INTEGER_LEVELS and (integral or 2 * levels <= len(finite))
            kind = "categorical" if discrete else "integer" if integral else "continuous"
    if inferred and kind == "integer" and not absent.any() and _looks_like_row_number(name, finite):
        warnings.warn(f"{where}: column '{name}' numbers the rows (a different whole number in each): it is left out "
                      f"(samples do not have it); model it anyway with {override_text(name, 'integer')}",
                      stacklevel=4)
        return Column(name, "drop", dtype)
    if kind == "constant":
        if levels != 1:
            raise ValueError(f"{override_text(name, 'constant')}, but the column has more than one value")
        return Column(name, "constant", dtype, value=native_scalar(present.iloc[0]), missing=False)
    if kind == "categorical":
        labels = sorted({native_scalar(v) for v in present.tolist()}, key=lambda v: (str(type(v)), v))
        if categorical_dtype:
            labels = [native_scalar(v) for v in series.cat.categories if (present == v).any()]
        if inferred and _looks_like_identifier(len(labels), len(present)):
            warnings.warn(f"{where}: column '{name}' has {len(labels)} distinct labels in {len(present)} rows, like an "
                          f"identifier or free text: it is left out (samples do not have it); model it anyway with "
                          f"{override_text(name, 'categorical')}", stacklevel=4)
            return Column(name, "drop", dtype)
        if len(labels) > MAX_LABELS and len(labels) > len(present) // 2:
            raise ValueError(f"{where}: column '{name}' has {len(labels)} distinct labels in {len(present)} rows, like an "
                             f"identifier; leave it out with {override_text(name, 'drop')}")
        fill = native_scalar(present.mode().iloc[0]) if absent.any() and missing == "impute" else None
        column = Column(name, "categorical", dtype, categories=labels, fill=fill, missing=has_missing)
        if categorical_dtype:
            column.dtype_categories = [native_scalar(v) for v in series.cat.categories]
            column.ordered = bool(series.cat.ordered)
            column.categories_dtype = str(series.cat.categories.dtype)
        return column
    if numbers is None:
        raise ValueError(f"{where}: column '{name}' holds labels, not numbers; it cannot be {kind}")
    fill = float(np.median(finite)) if absent.any() else None
    column = Column(name, kind, dtype, low=float(finite.min()), high=float(finite.max()), fill=fill,
                    missing=has_missing, decimals=_decimals(finite) if kind == "continuous" else 0)
    if kind == "integer" and not np.all(finite == np.round(finite)):
        raise ValueError(f"{override_text(name, 'integer')}, but the column has fractional values")
    if kind == "integer":
        column.step = _grid_step(finite)
    return column


def _grid_step(values: np.ndarray) -> float | None:
    """The step of the grid an integer column's values sit on (every value is the smallest plus
    a multiple of it: prices in fives, a duration in whole seconds held in microseconds), when it
    is more than 1; None otherwise, or for values too large to be exact in float64."""
    if np.abs(values).max(initial=0) >= 2.0 ** 53:
        return None
    step = int(np.gcd.reduce((values - values.min()).astype(np.int64)))
    return float(step) if step > 1 else None


def override_text(name: Any, kind: str) -> str:
    """How to set column ``name``'s kind on the command line: ``data.params.columns.NAME=KIND``,
    or as JSON where the name holds a dot, ``=`` or a blank, which the dotted key would split."""
    text = str(name)
    if _SPLIT_NAME.search(text):
        return "data.params.columns='" + json.dumps({text: kind}) + "'"
    return f"data.params.columns.{text}={kind}"


def _looks_like_identifier(labels: int, rows: int) -> bool:
    """A label column that is an identifier (or free text) rather than categories: a different
    label in every one of at least 20 rows, or more than :data:`MAX_LABELS` labels that recur
    less than twice on average. Its one-hot features would each hold one or two rows, and every
    sampled label would be a training row's own (a customer id copied into synthetic data)."""
    return (labels == rows and rows >= 20) or (labels > MAX_LABELS and labels > rows // 2)


def _looks_like_row_number(name: Any, values: np.ndarray) -> bool:
    """An integer column that numbers or identifies the rows rather than measuring them: a
    different value in every one of at least 20 rows, under a name such as ``id``, ``index``,
    ``row`` or pandas' ``Unnamed: 0`` (the index ``DataFrame.to_csv`` writes). Sampled, it would be
    noise over the data's range. A column of distinct numbers under any other name is data (a
    count 0..n-1 is a uniform column as far as anyone can tell), so it is kept."""
    if len(values) < 20 or len(np.unique(values)) != len(values):
        return False
    return bool(_ROW_NUMBER_NAME.fullmatch(str(name).strip()))


def _datetime_column(series: Any, name: Any, dtype: str, seconds: np.ndarray, time: dict[str, Any],
                     absent: np.ndarray, has_missing: bool) -> Column:
    """The column of a datetime ``series`` read as ``seconds`` since 1970 (:func:`_date_view`);
    one that holds a single instant and no gap is a constant."""
    present = seconds[~absent]
    if present.min() == present.max() and not absent.any():
        return Column(name, "constant", dtype, value=str(series.iloc[0]))
    origin = float(present.min())
    fill = float(np.median(present)) - origin if absent.any() else None
    return Column(name, "datetime", dtype, low=0.0, high=float(present.max()) - origin, fill=fill,
                  missing=has_missing, time={**time, "origin": origin})


def decode_rows(features: Any, codec: TableCodec, scaler: Any = None, dates_as_text: bool = True) -> Any:
    """Model features (a tensor, standardised by ``scaler`` if given) -> the table's rows, a
    DataFrame (:meth:`TableCodec.decode`)."""
    units = features if scaler is None else scaler.inverse(features)
    return codec.decode(units.detach().cpu().double().numpy(), dates_as_text)


def project(features: Any, codec: TableCodec, scaler: Any = None) -> Any:
    """Model features (a tensor, standardised by ``scaler`` if given) -> the features of the rows
    they decode to: one-hot blocks exactly 0/1, integers rounded into range, constants and
    missing cells as decoded. Samples and baselines are scored this way, as the rows a user
    gets, not as the continuous particles (a classifier would tell 0.97 from 1 at once)."""
    import torch

    back = torch.from_numpy(codec.encode(decode_rows(features, codec, scaler))).to(features.device)
    return back if scaler is None else scaler.forward(back)
