"""The default CPU route per MLP shape (``flow.cpu_kernel: null``), decided by measuring on this
machine: the first time a shape is flowed, a few flow steps on the fused kernel and on the torch
route, interleaved, medians; the kernel is taken only where it is at least :data:`MIN_SPEEDUP`
times faster. A rule measured on one CPU did not hold on another (the MNIST preset's net, 784 ->
256 x 3, batch 128: the kernel 1.3x the torch route on an AMD EPYC, 0.76-0.78x on an Intel Xeon).

Decisions are kept for the process and in a JSON file beside the cached library (one per build,
so a new compiler, source or instruction set measures again), written only in the private cache
(:func:`fdrl.native.private_cache`). A close call (a speedup within :data:`CLOSE_CALL`) is
measured again by the next processes, up to :data:`SETTLE_MEASUREMENTS` times, and decided by the
median: one timing taken while the machine was busy does not fix a route for good. ``FDRL_CPU_KERNEL_ROUTE=kernel`` or ``=torch`` forces the
outcome without measuring (tests, and users who measured themselves).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fdrl import native

#: the environment variable that forces the decision: "kernel", "torch", or unset ("measure")
FORCE_ENV = "FDRL_CPU_KERNEL_ROUTE"
#: the kernel is taken where the torch route's median time is at least this multiple of its own
#: (the spread of medians between runs on a busy 2-core machine was up to ~5%)
MIN_SPEEDUP = 1.1
#: timed rounds per route (after one warm-up call each)
ROUNDS = 5
#: a speedup between these bounds is a close call: one timing taken while the machine was busy
#: could have decided it, so later processes measure it again, up to SETTLE_MEASUREMENTS
#: measurements in all, and the median decides
CLOSE_CALL = (0.8, 1.5)
SETTLE_MEASUREMENTS = 3

_decided: dict[str, bool] = {}


def forced() -> bool | None:
    """The outcome :data:`FORCE_ENV` forces (``None``: measure); ValueError for another value."""
    value = os.environ.get(FORCE_ENV, "").strip().lower()
    if value in ("", "measure"):
        return None
    if value not in ("kernel", "torch"):
        raise ValueError(f"{FORCE_ENV} must be 'kernel', 'torch' or 'measure', got '{value}'")
    return value == "kernel"


def time_routes(run_kernel: Callable[[], object], run_torch: Callable[[], object],
                rounds: int = ROUNDS) -> dict[str, float]:
    """Median seconds per call of each route: one warm-up call each (compilation, first touch),
    then ``rounds`` rounds, kernel and torch alternating so that a change in the machine's load
    falls on both."""
    run_kernel()
    run_torch()
    times: dict[str, list[float]] = {"kernel": [], "torch": []}
    for _ in range(rounds):
        for name, run in (("kernel", run_kernel), ("torch", run_torch)):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _read(path: Path | None) -> dict[str, dict]:
    if path is None or not native.is_private(path):
        return {}
    try:
        decisions = json.loads(path.read_text())
    except (OSError, ValueError):  # unreadable or half-written by a killed process: measure again
        return {}
    return decisions if isinstance(decisions, dict) else {}


def _write(path: Path, decisions: dict[str, dict]) -> None:
    """Atomically (temp file + rename): concurrent processes never read half a file."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".routes-", dir=path.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump(decisions, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:  # a full or read-only disk: the decision stays in this process only
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def decisions_file() -> Path | None:
    """The JSON file of decisions beside the cached library, or ``None`` where the kernel is not
    cached (built in a temporary folder)."""
    folder = native.private_cache()
    compiler = native._compiler()
    if folder is None or compiler is None:
        return None
    return folder / (native.library_name(compiler).removesuffix(".so") + ".routes.json")


def _speedups(entry: object) -> list[float]:
    """The speedups a decisions-file entry records (a single ``speedup`` in older files)."""
    if not isinstance(entry, dict):
        return []
    found = entry.get("speedups", [entry["speedup"]] if "speedup" in entry else [])
    if not isinstance(found, list):
        return []
    return [float(v) for v in found if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0]


def settled(speedups: list[float]) -> bool:
    """Whether measured ``speedups`` decide a shape for good: :data:`SETTLE_MEASUREMENTS` of
    them, or a median outside the :data:`CLOSE_CALL` band."""
    if not speedups:
        return False
    low, high = CLOSE_CALL
    return len(speedups) >= SETTLE_MEASUREMENTS or not low < statistics.median(speedups) < high


def kernel_chosen(shape: str, measure: Callable[[], dict[str, float]]) -> bool:
    """Whether the default route of the flow shape ``shape`` (a key naming the net, the batch and
    anything else its speed depends on) is the kernel: forced (:data:`FORCE_ENV`), decided before
    (this process, or settled in the file), or measured now by ``measure``
    (:func:`time_routes`'s result) and decided by the median speedup of every measurement of
    the shape (:func:`settled`)."""
    choice = forced()
    if choice is not None:
        return choice
    if shape in _decided:
        return _decided[shape]
    path = decisions_file()
    speedups = _speedups(_read(path).get(shape))
    if not settled(speedups):
        seconds = measure()
        speedups.append(seconds["torch"] / seconds["kernel"])
        if path is not None:
            known = _read(path)  # another process may have added shapes meanwhile
            known[shape] = {"kernel": statistics.median(speedups) >= MIN_SPEEDUP,
                            "speedups": [round(v, 3) for v in speedups],
                            "seconds": {name: round(s, 6) for name, s in seconds.items()}}
            _write(path, known)
    _decided[shape] = statistics.median(speedups) >= MIN_SPEEDUP
    return _decided[shape]
