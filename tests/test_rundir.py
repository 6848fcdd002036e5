"""A run directory whose files are damaged, and two processes on one run directory.

Every file of a run may be truncated, empty, of the wrong type or from another version: each
command that reads it (sample, train --resume, train --out, evaluate, info) either falls back
with a warning (``fdrl: warning: ...``, exit code 0) or stops with one line naming the file
(``fdrl: error: ...``, exit code 2); never a traceback, and no good checkpoint is lost.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fdrl import FDRL
from fdrl.checkpoint import checkpoint_path, list_checkpoints, safe_load
from fdrl.cli import main
from fdrl.rundir import LOCK_FILE, RunDirectory, RunInUseError, RunLock

TINY = ["flow.steps=3", "flow.refine_steps=1", "train.batch_size=32", "model.params.width=16", "model.params.depth=1",
        "train.sample_every=1000", "train.sample_n=50", "train.eval_n=60", "device=cpu", "train.checkpoint_every=2",
        "train.log_every=1"]
COMMANDS = ("info", "sample", "evaluate", "resume", "out")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 4-step run on a 3-feature .npy (so it has scaler.json and a fitted prior)."""
    root = tmp_path_factory.mktemp("trained")
    np.save(root / "data.npy", np.random.default_rng(0).normal(size=(200, 3)).astype("float32"))
    assert main(["train", str(root / "data.npy"), "--out", str(root / "run"), "--quiet", "train.steps=4", *TINY]) == 0
    return root


