"""``fdrl.fit``: train FDRL on your own data from Python, scikit-learn style.

    import numpy as np, fdrl
    model = fdrl.fit(np.random.randn(2000, 3))        # a normal run directory, scored on held-out rows
    x = model.sample(500)                             # in the units (and form) of the data

The same path as ``fdrl train FILE``: in-memory data is written into the run directory
(``data.npy``, or ``data.parquet`` for a DataFrame) and the run's config points at it, so the
run can be resumed, sampled and evaluated from the command line like any other.
"""

from __future__ import annotations

import datetime
import decimal
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fdrl.config import Config, load_config, load_raw
from fdrl.data.columns import native_scalar
from fdrl.data.files import DTYPES, IN_MEMORY, NAMES, lost_dtypes, read_table
from fdrl.model import FDRL
from fdrl.train import Trainer

#: in-memory data is written into the run as one of these (a DataFrame keeps its dtypes in parquet)
ARRAY_FILE, TABLE_FILE = "data.npy", "data.parquet"
#: what a cell of a DataFrame's object column may be: text, a number, a boolean or a date
_CELL_TYPES = (str, int, float, bool, np.number, np.bool_, datetime.date, datetime.time, decimal.Decimal)


def _as_data(data: Any) -> tuple[Any, str]:
    """What :func:`fit` writes into the run, and what sampling gives back: a DataFrame (as it
    is: ``dataframe``), a NumPy array (its dtype: ``numpy``), a tensor or a
    ``torch.utils.data.Dataset`` of tensors or ``(x, y)`` pairs (as a NumPy array: ``tensor``)."""
    import pandas as pd
    import torch

    if isinstance(data, pd.Series):
        data = data.to_frame()
    if isinstance(data, pd.DataFrame):
        if data.empty:
            raise ValueError("fdrl.fit got an empty DataFrame")
        return _checked_frame(data), "dataframe"
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy(), "tensor"
    if isinstance(data, np.ndarray):
        if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
            raise ValueError(f"fdrl.fit needs numbers in an array; it holds {data.dtype} (pass a DataFrame for a "
                             "table with text columns)")
        return data, "numpy"
    if isinstance(data, torch.utils.data.Dataset):
        try:
            count = len(data)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError("fdrl.fit needs a Dataset with a length (a map-style dataset)") from None
        if count == 0:
            raise ValueError("fdrl.fit got an empty Dataset")
        rows = []
        for i in range(count):
            item = data[i]
            x = item[0] if isinstance(item, (tuple, list)) else item
            rows.append(torch.as_tensor(x, dtype=torch.float32))
        return torch.stack(rows).numpy(), "tensor"
    raise TypeError(f"fdrl.fit takes a pandas DataFrame, a NumPy array, a tensor, a torch Dataset or a path; got "
                    f"{type(data).__name__}")


def _checked_frame(frame: Any) -> Any:
    """``frame`` as a table fit can store and type: a ValueError naming what it cannot (a
    MultiIndex or a repeated name, complex numbers, cells that are bytes, lists or other
    objects); an object column of text and numbers mixed is read as text, with a warning (as a
    CSV reader would read it), and a column of pandas periods as the datetimes they start at."""
    import pandas as pd

    if isinstance(frame.columns, pd.MultiIndex):
        raise ValueError("fdrl.fit needs one name per column; this DataFrame's columns are a MultiIndex: flatten "
                         "them, e.g. df.columns = ['_'.join(map(str, c)) for c in df.columns]")
    for position, name in enumerate(frame.columns):
        if isinstance(name, (bool, np.bool_)) or not isinstance(name, (str, int, float, np.number)) or name != name:
            raise ValueError(f"fdrl.fit needs column names that are text or numbers; column {position} is named "
                             f"{name!r}: rename it")
    repeated = list(dict.fromkeys(frame.columns[frame.columns.duplicated()]))
    if repeated:
        raise ValueError(f"fdrl.fit needs one column per name; this DataFrame repeats {', '.join(map(repr, repeated))}:"
                         " rename the columns")
    rewritten = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.PeriodDtype):  # a period is modelled by its start, a datetime
            rewritten[name] = column.dt.to_timestamp()
            continue
        if pd.api.types.is_complex_dtype(column.dtype):
            raise ValueError(f"column {name!r} holds complex numbers; give their real and imaginary parts as two "
                             "columns")
        if column.dtype != object:
            continue
        types = set(column[column.notna()].map(type).unique())
        other = sorted(t.__name__ for t in types if not issubclass(t, _CELL_TYPES))
        if other:
            raise ValueError(f"column {name!r} holds {other[0]} cells; fdrl.fit takes numbers, text, booleans, "
                             "categories and dates (convert the column, or leave it out)")
        if str in types and len(types) > 1:
            rewritten[name] = column.where(column.isna(), column.astype(str))
    if not rewritten:
        return frame
    frame = frame.copy(deep=False)
    for name, values in rewritten.items():
        said = ("holds periods: read as the datetime each starts at (samples are datetimes)"
                if isinstance(frame[name].dtype, pd.PeriodDtype) else
                "mixes text and numbers: read as text labels (as a CSV reader would)")
        warnings.warn(f"the DataFrame given to fdrl.fit: column {name!r} {said}", stacklevel=4)
        frame[name] = values
    return frame


