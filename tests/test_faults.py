"""Faults a long run meets: the disk filling during a checkpoint write (the previous checkpoint
survives, the error is one line), a sample file killed mid-write (never a half file under the
requested name, in any format), and a run too small for the C2ST (the report says so instead of
failing)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fdrl import checkpoint, sample_files
from fdrl.cli.train import heldout_summary
from fdrl.evaluate.heldout import heldout_report

SRC = str(Path(checkpoint.__file__).parents[1])

FULL_DISK = """
import resource, signal, sys, torch
from pathlib import Path
from fdrl.checkpoint import CheckpointError, atomic_save
path = Path(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
try:
    atomic_save({"weights": torch.zeros(1_000_000)}, path)
except CheckpointError as err:
    print(err)
    sys.exit(3)
"""


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="RLIMIT_FSIZE")
def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    """A file-size limit (what a full disk does to a write) while a 4 MB checkpoint is written:
    the previous checkpoint under that name is intact, no temporary file is left, and the error
    is one line saying why (torch alone reports an unexplained 'enforce fail')."""
    path = tmp_path / "checkpoints" / "ckpt_000000010.pt"
    checkpoint.atomic_save({"weights": torch.ones(10)}, path)
    before = path.read_bytes()
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": SRC}, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stdout.strip() == f"could not write checkpoint {path}: File too large"
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def _half_write_then_fail(target_arg: int = 0):
    """A writer that puts a few bytes under the path it was given, then fails as a full disk does."""

    def write(*args, **kwargs):
        target = args[target_arg]
        if hasattr(target, "write"):
            target.write("half")
        else:
            Path(target).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    return write


def _fail_csv_rows(monkeypatch):
    class Writer:
        def __init__(self, handle):
            self.handle = handle

        def writerow(self, row):
            self.handle.write("header\n")

        def writerows(self, rows):
            _half_write_then_fail()(self.handle)

    monkeypatch.setattr(sample_files.csv, "writer", lambda handle: Writer(handle))


def _broken(monkeypatch, suffix):
    """Make the writer of ``suffix`` fail halfway."""
    if suffix == ".npy":
        monkeypatch.setattr(np, "save", _half_write_then_fail())
    elif suffix == ".pt":
        monkeypatch.setattr(torch, "save", _half_write_then_fail(1))
    elif suffix == ".safetensors":
        import safetensors.torch

        monkeypatch.setattr(safetensors.torch, "save_file", _half_write_then_fail(1))
    elif suffix == ".png":
        import fdrl.plots

        monkeypatch.setattr(fdrl.plots, "save_samples_figure", _half_write_then_fail(1))
    elif suffix == ".csv":
        _fail_csv_rows(monkeypatch)
    else:  # a table's CSV
        monkeypatch.setattr(pd.DataFrame, "to_csv", _half_write_then_fail(1))


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".safetensors", ".png", ".csv", "table.csv"])
def test_a_sample_write_that_fails_midway_leaves_no_half_file(tmp_path, monkeypatch, suffix):
    """Every format goes through a temporary file: a writer failing halfway (a kill, a full disk)
    leaves the file that was under the requested name as it was, and nothing else behind."""
    out = tmp_path / ("samples.csv" if suffix == "table.csv" else f"samples{suffix}")
    out.write_bytes(b"previous samples")
    codec = None
    if suffix == "table.csv":
        from types import SimpleNamespace

        codec = SimpleNamespace(kinds={"a": "continuous", "b": "continuous"}, columns=[], header=True)
    _broken(monkeypatch, suffix)
    with pytest.raises(OSError, match="No space left"):
        sample_files.write_samples(torch.randn(6, 2), out, codec=codec)
    assert out.read_bytes() == b"previous samples"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".safetensors", ".csv"])
def test_a_sample_write_that_succeeds_is_whole_under_its_name(tmp_path, suffix):
    out = tmp_path / f"samples{suffix}"
    samples = torch.randn(6, 2)
    sample_files.write_samples(samples, out)
    torch.testing.assert_close(sample_files.read_samples(out), samples, rtol=0, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_a_run_too_small_for_the_c2st_is_reported_not_failed():
    """3 rows scored against 3 (a 3-row file with data.test_fraction=0): the report has every
    energy distance, NaN C2ST accuracies and a note saying why, and the summary prints the note."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 2, generator=g)
    report = heldout_report(torch.randn(3, 2, generator=g), rows, rows, torch.randn(3, 2, generator=g))
    assert np.isfinite(report["energy_distance"])
    assert np.isnan(report["c2st_accuracy"]) and np.isnan(report["floor"]["c2st_accuracy"])
    assert "the C2ST needs 5 in each set" in report["notes"][0]
    report.update(reference="training data", units="model")
    assert "note: only 3 rows to score" in heldout_summary(report)
