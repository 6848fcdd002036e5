"""Reading a user's data file (``.npy``, a text table, ``.parquet``) with errors a user can act on.

Tables are read by pandas, in the format :mod:`fdrl.data.table_format` finds from their first
lines, and keep what they hold: numbers, booleans, strings, missing cells (NaN). Every problem is
a one-line ``ValueError`` (``FileNotFoundError`` for a missing file) naming the file and, where
there is one, the column and the line: a folder or an unknown suffix, an empty file, a header
with no rows, a ragged row, a binary or damaged file, parquet without an engine.
:func:`read_array` is the numeric view: it refuses a cell that is not a number.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fdrl.data.columns import native_scalar
from fdrl.data.table_format import (FALLBACK_ENCODINGS, WHITESPACE, TableFormat, damage_error, data_rows,
                                    detect_format, is_decimal_comma, is_missing)
from fdrl.table_paths import EXCEL_SUFFIXES, PARQUET_SUFFIX, is_table_path, split_name, supported_suffixes

if TYPE_CHECKING:
    import pandas

__all__ = ["ArrayFile", "is_table_path", "line_of_row", "read_array", "read_data", "read_table"]

_NPY_MAGIC = b"\x93NUMPY"
#: pandas' C parser on a row longer than the first: "Expected 3 fields in line 5, saw 4"
_EXTRA_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


@dataclass
class ArrayFile:
    """A vector file's rows as float32 (n, ...) and its table header, if it had one."""

    values: np.ndarray
    columns: list[str] | None = None
#: a table's ``attrs`` key: how messages name a table given in memory (the file read is only the
#: run's copy of it, which the user never wrote), e.g. "the DataFrame given to fdrl.fit"
IN_MEMORY = "in_memory"
#: a table's ``attrs`` key: the pandas dtypes that a parquet round trip does not keep
#: (:func:`lost_dtypes`): categories that are numbers come back as plain integers, an object
#: column of text or booleans as ``str`` or ``bool``
DTYPES = "pandas_dtypes"
#: a table's ``attrs`` key: its column names as given, when they are text and numbers mixed
#: (parquet writes them all as text: a column ``0`` beside ``"a"`` would come back as ``"0"``)
NAMES = "column_names"


def _checked_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file '{path}' does not exist")
    if path.is_dir():
        raise ValueError(f"'{path}' is a folder, not a data file ({supported_suffixes()})")
    if not (is_table_path(path) or path.suffix.lower() == ".npy"):
        raise ValueError(f"unsupported data file '{path.name}': use {supported_suffixes()}")
    return path


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as handle:
        magic = handle.read(len(_NPY_MAGIC))
    if magic != _NPY_MAGIC:
        raise ValueError(f"data file '{path}' is not a NumPy .npy file (no .npy header); write it with "
                         "numpy.save, or give a text table the suffix .csv or .txt")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err):
            raise ValueError(f"data file '{path}' holds Python objects, not numbers; save a numeric array "
                             "(e.g. numpy.save(path, x.astype('float32')))") from None
        raise ValueError(f"data file '{path}' is damaged or truncated ({err}); write it again") from None
    except (EOFError, OSError) as err:
        raise ValueError(f"data file '{path}' is damaged or truncated ({err}); write it again") from None
    if array.dtype.names is not None or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"data file '{path}' holds {array.dtype} values, not numbers; save a numeric array")
    return array


def lost_dtypes(frame: "pandas.DataFrame") -> list[list[Any]]:
    """For :data:`DTYPES`: ``[name, "object"]`` for each object column and ``[name, "category",
    categories, ordered, categories' dtype]`` for each category column whose categories JSON holds
    (text, numbers, booleans); names that JSON cannot hold are left out."""
    import pandas as pd

    found: list[list[Any]] = []
    for name in frame.columns:
        dtype = frame[name].dtype
        name = native_scalar(name)
        if not isinstance(name, (str, int, float)):
            continue
        if dtype == object:
            found.append([name, "object"])
        elif isinstance(dtype, pd.CategoricalDtype):
            categories = [native_scalar(c) for c in dtype.categories]
            if all(isinstance(c, (str, int, float, bool)) for c in categories):
                found.append([name, "category", categories, bool(dtype.ordered), str(dtype.categories.dtype)])
    return found