def _override_texts(overrides: dict[str, Any]) -> list[str]:
    """``{"train__steps": 500, "flow.eta": 0.1}`` -> ``["train.steps=500", "flow.eta=0.1"]``."""
    return [f"{key.replace('__', '.')}={json.dumps(value)}" for key, value in overrides.items()]


def build_fit_config(source: str, preset: str | None, overrides: dict[str, Any]) -> Config:
    """The config of :func:`fit`: the data at ``source`` (a file or a folder) with the preset
    for its kind, or ``preset``'s settings with that data section."""
    raw = load_raw(source)
    if preset is not None:
        raw = {**load_raw(preset), "data": raw["data"], "name": raw["name"]}
    return load_config(raw, _override_texts(overrides))


def fit(data: Any, *, preset: str | None = None, out: str | Path | None = None, progress: bool = True,
        **overrides: Any) -> Any:
    """Train FDRL (Algorithm 1) on ``data`` and return the trained :class:`fdrl.FDRL`.

    ``data``: a pandas DataFrame (any mix of number, integer, boolean, text and categorical
    columns); a NumPy array or tensor (n, features) or (n, ...); a ``torch.utils.data.Dataset``
    of tensors or ``(x, y)`` pairs (labels are ignored); or a path: a table file (``.csv``,
    ``.tsv``, ``.parquet``, compressed text) or ``.npy``, or a folder of images. Columns are
    typed and encoded (:mod:`fdrl.data.columns`) and standardised for training;
    ``model.sample(n)`` gives back the same columns and dtypes in the form that went in: a
    DataFrame for a DataFrame, NumPy for NumPy, a tensor for a tensor (also after
    :meth:`fdrl.FDRL.load`).
    ``preset``: start from another preset's settings (default: ``vectors`` for tables and
    arrays, ``images`` for folders). ``out``: the run directory (default: a new temporary
    folder, named in a message and in ``model.run_dir``; removed again if training fails before
    its first checkpoint). ``overrides``: any config key, with ``__`` for the dots
    (``train__steps=500``, ``objective="lr-kl"``), or dotted through a dict
    (``**{"flow.eta": 0.1, "data.params.columns": {"zip": "categorical"}}``).

    The run is scored on held-out data beside a Gaussian, a Gaussian mixture and the floor:
    ``model.metrics`` (also in ``RUN/metrics.json``).
    """
    table = None if isinstance(data, (str, Path)) else _as_data(data)  # checked before any folder is made
    fresh = out is None or not Path(out).exists()
    run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="fdrl-"))
    if out is None and progress:
        print(f"fdrl.fit: run directory {run_dir}", file=sys.stderr)
    try:
        if table is None:
            source = str(data)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            values, returns = table
            path = run_dir / (TABLE_FILE if returns == "dataframe" else ARRAY_FILE)
            _keep_or_write(values, path)
            source = str(path)
            if returns == "tensor":
                overrides = {**overrides, "data.params.returns": "tensor"}
        config = build_fit_config(source, preset, overrides)
        _, metrics = train_and_score(config, run_dir, progress)
    except BaseException:
        if fresh and not any((run_dir / "checkpoints").glob("ckpt_*.pt")):
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing trained: leave no folder behind
        raise
    model = FDRL.load(run_dir)
    model.run_dir, model.metrics = run_dir, metrics
    return model


def _keep_or_write(values: Any, path: Path) -> None:
    """Write ``values`` as the run's data, unless the run already holds the same data (fit again
    on the same ``out`` resumes it); other data in an existing run is refused, never replaced."""
    if path.exists():
        try:
            same = _same(_read_back(path), values)
        except (ValueError, OSError, EOFError):
            same = False
        if not same:
            raise ValueError(f"'{path.parent}' already holds a run trained on other data ({path.name}); "
                             "pass another out=")
        return
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    if path.suffix == ".npy":
        np.save(tmp, values)
    else:
        values = values.copy(deep=False)
        values.attrs[IN_MEMORY] = "the DataFrame given to fdrl.fit"
        values.attrs[DTYPES] = lost_dtypes(values)
        values.attrs[NAMES] = [native_scalar(name) for name in values.columns]
        with warnings.catch_warnings():  # mixed names come back as given (NAMES), not as pyarrow warns
            warnings.filterwarnings("ignore", message="The DataFrame has column names of mixed type")
            values.to_parquet(tmp)
    tmp.replace(path)


def _read_back(path: Path) -> Any:
    """The data a run holds, as training reads it (a DataFrame with its recorded dtypes back)."""
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    return read_table(path)


def _same(stored: Any, values: Any) -> bool:
    if isinstance(values, np.ndarray):
        return isinstance(stored, np.ndarray) and stored.dtype == values.dtype and np.array_equal(stored, values)
    try:
        return stored.equals(values) or stored.equals(values.rename(columns=str))
    except (TypeError, ValueError):
        return False


def train_and_score(config: Config, run_dir: str | Path, progress: bool = True) -> tuple[Any, dict[str, Any] | None]:
    """Algorithm 1 to ``train.steps`` in ``run_dir``, then the held-out report
    (``metrics.json``) if training finished; what ``fdrl train`` and :func:`fit` both run.
    Returns the trainer and the report (None if training stopped early or on ranks > 0)."""
    trainer = Trainer(config, run_dir, progress=progress)
    trainer.fit()
    if not trainer.dist.is_main or trainer.step < config.train.steps:
        return trainer, None
    return trainer, trainer.evaluate()
