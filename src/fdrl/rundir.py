"""A training run's directory: the files the Trainer writes, and keeping them consistent.

``RUN/config.yaml`` (the resolved config), ``.lock`` (the one writer), ``data.json`` (the data
files' fingerprints, :mod:`fdrl.data.fingerprint`), ``prior.json`` / ``prior.safetensors``,
``scaler.json``, ``table.json`` (a table's columns), ``checkpoints/`` (:mod:`fdrl.checkpoint`),
``metrics.jsonl`` (one JSON record a line), ``tb/`` (TensorBoard), ``samples/step_*.png`` and
``metrics.json`` (the held-out report).

Any of these may be damaged (a killed process, a full disk, a copy from another version): a
damaged checkpoint falls back to the previous good one, a damaged ``config.yaml`` or prior is
rewritten by the next writer (the checkpoints hold the config; the prior is refitted), each
with a warning; what cannot be recovered is one error naming the file and what to do.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from fdrl.checkpoint import atomic_save, checkpoint_path, link_best, list_checkpoints, load_latest, prune
from fdrl.config import RUN_CONFIG, Config, ConfigError, DamagedRunConfig, read_run_config
from fdrl.data.fingerprint import check_and_record
from fdrl.priors import Prior, load_prior

T = TypeVar("T")

LOCK_FILE, METRICS_LOG, METRICS_FILE = ".lock", "metrics.jsonl", "metrics.json"

#: Keys that may differ between a run's stored config and the one it is resumed with.
RESUMABLE_CHANGES = {"device", "train.steps", "train.log_every", "train.checkpoint_every",
                     "train.keep_checkpoints", "train.sample_every", "train.sample_n", "train.eval_n",
                     "train.threads", "train.dist_backend", "flow.channels_last", "flow.autocast_bf16",
                     "flow.tf32", "flow.compile", "flow.compile_mode",
                     "train.eval_every", "train.eval_metric", "train.eval_classifier", "train.eval_inception_weights",
                     "train.guard_max_ratio", "train.guard_retries", "train.guard_lr_factor", "train.guard_particle_ratio"}



def without_nan(record: Any) -> Any:
    """``record`` with every NaN or infinite float replaced by None, in nested dicts and lists:
    a score that does not exist (a ratio to a baseline at or below 0) is JSON's null, which
    every JSON reader takes, where Python writes NaN, which strict readers (jq, JavaScript)
    refuse."""
    if isinstance(record, dict):
        return {str(key) if isinstance(key, float) and not math.isfinite(key) else key: without_nan(value)
                for key, value in record.items()}
    if isinstance(record, (list, tuple)):
        return [without_nan(value) for value in record]
    if isinstance(record, float) and not math.isfinite(record):
        return None
    return record

class RunInUseError(ValueError):
    """Another process is writing the run directory; the message names it."""


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "params":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def config_conflict(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first setting, other than those a resume may change, that differs: 'key=old, not new'.
    A key the old config lacks (a run from before the key existed) counts as its default."""
    defaults = _flatten(Config().to_dict())
    old, new = {**defaults, **_flatten(old)}, _flatten(new)
    for key in sorted(set(old) | set(new)):
        if key not in RESUMABLE_CHANGES and old.get(key) != new.get(key):
            return f"{key}={old.get(key)!r}, not {new.get(key)!r}"
    return None


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``config.yaml`` as a mapping; if that file is damaged, the config stored in
    the newest good checkpoint, with a warning (``fdrl train --resume`` writes it back).
    ConfigError (naming the file) if neither is readable."""
    try:
        return read_run_config(run_dir)
    except DamagedRunConfig as err:
        found = load_latest(run_dir)
        if found is None:
            raise ConfigError(f"{err.problem}, and the run has no checkpoint that holds its config; train it "
                              "again") from None
        state, path = found
        warnings.warn(f"{err}; using the config stored in {path.name}", stacklevel=2)
        return state["config"]


class RunLock:
    """The exclusive right to write a run directory: ``flock`` on ``RUN/.lock``, which holds
    the writer's PID and host.

    The operating system drops a ``flock`` when its process dies, so a lock left by a killed run
    on this host is taken over with a notice; a live writer is named in a :class:`RunInUseError`,
    and so is a lock left by another host (this machine cannot tell whether that process still
    runs). Within one process the lock is shared: a second Trainer on the same directory (a
    resume in a notebook) takes it over.
    """

    #: lock file path -> [file descriptor, holders] of the locks this process holds
    _held: dict[Path, list[int]] = {}

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir).resolve() / LOCK_FILE
        self.holding = False

    def acquire(self) -> None:
        """Take the lock (a no-op if this object holds it already)."""
        if self.holding:
            return
        entry = self._held.get(self.path)
        if entry is not None:
            entry[1] += 1
            self.holding = True
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise RunInUseError(f"run directory '{self.path.parent}' is being written by {holder}; wait for it to "
                                "finish, or pass another --out (reading it with sample, evaluate or info is fine)") from None
        except OSError as err:  # a file system without locks: go on unprotected
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            warnings.warn(f"cannot lock '{self.path}' ({err.strerror}); make sure no other fdrl train writes "
                          "this run directory", stacklevel=2)
        previous = _read_holder(fd)
        if previous and previous.get("host") != socket.gethostname():
            os.close(fd)
            raise RunInUseError(f"run directory '{self.path.parent}' was locked by {_describe(previous)}, which "
                                f"this machine cannot check; if no fdrl train runs there, delete '{self.path}'")
        if previous and previous.get("pid") != os.getpid():
            warnings.warn(f"took over the lock of run directory '{self.path.parent}' left by {_describe(previous)}, "
                          "which is no longer running", stacklevel=2)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._held[self.path] = [fd, 1]
        self.holding = True

    def release(self) -> None:
        """Give the lock up; the last holder in this process empties the file and unlocks it
        (the file stays, so that no second process can lock a file that is being deleted)."""
        if not self.holding:
            return
        self.holding = False
        entry = self._held[self.path]
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[self.path]
            os.ftruncate(entry[0], 0)
            os.close(entry[0])  # closing drops the flock


def _read_holder(fd: int) -> dict[str, Any] | None:
    """The PID / host record of a lock file, or None if it is empty or unreadable."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"null")
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    return f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')})"


