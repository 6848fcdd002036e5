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
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_DIR = "checkpoints"
BEST_NAME = "best.pt"
_NAME = re.compile(r"^ckpt_(\d{9})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or written; the message names the file."""


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt_{step:09d}.pt"


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` via a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint {path}: {err.strerror or err}") from None
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a corrupt or unsafe file raises CheckpointError."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated, corrupt or unsafe files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or unsafe to load ({first})") from None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that loads, with a warning for each newer one skipped as corrupt.
    None if the run has no checkpoint; CheckpointError (naming the newest) if none loads."""
    skipped: list[CheckpointError] = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            state = safe_load(path, map_location)
        except CheckpointError as err:
            skipped.append(err)
            continue
        for err in skipped:
            warnings.warn(f"{err}; using {path.name} instead", stacklevel=2)
        return state, path
    if skipped:
        raise CheckpointError(f"no checkpoint of {run_dir} loads; the newest: {skipped[0]}")
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