def _argv(command: str, run: Path, data: Path) -> list[str]:
    return {"info": ["info", str(run)],
            "sample": ["sample", str(run), "--n", "10", "--quiet", "--out", str(run / "s.npy")],
            "evaluate": ["evaluate", str(run), "--n", "30", "--quiet", "--device", "cpu"],
            "resume": ["train", "--resume", str(run), "--quiet", "train.steps=6"],
            "out": ["train", str(data), "--out", str(run), "--quiet", "train.steps=6", *TINY]}[command]


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    """The CLI in-process: exit code, and stderr lines with the warnings shown as the command
    shows them (pytest records warnings instead); a traceback propagates and fails the test."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(argv)
    shown = [warnings.formatwarning(w.message, w.category, w.filename, w.lineno).strip() for w in caught
             if w.category is UserWarning]
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()] + shown


def _wrong_content(path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, path)


#: file -> damage; expected outcome per command: "ok" (exit 0, nothing said), "warn" (exit 0
#: with one `fdrl: warning:` line naming the file), "error" (exit 2, one line naming the file)
DAMAGE = {
    "config-malformed": ("config.yaml", lambda p: p.write_text("flow: [1,\n"),
                         {"info": "error", "sample": "ok", "evaluate": "warn", "resume": "warn", "out": "warn"}),
    "config-empty": ("config.yaml", lambda p: p.write_text(""),
                     {"info": "error", "sample": "ok", "evaluate": "warn", "resume": "warn", "out": "warn"}),
    "config-list": ("config.yaml", lambda p: p.write_text("- 1\n- 2\n"),
                    {"info": "error", "sample": "ok", "evaluate": "warn", "resume": "warn", "out": "warn"}),
    "config-other-version": ("config.yaml", lambda p: p.write_text(p.read_text() + "future_section: {a: 1}\n"),
                             {"info": "error", "sample": "ok", "evaluate": "warn", "resume": "warn", "out": "warn"}),
    "prior-json-truncated": ("prior.json", lambda p: p.write_text(p.read_text()[:9]),
                             {"info": "ok", "sample": "error", "evaluate": "error", "resume": "warn", "out": "warn"}),
    "prior-json-list": ("prior.json", lambda p: p.write_text("[1, 2]"),
                        {"info": "ok", "sample": "error", "evaluate": "error", "resume": "warn", "out": "warn"}),
    "prior-tensors-empty": ("prior.safetensors", lambda p: p.write_bytes(b""),
                            {"info": "ok", "sample": "error", "evaluate": "error", "resume": "warn", "out": "warn"}),
    "scaler-truncated": ("scaler.json", lambda p: p.write_text(p.read_text()[:12]),
                         {"info": "ok", "sample": "error", "evaluate": "error", "resume": "ok", "out": "ok"}),
    "checkpoint-wrong-content": ("checkpoints/ckpt_000000004.pt", _wrong_content,
                                 {c: "warn" for c in COMMANDS} | {"info": "ok"}),
    "checkpoint-a-list": ("checkpoints/ckpt_000000004.pt", lambda p: torch.save([1, 2], p),
                          {c: "warn" for c in COMMANDS} | {"info": "ok"}),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_file_is_a_warning_or_one_line_naming_it(case, trained, tmp_path, capsys):
    name, damage, expected = DAMAGE[case]
    for command in COMMANDS:
        run = tmp_path / command
        shutil.copytree(trained / "run", run)
        damage(run / name)
        code, err = _run(_argv(command, run, trained / "data.npy"), capsys)
        outcome = expected[command]
        assert code == (2 if outcome == "error" else 0), (command, err)
        if outcome == "ok":
            assert err == [], (command, err)
            continue
        kind = "error" if outcome == "error" else "warning"
        said = [line for line in err if line.startswith(f"fdrl: {kind}: ")]
        assert said and len(err) <= 2 and all(line.startswith("fdrl: ") for line in err), (command, err)
        assert Path(name).name in said[0], (command, err)
        if outcome == "error":
            assert "fdrl train --resume" in said[0] or "save the model again" in said[0], (command, err)
        if command in ("resume", "out"):  # the writer repaired the run: it now reads cleanly
            assert _run(_argv("sample", run, trained / "data.npy"), capsys) == (0, [])
            assert _run(["info", str(run)], capsys)[0] == 0


def test_damaged_newer_checkpoints_are_set_aside_so_rotation_keeps_the_good_ones(trained, tmp_path, capsys):
    """keep_checkpoints=1 with a damaged newest checkpoint: resuming from the good one must not
    rotate it away to keep the damaged file."""
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    _wrong_content(checkpoint_path(run, 6))
    code, err = _run(["train", "--resume", str(run), "--quiet", "train.steps=5", "train.keep_checkpoints=1"], capsys)
    assert code == 0 and any("ckpt_000000006.pt.damaged" in line for line in err), err
    assert [p.name for p in list_checkpoints(run)] == ["ckpt_000000005.pt"]
    assert safe_load(checkpoint_path(run, 5))["step"] == 5
    assert (run / "checkpoints" / "ckpt_000000006.pt.damaged").is_file()


def test_no_loadable_checkpoint_is_one_line(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    for path in list_checkpoints(run):
        _wrong_content(path)
    for command in ("sample", "evaluate", "resume"):
        code, err = _run(_argv(command, run, trained / "data.npy"), capsys)
        assert code == 2 and len(err) == 1 and "no checkpoint of" in err[0] and "ckpt_000000004.pt" in err[0], err


def test_a_damaged_saved_model_is_one_line_naming_the_file(trained, tmp_path, capsys):
    saved = FDRL.load(trained / "run").save(tmp_path / "model")
    for name, damage in (("fdrl.json", lambda p: p.write_text('{"objective": "lsif-chi2"')),
                         ("fdrl.json", lambda p: p.write_text("[]")),
                         ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:40]))):
        broken = tmp_path / "broken"
        shutil.rmtree(broken, ignore_errors=True)
        shutil.copytree(saved, broken)
        damage(broken / name)
        code, err = _run(["sample", str(broken), "--n", "5", "--quiet", "--out", str(tmp_path / "s.npy")], capsys)
        assert code == 2 and len(err) == 1 and name in err[0] and "save the model again" in err[0], err


def test_a_record_after_a_partial_line_starts_on_a_line_of_its_own(tmp_path):
    """A kill mid-append leaves a partial last line of metrics.jsonl; the next record is not
    glued to it, so every complete record still parses."""
    run = RunDirectory(tmp_path)
    run.log({"step": 1, "loss": 0.5})
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 2, "lo')
    run.log({"step": 3, "loss": 0.25})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(lines[0]), json.loads(lines[2])] == [{"step": 1, "loss": 0.5}, {"step": 3, "loss": 0.25}]
    assert lines[1] == '{"step": 2, "lo'


# -- two processes, one run directory ------------------------------------------------------------
def test_a_live_writer_is_named_and_a_dead_ones_lock_is_taken_over(tmp_path, recwarn):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from fdrl.rundir import RunLock; RunLock(sys.argv[1]).acquire(); print('locked', flush=True); "
        "time.sleep(60)"), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=f"being written by process {holder.pid} on {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(tmp_path)
    lock.acquire()  # the holder died without releasing: taken over, with a notice
    assert any(f"left by process {holder.pid}" in str(w.message) for w in recwarn.list)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert (tmp_path / LOCK_FILE).read_text() == ""


def test_a_lock_left_on_another_host_is_not_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "then"}))
    with pytest.raises(RunInUseError, match="process 1 on elsewhere .* delete"):
        RunLock(tmp_path).acquire()


def test_two_concurrent_trainings_on_one_out_the_second_is_refused(tmp_path):
    """Two `fdrl train --out D` at once: the second stops in one line while the first holds the
    lock; readers are not refused meanwhile; the first, stopped by SIGTERM, ends with checkpoints
    that load."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "fdrl.cli", "train", "swissroll", *TINY, "train.steps=1000000",
            "train.checkpoint_every=50", "--out", str(tmp_path / "run"), "--quiet"]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not list_checkpoints(tmp_path / "run"):  # the first holds the lock and has started training
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        second = subprocess.run(argv, env=env, capture_output=True, text=True)
        reader = subprocess.run([sys.executable, "-m", "fdrl.cli", "info", str(tmp_path / "run")], env=env,
                                capture_output=True, text=True)
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate()
    assert second.returncode == 2, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert f"is being written by process {first.pid}" in second.stderr
    assert reader.returncode == 0, reader.stderr
    assert first.returncode == 0, err
    newest = list_checkpoints(tmp_path / "run")[-1]
    assert safe_load(newest)["step"] > 0
    assert FDRL.load(tmp_path / "run").sample(5).isfinite().all()
