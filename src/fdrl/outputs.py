"""Checking where a command will write, before it does any work (no torch here)."""

from __future__ import annotations

import os
from pathlib import Path


def check_writable(out: Path, folder: bool) -> None:
    """Raise ValueError (one line, naming the fix) if ``out`` cannot be written: a folder
    (``folder``) that is an existing file, a file that is an existing directory, or a path
    under a regular file or in a folder without write permission."""
    if folder and out.exists() and not out.is_dir():
        raise ValueError(f"'{out}' is a file; name a folder")
    if not folder and out.is_dir():
        raise ValueError(f"'{out}' is a directory; name a file")
    existing = out if folder and out.is_dir() else out.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"'{out}' lies under '{existing}', which is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"'{out}': the folder '{existing}' is not writable; choose another place")
