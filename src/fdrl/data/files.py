"""Reading a user's vector file (``.npy``, ``.csv``, ``.txt``) with errors a user can act on.

Every problem is a ``ValueError`` (or ``FileNotFoundError``) of one line naming the file and
what to do: a text file saved as ``.npy``, a pickled or non-numeric array, a ragged row, a cell
that is not a number (with its column name and line), an empty file. A CSV whose first row
does not parse as numbers is read as a header; its column names are kept (and written back
over sampled CSV).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fdrl.config import VECTOR_SUFFIXES

_NPY_MAGIC = b"\x93NUMPY"


@dataclass
class ArrayFile:
    """A vector file's rows as float32 (n, ...) and its CSV header, if it had one."""

    values: np.ndarray
    columns: list[str] | None = None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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


def _read_table(path: Path) -> ArrayFile:
    """CSV (comma-separated) or whitespace-separated text: a header row is detected, and the
    first bad cell is reported by column and line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"data file '{path}' is not text (is it a binary file with the wrong suffix?)") from None
    if path.suffix == ".csv":
        rows = [row for row in csv.reader(io.StringIO(text))]
    else:
        rows = [line.split() for line in text.splitlines()]
    lines = [(i + 1, [cell.strip() for cell in row]) for i, row in enumerate(rows) if any(c.strip() for c in row)]
    if not lines:
        raise ValueError(f"data file '{path}' is empty")
    columns = None
    first_line, first = lines[0]
    if not all(_is_number(cell) for cell in first):
        columns, lines = first, lines[1:]
        if not lines:
            raise ValueError(f"data file '{path}' has a header row but no data rows")
    width = len(columns) if columns else len(first)
    values = np.empty((len(lines), width), dtype=np.float64)
    for r, (line, cells) in enumerate(lines):
        if len(cells) != width:
            raise ValueError(f"data file '{path}', line {line}: {len(cells)} values where the "
                             f"{'header' if columns else 'first row'} has {width}; every row needs the same columns")
        for c, cell in enumerate(cells):
            try:
                values[r, c] = float(cell)
            except ValueError:
                name = f"'{columns[c]}' (column {c + 1})" if columns else f"column {c + 1}"
                what = "is empty" if not cell else f"holds '{cell}', not a number"
                raise ValueError(f"data file '{path}', line {line}: {name} {what}; make every column "
                                 "numeric (encode categories as numbers) or drop it") from None
    return ArrayFile(values, columns)


def read_array(path: str | Path) -> ArrayFile:
    """Read a vector file: rows are samples (a 1-D array is one feature per sample)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file '{path}' does not exist")
    if path.is_dir():
        raise ValueError(f"'{path}' is a folder, not a data file (.npy, .csv or .txt)")
    if path.suffix not in VECTOR_SUFFIXES:
        raise ValueError(f"unsupported data file '{path.name}': use .npy, .csv or .txt")
    if path.suffix == ".npy":
        found = ArrayFile(_read_npy(path))
    else:
        found = _read_table(path)
    values = found.values
    if values.ndim == 0:
        raise ValueError(f"data file '{path}' holds a single number, not rows of samples")
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[0] == 0 or values[0].size == 0:
        raise ValueError(f"data file '{path}' has shape {values.shape}: it needs at least one row and one column")
    with np.errstate(over="ignore"):
        found.values = values.astype(np.float32)
    return found