def _with_dtypes(frame: "pandas.DataFrame") -> "pandas.DataFrame":
    """``frame`` with the names and dtypes its :data:`NAMES` and :data:`DTYPES` attrs record put
    back."""
    import pandas as pd

    names = frame.attrs.get(NAMES)
    if names and [str(n) for n in names] == [str(c) for c in frame.columns]:
        frame.columns = names
    for name, kind, *category in frame.attrs.get(DTYPES, []):
        if name not in frame.columns:
            continue
        if kind == "object":
            frame[name] = frame[name].astype(object)
        elif not isinstance(frame[name].dtype, pd.CategoricalDtype):
            categories, ordered, categories_dtype = category
            frame[name] = pd.Categorical(frame[name], categories=pd.Index(categories, dtype=categories_dtype),
                                         ordered=ordered)
    return frame


def _read_excel(path: Path) -> "pandas.DataFrame":
    """The first sheet of an Excel workbook, its first row the header (pandas with openpyxl);
    a warning names the sheets left unread."""
    import pandas as pd

    try:
        with pd.ExcelFile(path, engine="openpyxl") as book:
            sheets = book.sheet_names
            frame = pd.read_excel(book, sheet_name=sheets[0])
    except ImportError:
        raise ValueError(f"data file '{path}': reading .xlsx needs openpyxl: pip install openpyxl (a dependency of "
                         "fdrl: reinstall it)") from None
    except Exception as err:  # noqa: BLE001 - zipfile, XML and openpyxl errors alike: one message
        raise ValueError(f"data file '{path}' is damaged or not an Excel workbook "
                         f"({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__})") from None
    if len(sheets) > 1:
        warnings.warn(f"data file '{path}': read its first sheet '{sheets[0]}' of {len(sheets)} "
                      f"({', '.join(map(repr, sheets[1:4]))}{', ...' if len(sheets) > 4 else ''} left out); to train "
                      "on another, save that sheet as CSV", stacklevel=3)
    frame.attrs["header"] = True
    return frame


def _read_parquet(path: Path) -> "pandas.DataFrame":
    if all(importlib.util.find_spec(engine) is None for engine in ("pyarrow", "fastparquet")):
        raise ValueError(f"data file '{path}': reading .parquet needs pyarrow: pip install pyarrow (a dependency of fdrl: reinstall it)")
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - the engines raise their own types; any is one message
        raise ValueError(f"data file '{path}' is damaged or not parquet ({str(err).splitlines()[0]})") from None
    frame.attrs["header"] = True
    return _with_dtypes(frame)


def _parse(path: Path, fmt: TableFormat) -> "pandas.DataFrame":
    """pandas' read of the text table in format ``fmt``, its errors turned into one line."""
    import lzma
    import zlib

    import pandas as pd

    options = dict(sep=fmt.sep, decimal=fmt.decimal, header=0 if fmt.header else None, index_col=False,
                   encoding=fmt.encoding, compression=fmt.compression, skip_blank_lines=True)
    if fmt.sep != WHITESPACE:
        options["skipinitialspace"] = True
    if fmt.skip_lines:
        options["skiprows"] = fmt.skip_lines
    if fmt.header_in_comment:
        options.update(header=None, names=list(fmt.first_row))
    names = fmt.first_row if fmt.header else range(len(fmt.first_row))
    if fmt.zero_padded and len(set(names)) == len(names):  # codes such as 00123 stay text
        options["dtype"] = {names[i]: str for i in fmt.zero_padded if i < len(names)}
    try:
        return pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise ValueError(f"data file '{path}' is empty") from None
    except pd.errors.ParserError as err:
        found = _EXTRA_FIELDS.search(str(err))
        if found is None:
            raise ValueError(f"data file '{path}' is not a table pandas can read "
                             f"({str(err).strip().splitlines()[0]})") from None
        width, line, cells = (int(g) for g in found.groups())
        raise _ragged(path, fmt, line, cells, width) from None
    except UnicodeDecodeError as err:  # a byte past the sampled start: the next encoding that reads it
        order = ("utf-8-sig", *FALLBACK_ENCODINGS)
        if fmt.encoding not in order[:-1]:
            raise ValueError(f"data file '{path}' is not {fmt.encoding} text throughout ({err.reason} at byte "
                             f"{err.start}); save it as UTF-8") from None
        return _parse(path, replace(fmt, encoding=order[order.index(fmt.encoding) + 1]))
    except (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile) as err:
        if fmt.compression is None:
            raise
        raise damage_error(path, fmt.compression, err) from None


