"""Progress bars redraw at tqdm's pace in a terminal and every 30 s into a log file."""

import io
import sys

from fdrl.progress import LOG_INTERVAL, progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _interval(stream, monkeypatch):
    monkeypatch.setattr(sys, "stderr", stream)
    bar = progress_bar(range(3), file=stream, desc="run")
    assert list(bar) == [0, 1, 2]  # still the iterable it wraps
    return bar.mininterval


def test_a_log_gets_few_redraws_a_terminal_keeps_tqdms_pace(monkeypatch):
    assert _interval(io.StringIO(), monkeypatch) == LOG_INTERVAL
    assert _interval(_Terminal(), monkeypatch) < 1  # tqdm's own default (0.1 s)
    assert progress_bar(file=io.StringIO(), mininterval=2).mininterval == 2  # a caller's choice stands
