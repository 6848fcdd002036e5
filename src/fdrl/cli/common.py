"""What every command module shares: the one-line usage error and argument types."""

from __future__ import annotations

import argparse
from pathlib import Path

from fdrl.config import MAX_SEED
from fdrl.outputs import check_writable


class UsageError(ValueError):
    """A command-line mistake; reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is a UsageError (one line, exit 2) rather than a usage dump."""

    def error(self, message: str):
        raise UsageError(f"{message} (see: {self.prog} --help)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def run_dir(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"run directory '{text}' does not exist")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"'{text}' is a file, not a run directory")
    return path


def floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def seed(text: str) -> int:
    """A random seed: an integer in 0..2**32 - 1 (what NumPy and scikit-learn accept)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed (an integer in 0..{MAX_SEED}), got '{text}'") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be in 0..{MAX_SEED}, got {value}")
    return value


def seeds(text: str) -> list[int]:
    """Comma-separated seeds."""
    return [seed(v) for v in text.split(",") if v]


def _writable(text: str, folder: bool) -> Path:
    try:
        check_writable(Path(text), folder)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return Path(text)


def out_dir(text: str) -> Path:
    """A folder the command writes into: not a file, not under one, and writable (checked
    before any work)."""
    return _writable(text, folder=True)


def out_file(text: str) -> Path:
    """A file the command writes: not a directory, not under a file, in a writable folder."""
    return _writable(text, folder=False)