def _ragged(path: Path, fmt: TableFormat, line: int, cells: int, width: int) -> ValueError:
    return ValueError(f"data file '{path}', line {line}: {cells} values where the "
                      f"{'header' if fmt.header else 'first row'} has {width}; every row needs the same columns")


def _check_short_rows(path: Path, fmt: TableFormat, frame: "pandas.DataFrame") -> None:
    """pandas fills a row shorter than the header with NaN; such a row ends in NaN, so only
    those rows are looked up in the file, and a short one is a ragged-row error."""
    width = frame.shape[1]
    suspects = np.flatnonzero(frame.iloc[:, -1].isna().to_numpy())
    if width < 2 or suspects.size == 0:
        return
    wanted, last = set(suspects.tolist()), int(suspects[-1])
    for row, (line, cells) in enumerate(data_rows(path, fmt)):
        if row in wanted and len(cells) < width:
            raise _ragged(path, fmt, line, len(cells), width)
        if row >= last:
            return


def read_table(path: str | Path) -> "pandas.DataFrame":
    """A text table, a ``.parquet`` file or an Excel workbook's first sheet as pandas reads it:
    pandas' dtypes (int64, float64, bool, strings), missing cells as NaN, columns named by the
    header or ``0..d-1`` without one; a text table in the format found from its first lines
    (:func:`fdrl.data.table_format.detect_format`).
    ``attrs``: ``path`` (str), ``header`` (whether the first row named the columns) and, for a
    text table, its ``sep`` and ``decimal`` mark."""
    path = _checked_path(path)
    if split_name(path)[1] == PARQUET_SUFFIX:
        frame = _read_parquet(path)
    elif path.suffix.lower() in EXCEL_SUFFIXES:
        frame = _read_excel(path)
    elif path.suffix.lower() == ".npy":
        raise ValueError(f"data file '{path}' is a NumPy array, not a table; read it with read_data or read_array")
    else:
        fmt = detect_format(path)
        frame = _parse(path, fmt)
        frame.attrs.update(header=fmt.header, sep=fmt.sep, decimal=fmt.decimal)
        if fmt.header:
            _warn_repeated_names(path, list(fmt.first_row), list(frame.columns))
        if len(frame) and len(frame.columns):
            _check_short_rows(path, fmt, frame)
    if len(frame) == 0:
        raise ValueError(f"data file '{path}' has a header row but no data rows" if frame.attrs["header"] and
                         len(frame.columns) else f"data file '{path}' is empty")
    frame.attrs["path"] = str(path)
    return frame


def _warn_repeated_names(path: Path, written: list[str], read: list[object]) -> None:
    """pandas reads a second column named ``a`` as ``a.1``: say so, since samples and the run's
    column settings (``data.params.columns.a.1``) then use the names pandas gave."""
    repeated = sorted({name for name in written if name and written.count(name) > 1})
    if repeated and len(written) == len(read):
        given = ", ".join(f"'{r}'" for w, r in zip(written, read) if w in repeated)
        warnings.warn(f"data file '{path}': column name(s) {', '.join(repr(n) for n in repeated)} repeat; read as "
                      f"{given} (samples use these names); rename the columns to choose them", stacklevel=3)


