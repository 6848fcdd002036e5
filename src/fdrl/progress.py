"""Progress bars: tqdm's, redrawn at most every :data:`LOG_INTERVAL` seconds when stderr is a
file or a pipe. tqdm redraws ten times a second wherever it writes; in a log (``fdrl train
data.csv > train.log 2>&1``, a batch job) every redraw stays, which made a one-minute run's log
a single line of 30 KB. A terminal and a notebook keep tqdm's own pace."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

#: seconds between redraws when stderr is not a terminal
LOG_INTERVAL = 30.0


def progress_bar(iterable: Iterable[Any] | None = None, **options: Any) -> Any:
    """``tqdm.auto.tqdm(iterable, **options)``, at :data:`LOG_INTERVAL` when writing to a log."""
    from tqdm.auto import tqdm

    notebook = tqdm.__module__ != "tqdm.std" and tqdm.__module__ != "tqdm.asyncio"
    if not notebook and not _is_terminal(sys.stderr):
        options.setdefault("mininterval", LOG_INTERVAL)
    return tqdm(iterable, **options)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False
