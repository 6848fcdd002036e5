"""Faults a long run meets: the disk filling during a checkpoint write (the previous checkpoint
survives, the error is one line), a sample file killed mid-write (never a half file under the
requested name, in any format), a run too small for the C2ST (the report says so instead of
failing), image folders with unreadable, over-large, oddly named, linked or very many files,
reading a run while it trains, and a fit killed with SIGKILL then resumed."""

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

        codec = SimpleNamespace(kinds={"a": "continuous", "b": "continuous"}, columns=[], header=True,
                                csv_sep=",", decimal=".")
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


# -- image folders ------------------------------------------------------------------------------

def _png(path: Path, seed: int, side: int = 12) -> np.ndarray:
    """A random RGB PNG at ``path``; its pixels."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def _bomb_png(path: Path, side: int) -> None:
    """A valid ``side`` x ``side`` 1-bit PNG of zeros, written a row block at a time (a 30000 x
    30000 one is 110 kB on disk and 900 MB once PIL decodes it)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, rows = zlib.compressobj(9), bytes(1 + (side + 7) // 8) * 1000
    data = b"".join(packer.compress(rows) for _ in range(side // 1000)) + packer.compress(rows[: (side % 1000) * len(rows) // 1000]) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def _folder(root: Path, **params):
    from fdrl.data.images import build_image_data

    return build_image_data("folder", root=str(root), image_size=8, test_fraction=0, workers=1, **params)


def _skip_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "skipping" in str(w.message)]


def test_a_skipped_image_is_warned_once_per_process_however_often_the_folder_is_read(tmp_path):
    """A run builds its folder more than once (the training and held-out splits, a resume in the
    same process): the skip is said once even where every warning is shown."""
    import warnings

    from fdrl.components import FolderSpec
    from fdrl.data.images import build_held_out_images

    for i in range(6):
        _png(tmp_path / f"{i}.png", i)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _folder(tmp_path)
        build_held_out_images(FolderSpec(root=str(tmp_path), image_size=8, workers=1))
        _folder(tmp_path)
    assert _skip_warnings(record) == [
        f"data 'folder': skipping 1 unreadable image file(s), e.g. {tmp_path / 'broken.png'}"]


def test_an_image_folder_with_a_link_loop_lists_each_file_once(tmp_path):
    """A link to a parent folder and a second link to a subfolder: the scan ends, every image is
    listed once under its real path, and a linked-in folder's images are read."""
    _png(tmp_path / "a.png", 0)
    _png(tmp_path / "sub" / "b.png", 1)
    _png(tmp_path / "elsewhere" / "c.png", 2)
    (tmp_path / "sub" / "up").symlink_to("..")
    (tmp_path / "side").symlink_to("sub")
    (tmp_path / "sub" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "missing.png")
    data = _folder(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in data.paths] == ["a.png", "elsewhere/c.png", "sub/b.png"]
    assert data.images(range(3)).shape == (3, 3, 8, 8)


@pytest.mark.parametrize("side", [30_000, 10_000])
def test_a_decompression_bomb_png_is_skipped_as_unreadable(tmp_path, side):
    """A 30000 x 30000 1-bit PNG (PIL refuses it) and a 10000 x 10000 one (PIL only warns, then
    would decode 300 MB of RGB): each is counted with the unreadable files in the one warning,
    never decoded, and with ``check_files`` off a batch skips it the same way."""
    import warnings

    for i in range(4):
        _png(tmp_path / f"{i}.png", i)
    _bomb_png(tmp_path / "bomb.png", side)
    assert (tmp_path / "bomb.png").stat().st_size < 2_000_000
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data = _folder(tmp_path)
    assert len(data) == 4
    assert [str(w.message) for w in record] == [
        f"data 'folder': skipping 1 unreadable image file(s), e.g. {tmp_path / 'bomb.png'}"]
    unchecked = _folder(tmp_path, check_files=False)
    bomb = [p.name for p in unchecked.paths].index("bomb.png")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        images = unchecked.images([bomb])
    assert unchecked.unreadable == {bomb}
    assert images.shape == (1, 3, 8, 8)
    assert any("bomb.png" in m and "decompression" in m for m in _skip_warnings(record))


def test_unicode_and_newline_file_names_are_read_like_others(tmp_path):
    """Names with accents, CJK, an emoji, a newline and bytes that are not UTF-8 are listed,
    decoded to their own pixels and fingerprinted; a skip warning naming one stays one line."""
    import warnings

    names = ["café.png", "猫.png", "🐈.png", "two\nlines.png", os.fsdecode(b"latin1-\xe9.png"), "plain.png"]
    pixels = {name: _png(tmp_path / name, i, side=8) for i, name in enumerate(names)}
    (tmp_path / "bad\nname.png").write_bytes(b"not a png")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data = _folder(tmp_path)
    assert sorted(p.name for p in data.paths) == sorted(names)
    for i, path in enumerate(data.paths):
        expected = torch.from_numpy(pixels[path.name]).permute(2, 0, 1)
        assert torch.equal(data.load([i])[0], expected), path.name
    assert len(data.fingerprint()["files_sha1"]) == 40
    (message,) = _skip_warnings(record)
    assert "\n" not in message and "bad\\nname.png" in message


def test_thousands_of_tiny_files_in_nested_folders_are_each_listed_once(tmp_path):
    """2,000 tiny PNGs in 20 folders (docs/reliability.md times 50,000): all listed, sorted, once."""
    from PIL import Image

    buffer = __import__("io").BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, "PNG")
    for i in range(2000):
        path = tmp_path / f"d{i % 20:02d}" / f"{i:04d}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(buffer.getvalue())
    data = _folder(tmp_path)
    assert len(data) == 2000 and data.paths == sorted(set(data.paths))


# -- reading a run while it trains --------------------------------------------------------------

def _state(step: int) -> dict:
    """A checkpoint of ``step`` whose tensors all hold ``step`` (a mixed one would show)."""
    weights = {"w": torch.full((500_000,), float(step)), "b": torch.full((7,), float(step))}
    return {"step": step, "estimator": weights, "ema": weights, "optimizer": {}, "scheduler": {}, "rng": {},
            "config": {}, "estimator_spec": {}, "version": "test"}


def test_reading_a_run_while_its_checkpoints_are_replaced_sees_whole_ones(tmp_path):
    """A writer saves 60 checkpoints as training does (new file, keep the newest 2, point
    best.pt at it) while a reader loads the newest and best.pt in a loop, as `fdrl sample`,
    `fdrl info` and `fdrl evaluate` do: every read is a whole checkpoint of one step, no read
    fails and none warns."""
    import threading
    import warnings

    run = tmp_path / "run"
    checkpoint.atomic_save(_state(0), checkpoint.checkpoint_path(run, 0))
    checkpoint.link_best(checkpoint.checkpoint_path(run, 0))
    done, problems, steps_read = threading.Event(), [], []

    def read() -> None:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            while not done.is_set():
                try:
                    state, _ = checkpoint.load_latest(run)
                    best = checkpoint.safe_load(run / checkpoint.CHECKPOINT_DIR / checkpoint.BEST_NAME)
                except Exception as err:  # noqa: BLE001 - any failure of a read is the finding
                    problems.append(repr(err))
                    continue
                for s in (state, best):
                    values = {float(t.unique()) for w in (s["estimator"], s["ema"]) for t in w.values()}
                    if values != {float(s["step"])}:
                        problems.append(f"step {s['step']} holds {values}")
                    steps_read.append(s["step"])
        problems.extend(str(w.message) for w in record)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for step in range(1, 61):
            path = checkpoint.checkpoint_path(run, step)
            checkpoint.atomic_save(_state(step), path)
            checkpoint.prune(run, keep=2)
            checkpoint.link_best(path)
    finally:
        done.set()
        reader.join()
    assert problems == []
    assert len(set(steps_read)) > 1  # the reads overlapped the writes


KILLED_FIT = """
import sys
import numpy as np
import fdrl
x = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
fdrl.fit(x, out=sys.argv[1], progress=False, train__steps=600, train__checkpoint_every=20, flow__steps=2,
         train__eval_n=50, model__params__width=8)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_fit_killed_after_its_first_checkpoint_is_finished_by_train_resume(tmp_path):
    """`fdrl.fit(..., out=DIR)` killed with SIGKILL once a checkpoint exists (no cleanup runs):
    `fdrl train --resume DIR` continues from that checkpoint and finishes the run."""
    import signal
    import time

    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", KILLED_FIT, str(run)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not checkpoint.list_checkpoints(run) and child.poll() is None:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    first = checkpoint.list_checkpoints(run)[-1]
    assert checkpoint.safe_load(first)["step"] < 600
    done = subprocess.run([sys.executable, "-m", "fdrl.cli", "train", "--resume", str(run)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "took over the lock of run directory" in done.stderr  # the killed fit left its lock
    assert checkpoint.safe_load(checkpoint.list_checkpoints(run)[-1])["step"] == 600
    assert (run / "metrics.json").is_file()