class RunDirectory:
    """The files of one training run, written by one process at a time (:class:`RunLock`).

    ``writer=False`` (ranks > 0 of a distributed run) reads what rank 0 writes and writes
    nothing itself.
    """

    def __init__(self, path: str | Path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        self.lock = RunLock(self.path)

    def prepare(self, config: Config) -> None:
        """Check the directory is writable, take its lock, refuse a config that conflicts with
        the stored run's or data files that changed since it trained, and write ``config.yaml``."""
        if not self.writer:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise ConfigError(f"run directory '{self.path}' is not writable ({err.strerror}); pass another --out") from None
        self.lock.acquire()
        stored = self.path / RUN_CONFIG
        if self.checkpoints() and stored.exists():
            try:
                conflict = config_conflict(read_run_config(self.path), config.to_dict())
            except DamagedRunConfig as err:  # the checkpoints' own config is checked when one is loaded
                warnings.warn(f"{err.problem}; writing it again from this run's config", stacklevel=2)
                conflict = None
            if conflict:
                raise ConfigError(f"run directory '{self.path}' holds a run with {conflict}; resume it "
                                  "unchanged (fdrl train --resume) or pass another --out")
        try:  # before anything is written: a run never mixes two data sets
            check_and_record(self.path, config.data.params, trained=bool(self.checkpoints()))
        except ValueError as err:
            raise ConfigError(str(err)) from None
        tmp = stored.with_name(f".{RUN_CONFIG}.tmp")  # written whole or not at all
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        os.replace(tmp, stored)

    def release(self) -> None:
        """Let another writer have the directory."""
        self.lock.release()

    # -- prior -----------------------------------------------------------------------------------
    def prior(self, build: Callable[[], Prior]) -> Prior:
        """The run's saved prior if it has checkpoints (training went on with it), else
        ``build()``, saved. A run killed before its first checkpoint may have left a partial
        prior, and a damaged one is refitted with a warning (fitting is deterministic)."""
        if self.checkpoints() and (self.path / "prior.json").exists():
            try:
                return load_prior(self.path)
            except ValueError as err:
                warnings.warn(f"{err}; fitting it again", stacklevel=2)
        prior = build()
        prior.save(self.path)
        return prior

    # -- checkpoints -----------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """The checkpoint files, oldest first."""
        return list_checkpoints(self.path)

    def save_checkpoint(self, state: dict[str, Any], step: int, keep: int) -> Path:
        """Write ``state`` as the checkpoint of ``step`` and keep the newest ``keep``; returns
        its path (also where nothing is written, on ranks > 0)."""
        path = checkpoint_path(self.path, step)
        if self.writer:
            atomic_save(state, path)
            prune(self.path, keep)
        return path

    def load_latest(self, apply: Callable[[dict[str, Any]], T], device: torch.device) -> tuple[T, Path] | None:
        """``apply`` the newest checkpoint that loads and fits (:func:`fdrl.checkpoint.load_latest`).
        The writer renames the newer ones that did not to ``*.damaged``, so that rotation, which
        keeps the newest few, never deletes good checkpoints to keep damaged ones."""
        found = load_latest(self.path, map_location=device, apply=apply)
        if found is not None and self.writer:
            for path in self.checkpoints():
                if path.name > found[1].name:
                    path.replace(path.with_name(path.name + ".damaged"))
                    warnings.warn(f"kept the damaged {path.name} as {path.name}.damaged", stacklevel=2)
        return found

    @staticmethod
    def link_best(path: Path) -> None:
        """Mark the checkpoint at ``path`` as ``best.pt``."""
        link_best(path)

    # -- logs and figures ------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` to ``metrics.jsonl`` on a line of its own: a run killed mid-write
        leaves a partial last line, which then stays a line of its own (readers skip it)."""
        if not self.writer:
            return
        with open(self.path / METRICS_LOG, "a+b") as handle:
            end = handle.seek(0, os.SEEK_END)
            handle.seek(max(end - 1, 0))
            fresh = end == 0 or handle.read(1) == b"\n"
            handle.write((b"" if fresh else b"\n") + json.dumps(record).encode() + b"\n")

    def tensorboard(self) -> Any:
        """A TensorBoard ``SummaryWriter`` on ``tb/`` (None on ranks > 0)."""
        if not self.writer:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.path / "tb"))

    def samples_figure_path(self, step: int) -> Path:
        return self.path / "samples" / f"step_{step:07d}.png"

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """The held-out report, ``metrics.json`` (strict JSON: :func:`without_nan` first)."""
        if self.writer:
            (self.path / METRICS_FILE).write_text(json.dumps(metrics, indent=2, allow_nan=False))
