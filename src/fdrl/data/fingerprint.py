"""A run's record of the data files it trains on, so that a run never mixes two data sets.

``RUN/data.json`` holds, for each data file of the config (``data.params.path`` and
``test_path``), its size, modification time and a content hash. A run that is resumed or
re-run checks the files against it first: a file whose content changed is refused before
anything in the run is written (a new run needs another ``--out``); a file that was only
touched (same content, new time) is accepted and its time updated.

The hash is BLAKE2b of the whole file up to :data:`WHOLE_FILE_LIMIT` bytes (about 0.3 s for
150 MB); above that, of its size and :data:`EDGE_BYTES` from its start, middle and end, so that
a check stays cheap for files of many gigabytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

DATA_RECORD = "data.json"
WHOLE_FILE_LIMIT = 512 * 2**20
EDGE_BYTES = 16 * 2**20
#: the data.params keys that name files
FILE_KEYS = ("path", "test_path")


def content_hash(path: Path, size: int) -> str:
    """BLAKE2b of the file (or of its size and three slices when it is large)."""
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as handle:
        if size <= WHOLE_FILE_LIMIT:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
        else:
            digest.update(str(size).encode())
            for start in (0, size // 2, size - EDGE_BYTES):
                handle.seek(start)
                digest.update(handle.read(EDGE_BYTES))
    return digest.hexdigest()


def describe(path: str | Path) -> dict[str, Any]:
    """The record of one file: its path, size, modification time (ns) and content hash."""
    path = Path(path)
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "hash": content_hash(path, stat.st_size)}


def data_files(data_params: dict[str, Any]) -> dict[str, str]:
    """The data files a config's ``data.params`` names, by key (absent and non-file keys left out)."""
    return {key: str(data_params[key]) for key in FILE_KEYS
            if isinstance(data_params.get(key), (str, os.PathLike)) and Path(data_params[key]).is_file()}


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


def check_and_record(run_dir: Path, data_params: dict[str, Any], trained: bool) -> None:
    """Refuse (ValueError, one line) data files whose content differs from the run's record, if
    the run has ``trained`` (it has checkpoints); otherwise, or when all agree, (re)write the
    record. A record that is damaged or missing (a run from before records) is written anew."""
    record_path = run_dir / DATA_RECORD
    files = data_files(data_params)
    stored: dict[str, Any] = {}
    if trained and record_path.is_file():
        try:
            stored = json.loads(record_path.read_text())
            if not isinstance(stored, dict):
                stored = {}
        except ValueError:
            stored = {}
    current: dict[str, Any] = {}
    for key, path in files.items():
        old = stored.get(key)
        stat = Path(path).stat()
        if isinstance(old, dict) and old.get("size") == stat.st_size and old.get("mtime_ns") == stat.st_mtime_ns:
            current[key] = {**old, "path": path}  # same size and time: the hash is not read again
            continue
        current[key] = describe(path)
        if isinstance(old, dict) and old.get("hash") != current[key]["hash"]:
            change = (f"{old.get('size')} -> {stat.st_size} bytes" if old.get("size") != stat.st_size
                      else "same size, other content")
            raise ValueError(
                f"data file '{path}' changed since run '{run_dir}' was trained on it ({change}; modified "
                f"{_when(stat.st_mtime_ns)}); train it as a new run with --out NEW_DIR (or out= in fdrl.fit), "
                f"or delete '{run_dir}' to start over")
    if current != stored:
        tmp = record_path.with_name(f".{DATA_RECORD}.tmp")
        tmp.write_text(json.dumps(current, indent=1))
        tmp.replace(record_path)
