"""Checkpoint files: atomic writes, safe loads, rotation, and finding the latest good one.

A checkpoint is written with ``torch.save`` to a temporary file, fsynced and renamed, so a
crash never leaves a half-written file under a checkpoint's name. It is read with
``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only, so a
tampered file cannot run code. Rotation keeps the newest few; ``best.pt`` is a hard link to the
checkpoint with the best evaluation, so it survives rotation without a second copy on disk.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

CHECKPOINT_DIR = "checkpoints"
BEST_NAME = "best.pt"
_NAME = re.compile(r"^ckpt_(\d{9})\.pt$")
#: what every training checkpoint holds (fdrl.train.Trainer.state), with the type of each
STATE_KEYS: dict[str, type] = {"step": int, "estimator": dict, "ema": dict, "optimizer": dict, "scheduler": dict,
                               "rng": dict, "config": dict, "estimator_spec": dict, "version": str}
T = TypeVar("T")


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or written; the message names the file."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint that loads but belongs to another run: an error, never skipped."""


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt_{step:09d}.pt"


class _KeptWriteErrors:
    """A binary file for ``torch.save`` that keeps the first OSError of a write: torch reports a
    failed write (a full disk, a file-size limit) as a RuntimeError that does not say why."""

    def __init__(self, handle: Any):
        self.handle, self.error = handle, None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.handle.flush()


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` via a temporary file, fsync and rename: a failed write (a full
    disk) leaves the previous file under ``path`` and no temporary file, and raises a one-line
    CheckpointError saying why."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    writer = None
    try:
        with open(tmp, "wb") as handle:
            writer = _KeptWriteErrors(handle)
            torch.save(obj, writer)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)
        cause = writer.error if writer is not None and writer.error is not None else err
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else _first_line(cause)
        raise CheckpointError(f"could not write checkpoint {path}: {reason}") from None
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint with ``weights_only=True``; a corrupt or unsafe file, or one
    that is not an fdrl checkpoint (another program's, or a plain tensor), raises CheckpointError."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated, corrupt or unsafe files
        raise CheckpointError(f"checkpoint {path} is corrupt or unsafe to load ({_first_line(err)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is not an fdrl checkpoint (it holds a {type(state).__name__})")
    for key, kind in STATE_KEYS.items():
        if not isinstance(state.get(key), kind):
            found = "is missing" if key not in state else f"is a {type(state[key]).__name__}"
            raise CheckpointError(f"checkpoint {path} is not an fdrl checkpoint of this version ('{key}' {found})")
    return state


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    apply: Callable[[dict[str, Any]], T] | None = None) -> Any:
    """:func:`safe_load`, then ``apply(state)`` if given (its result is returned): a KeyError,
    TypeError, ValueError or RuntimeError in ``apply`` (contents that do not fit, such as
    tensors of the wrong shape) is a CheckpointError naming the file, and a CheckpointMismatch
    (saying what it belongs to) gets the file's name in front."""
    state = safe_load(path, map_location)
    if apply is None:
        return state
    try:
        return apply(state)
    except CheckpointMismatch as err:
        raise CheckpointMismatch(f"checkpoint {path} {err}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit this run ({type(err).__name__}: "
                              f"{_first_line(err)})") from None


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu",
                apply: Callable[[dict[str, Any]], T] | None = None) -> tuple[Any, Path] | None:
    """The newest checkpoint that loads (and that ``apply`` accepts: :func:`load_checkpoint`),
    with a warning for each newer one skipped, and its path; None if the run has none;
    CheckpointError (naming the newest) if none loads. A CheckpointMismatch stops the search."""
    skipped: list[CheckpointError] = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            result = load_checkpoint(path, map_location, apply)
        except CheckpointMismatch:
            raise
        except CheckpointError as err:
            if not path.exists():  # rotated away by a training run since the listing: not damage
                continue
            skipped.append(err)
            continue
        for err in skipped:
            warnings.warn(f"{err}; using {path.name} instead", stacklevel=2)
        return result, path
    if skipped:
        raise CheckpointError(f"no checkpoint of {run_dir} loads (restore one, or train again with another --out); "
                              f"the newest: {skipped[0]}")
    return None


def link_best(path: str | Path) -> Path:
    """Make ``best.pt`` next to ``path`` point at it (a hard link, or a copy where the file
    system has none), replacing the previous one atomically."""
    path = Path(path)
    best, tmp = path.with_name(BEST_NAME), path.with_name(f".{BEST_NAME}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        os.replace(tmp, best)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint {best}: {err.strerror or err}") from None
    return best


def prune(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``best.pt`` is not one of them), and
    temporary files a killed writer left behind."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    for path in [*list_checkpoints(run_dir)[:-keep], *directory.glob(".ckpt_*.pt.tmp")]:
        path.unlink(missing_ok=True)