def _row_cells(path: str | Path, row: int) -> tuple[int, list[str]]:
    """The line and the raw cells of data row ``row`` (0-based, after the header) of a text table."""
    path = Path(path)
    for index, found in enumerate(data_rows(path, detect_format(path))):
        if index == row:
            return found
    raise ValueError(f"data file '{path}' has no data row {row}")


def line_of_row(path: str | Path, row: int) -> int:
    """The 1-based line (of the decompressed text, as an editor shows it) where data row ``row``
    (0-based, after the header, blank lines skipped) of a text table starts; re-reads the file."""
    return _row_cells(path, row)[0]


def read_data(path: str | Path) -> "pandas.DataFrame | np.ndarray":
    """A data file as stored: a ``.npy`` file's numeric or boolean array, a table's DataFrame
    (:func:`read_table`)."""
    path = _checked_path(path)
    if path.suffix.lower() == ".npy":
        return _read_npy(path)
    return read_table(path)


def _numeric(frame: "pandas.DataFrame", path: Path) -> np.ndarray:
    """The frame's cells as float32 (booleans as 0 / 1); the first cell that is not a number,
    or is missing, is an error naming its column and line."""
    import pandas as pd

    values = np.empty(frame.shape, dtype=np.float32)
    for c, name in enumerate(frame.columns):
        column = frame[name]
        if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
            numbers = pd.to_numeric(column, errors="coerce")
            bad = column.notna().to_numpy() & numbers.isna().to_numpy()
            if bad.any():
                _raise_cell(frame, path, int(np.argmax(bad)), c)
            column = numbers
        missing = column.isna().to_numpy()
        if missing.any():
            _raise_cell(frame, path, int(np.argmax(missing)), c)
        with np.errstate(over="ignore"):  # beyond float32's range: inf, refused later with the row
            values[:, c] = column.to_numpy(dtype=np.float64)
    return values


def _raise_cell(frame: "pandas.DataFrame", path: Path, row: int, c: int) -> None:
    """The one-line error for the cell at data row ``row``, column ``c`` that is not a number."""
    import pandas as pd

    label = f"'{frame.columns[c]}' (column {c + 1})" if frame.attrs.get("header") else f"column {c + 1}"
    if split_name(path)[1] == PARQUET_SUFFIX:
        where, cell = f"row {row + 1}", frame.iloc[row, c]
        what = "is missing" if pd.isna(cell) else f"holds '{cell}', not a number"
    else:
        line, cells = _row_cells(path, row)
        where, cell = f"line {line}", cells[c].strip() if c < len(cells) else ""
        what = ("is empty" if not cell else f"holds '{cell}', a missing value" if is_missing(cell)
                else f"holds '{cell}', not a number")
        if is_decimal_comma(cell):
            what += " (a decimal comma: write decimals with a point, or separate the columns with ';')"
    raise ValueError(f"data file '{path}', {where}: {label} {what}; make every column numeric (encode categories "
                     "as numbers) and fill or drop missing cells")


def read_array(path: str | Path) -> ArrayFile:
    """A vector file of numbers only: a ``.npy`` array or a table whose every cell is a number
    (booleans count as 0 / 1), as float32 rows (a 1-D array is one feature per sample), with the
    table's header as ``columns``."""
    found = read_data(path)
    path = Path(path)
    if isinstance(found, np.ndarray):
        values, columns = found, None
    else:
        values = _numeric(found, path)
        columns = [str(name) for name in found.columns] if found.attrs["header"] else None
    if values.ndim == 0:
        raise ValueError(f"data file '{path}' holds a single number, not rows of samples")
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[0] == 0 or values[0].size == 0:
        raise ValueError(f"data file '{path}' has shape {values.shape}: it needs at least one row and one column")
    with np.errstate(over="ignore"):
        return ArrayFile(values.astype(np.float32, copy=False), columns)
