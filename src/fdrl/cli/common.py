"""What every command module shares: the one-line usage error and argument types."""

from __future__ import annotations

import argparse
from pathlib import Path


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


def ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
