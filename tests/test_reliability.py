"""Nothing is lost when a long run is killed, preempted, fills the disk or diverges.

Checkpoints (last N + best, disk full, unsafe and truncated files), resume after SIGKILL and
SIGTERM, a second SIGINT, the divergence guard, and the bad-input table: every user mistake is
one line ``fdrl: error: ...`` with exit code 2.
"""

import errno
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import fdrl.train
from fdrl import FDRL, Trainer, load_config
from fdrl.checkpoint import BEST_NAME, CheckpointError, checkpoint_path, list_checkpoints, safe_load
from fdrl.cli import main
from fdrl.config import ConfigError
from fdrl.objectives import Objective
from fdrl.train import TrainingError

TINY = ["flow.steps=3", "flow.refine_steps=1", "train.batch_size=32", "model.params.width=16",
        "model.params.depth=1", "train.log_every=1", "train.sample_every=1000", "train.sample_n=50",
        "train.eval_n=200", "train.ema=0.9", "device=cpu"]


def _trainer(run: Path, *overrides: str) -> Trainer:
    return Trainer(load_config("swissroll", [*TINY, *overrides]), run, progress=False)


def _events(run: Path, name: str | None = None) -> list[dict]:
    """Records of metrics.jsonl (those with ``event == name`` if given)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if name is None or r.get("event") == name]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _one_line_error(argv: list[str], capsys) -> str:
    """Run the CLI in-process; assert exit code 2 and exactly one stderr line; return it."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fdrl: error: "), lines
    return lines[0]


# -- checkpoints -------------------------------------------------------------------------------
def test_best_checkpoint_is_kept_beside_the_last_n_and_survives_resume(tmp_path):
    """eval_every logs the energy distance (the default train.eval_metric); best.pt is the checkpoint with the lowest one, kept
    even after rotation; evaluation does not disturb an interrupted run's bit-exact resume."""
    common = ["train.eval_every=4", "train.checkpoint_every=4", "train.keep_checkpoints=2", "train.lr=3e-3"]
    full = _trainer(tmp_path / "full", *common, "train.steps=24")
    full.fit()
    part = _trainer(tmp_path / "part", *common, "train.steps=12")
    part.fit()
    resumed = _trainer(tmp_path / "part", *common, "train.steps=24")
    resumed.fit()
    for trainer in (full, resumed):
        run = trainer.run_dir
        evals = [r for r in _events(run) if r.get("eval") == "energy"]
        best = min(evals, key=lambda r: r["value"])
        assert [r["step"] for r in evals] == [4, 8, 12, 16, 20, 24]
        state = safe_load(run / "checkpoints" / BEST_NAME)
        assert state["step"] == best["step"] and state["best"] == {"step": best["step"], "metric": "energy",
                                                                  "value": best["value"]}
        assert len(list_checkpoints(run)) == 2
        assert checkpoint_path(run, best["step"]) not in list_checkpoints(run)  # rotated away, kept as best.pt
        assert FDRL.load(run, checkpoint=run / "checkpoints" / BEST_NAME).sample(10).shape == (10, 2)
    assert full.best == resumed.best
    assert _same_weights(full.net.state_dict(), resumed.net.state_dict())


def test_periodic_evaluation_of_images_keeps_the_best_by_classifier_fd(tmp_path):
    """Image runs evaluate too: train.eval_metric=classifier_fd scores eval_n EMA samples in a
    digit classifier's features; best.pt is the checkpoint with the lowest distance."""
    from fdrl_studies.classifier_training import train_classifier

    train_classifier("digits", tmp_path / "clf", epochs=1)
    overrides = ["flow.steps=3", "flow.refine_steps=1", "train.batch_size=32", "model.params.width=32",
                 "model.params.depth=1", "train.steps=6", "train.eval_every=2", "train.eval_n=100",
                 "train.eval_metric=classifier_fd", f"train.eval_classifier={tmp_path / 'clf'}",
                 "train.checkpoint_every=100", "train.sample_every=1000", "train.sample_n=16", "device=cpu"]
    trainer = Trainer(load_config("digits", overrides), tmp_path / "run", progress=False)
    trainer.fit()
    evals = [r for r in _events(trainer.run_dir) if r.get("eval") == "classifier_fd"]
    assert [r["step"] for r in evals] == [2, 4, 6] and all(r["value"] > 0 for r in evals)
    best = min(evals, key=lambda r: r["value"])
    assert safe_load(trainer.run_dir / "checkpoints" / BEST_NAME)["step"] == best["step"]


def test_classifier_fd_evaluation_without_a_classifier_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="train.eval_classifier"):
        load_config("digits", ["train.eval_every=10", "train.eval_metric=classifier_fd"])
    with pytest.raises(ConfigError, match="train.eval_metric must be one of"):
        load_config("digits", ["train.eval_metric=inception"])
    # what only the data can tell fails when the trainer is built, before any step is lost
    with pytest.raises(ConfigError, match="train.eval_metric=classifier_fd: .*no_such_classifier"):
        _trainer(tmp_path / "a", "train.eval_every=2", "train.eval_metric=classifier_fd",
                 f"train.eval_classifier={tmp_path / 'no_such_classifier'}")
    with pytest.raises(ConfigError, match="train.eval_metric=fid: FID needs image data"):
        _trainer(tmp_path / "b", "train.eval_every=2", "train.eval_metric=fid")


def test_disk_full_while_writing_a_checkpoint_is_one_line_and_keeps_the_previous_ones(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["train", "swissroll", *TINY, "train.steps=6", "train.checkpoint_every=2", "--out", str(run),
                 "--quiet"]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}

    def disk_full(obj, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    line = _one_line_error(["train", "--resume", str(run), "train.steps=10", "--quiet"], capsys)
    assert "could not write checkpoint" in line and "ckpt_000000008.pt" in line
    assert "No space left on device" in line
    after = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    assert after == before  # nothing new, nothing partial, nothing lost


def _write_marker(path: str) -> None:
    Path(path).write_text("the pickle ran code")


class _Payload:
    """Unpickling this calls _write_marker: what a tampered checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return _write_marker, (self.marker,)


def test_a_checkpoint_that_would_run_code_is_refused_and_never_run(tmp_path, recwarn, capsys):
    run, marker, payload = tmp_path / "run", tmp_path / "marker", tmp_path / "payload.pt"
    torch.save({"step": 6, "estimator": _Payload(marker)}, payload)
    _trainer(run, "train.steps=4", "train.checkpoint_every=2").fit()
    evil = checkpoint_path(run, 6)
    shutil.copy(payload, evil)

    with pytest.raises(CheckpointError, match="ckpt_000000006.pt"):
        safe_load(evil)
    with pytest.raises(CheckpointError, match="ckpt_000000006.pt"):
        FDRL.load(run, checkpoint=evil)
    FDRL.load(run)  # falls back to the newest good checkpoint, with a warning naming the bad one
    resumed = _trainer(run, "train.steps=6", "train.checkpoint_every=2")
    resumed.fit()
    assert resumed.step == 6 and _events(run, "resumed")[-1]["checkpoint"] == "ckpt_000000004.pt"
    assert any("ckpt_000000006.pt" in str(w.message) for w in recwarn)

    only_evil = tmp_path / "only"  # the same run, with the payload as its only checkpoint
    shutil.copytree(run, only_evil, ignore=shutil.ignore_patterns("ckpt_*"))
    shutil.copy(payload, checkpoint_path(only_evil, 2))
    line = _one_line_error(["train", "--resume", str(only_evil), "--quiet"], capsys)
    assert "ckpt_000000002.pt" in line and "unsafe" in line

    assert not marker.exists()
    torch.load(payload, weights_only=False)  # the payload is real: a plain pickle load runs it
    assert marker.exists()


def test_a_truncated_checkpoint_falls_back_to_the_previous_good_one(tmp_path, recwarn):
    full = _trainer(tmp_path / "full", "train.steps=12", "train.checkpoint_every=4")
    full.fit()
    _trainer(tmp_path / "part", "train.steps=8", "train.checkpoint_every=4").fit()
    newest = checkpoint_path(tmp_path / "part", 8)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="ckpt_000000008.pt"):
        safe_load(newest)
    resumed = _trainer(tmp_path / "part", "train.steps=12", "train.checkpoint_every=4")
    resumed.fit()
    assert _events(tmp_path / "part", "resumed")[-1]["checkpoint"] == "ckpt_000000004.pt"
    assert any("ckpt_000000008.pt" in str(w.message) for w in recwarn)
    assert _same_weights(full.net.state_dict(), resumed.net.state_dict())


# -- kill, preempt, interrupt --------------------------------------------------------------------
KILL_RUN = [*TINY, "train.steps=150", "train.checkpoint_every=4", "train.seed=7"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """Estimator and EMA weights of the KILL_RUN trained without interruption."""
    trainer = Trainer(load_config("swissroll", KILL_RUN), tmp_path_factory.mktemp("uninterrupted"), progress=False)
    trainer.fit()
    return {"estimator": trainer.net.state_dict(), "ema": trainer.ema.state_dict()}


def _start(run: Path) -> subprocess.Popen:
    """``fdrl train swissroll KILL_RUN --out run`` as a process with one thread (like the tests)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fdrl.cli", "train", "swissroll", *KILL_RUN, "--out", str(run),
                             "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(run: Path, proc: subprocess.Popen, step: int, timeout: float = 120.0) -> int:
    """Poll metrics.jsonl until ``proc`` logged a training step >= ``step``; that step."""
    log = run / "metrics.jsonl"
    offset = log.stat().st_size if log.exists() else 0  # only what this process writes counts
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if log.exists():
            with open(log) as handle:
                handle.seek(offset)
                complete = handle.read().split("\n")[:-1]
            steps = [json.loads(line)["step"] for line in complete if '"loss"' in line]
            if steps and steps[-1] >= step:
                return steps[-1]
        time.sleep(0.002)
    raise AssertionError(f"no step {step} in {log} after {timeout} s")


def _assert_finished_like(run: Path, uninterrupted: dict) -> None:
    final = safe_load(checkpoint_path(run, 150))
    assert _same_weights(final["estimator"], uninterrupted["estimator"])
    assert _same_weights(final["ema"], uninterrupted["ema"])


@pytest.mark.slow
def test_sigkill_at_three_random_steps_then_resume_matches_an_uninterrupted_run(tmp_path, uninterrupted):
    rng = random.Random(1234)
    targets = [rng.randrange(10, 45), rng.randrange(55, 90), rng.randrange(100, 135)]
    run = tmp_path / "run"
    for target in targets:
        proc = _start(run)
        _wait_for_step(run, proc, target)
        proc.kill()
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
    assert len(_events(run, "resumed")) == 2
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    _assert_finished_like(run, uninterrupted)


def test_sigterm_stops_with_a_checkpoint_and_how_to_resume(tmp_path, uninterrupted):
    run = tmp_path / "run"
    proc = _start(run)
    _wait_for_step(run, proc, 30)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"resume with: fdrl train --resume {run}" in out
    stopped = _events(run, "stopped")[-1]
    assert 30 <= stopped["step"] < 150 and (run / "checkpoints" / stopped["checkpoint"]).exists()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    _assert_finished_like(run, uninterrupted)


def test_a_second_sigint_aborts_at_once(tmp_path, monkeypatch):
    """The first SIGINT asks for a stop after the step; a second one, within it, aborts."""
    real_step = fdrl.train.training_step

    def interrupted_twice(net, *args, **kwargs):
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(net, *args, **kwargs)

    monkeypatch.setattr(fdrl.train, "training_step", interrupted_twice)
    trainer = _trainer(tmp_path / "run", "train.steps=10", "train.checkpoint_every=2")
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert trainer.step == 3 and not _events(tmp_path / "run", "stopped")
    assert signal.getsignal(signal.SIGINT) is handler  # restored


# -- divergence guard ----------------------------------------------------------------------------
def _nan_loss_at(monkeypatch, calls: set[int]) -> None:
    """Objective.loss returns NaN on the given (0-based) calls: NaN gradients, NaN weights."""
    real_loss, count = Objective.loss, [0]

    def loss(self, out_data, out_particles):
        value = real_loss(self, out_data, out_particles)
        count[0] += 1
        return value * math.nan if count[0] - 1 in calls else value

    monkeypatch.setattr(Objective, "loss", loss)


GUARDED = ["train.steps=12", "train.checkpoint_every=5", "train.lr=2e-3"]


def test_a_nan_loss_rolls_back_lowers_the_lr_and_training_finishes(tmp_path, monkeypatch):
    _nan_loss_at(monkeypatch, {7})  # step 7: rolled back to the checkpoint of step 5
    trainer = _trainer(tmp_path / "run", *GUARDED)
    trainer.fit()
    (rollback,) = _events(tmp_path / "run", "rollback")
    assert rollback == {"event": "rollback", "step": 7, "problem": "the loss is nan", "to_step": 5,
                        "checkpoint": "ckpt_000000005.pt", "lr_scale": 0.5, "rollbacks": 1}
    assert trainer.step == 12 and all(torch.isfinite(p).all() for p in trainer.net.parameters())
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 * 0.5)
    final = safe_load(checkpoint_path(tmp_path / "run", 12))
    assert final["guard"] == {"lr_scale": 0.5, "rollbacks": 1}


def test_the_rolled_back_lr_survives_resume_bit_exactly(tmp_path, monkeypatch):
    _nan_loss_at(monkeypatch, {7})
    straight = _trainer(tmp_path / "straight", *GUARDED)
    straight.fit()
    _nan_loss_at(monkeypatch, {7})
    _trainer(tmp_path / "split", *GUARDED, "train.steps=8").fit()
    monkeypatch.undo()
    resumed = _trainer(tmp_path / "split", *GUARDED)
    resumed.fit()
    assert resumed.guard.state_dict() == straight.guard.state_dict() == {"lr_scale": 0.5, "rollbacks": 1}
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    assert _same_weights(straight.net.state_dict(), resumed.net.state_dict())
    assert _same_weights(straight.ema.state_dict(), resumed.ema.state_dict())


def test_a_non_finite_gradient_with_a_finite_loss_rolls_back(tmp_path):
    trainer = _trainer(tmp_path / "run", "train.steps=6", "train.checkpoint_every=2")
    calls = [0]

    def poison_once(grad):
        calls[0] += 1
        return grad * math.inf if calls[0] == 4 else grad

    next(trainer.net.parameters()).register_hook(poison_once)
    trainer.fit()
    (rollback,) = _events(tmp_path / "run", "rollback")
    assert rollback["problem"] == "a gradient is not finite" and rollback["step"] == 3 and rollback["to_step"] == 2
    assert trainer.step == 6 and all(torch.isfinite(p).all() for p in trainer.net.parameters())


def test_a_ratio_past_the_bound_triggers_the_guard(tmp_path):
    trainer = _trainer(tmp_path / "run", "train.steps=4", "train.guard_max_ratio=1e-6", "train.guard_retries=1")
    with pytest.raises(TrainingError, match=r"guard_max_ratio=1e-06 at step 0, after 1 rollback"):
        trainer.fit()
    assert [r["event"] for r in _events(tmp_path / "run", None) if "event" in r] == ["flow_plan", "rollback", "diverged"]


def test_divergence_after_the_retries_is_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys):
    _nan_loss_at(monkeypatch, set(range(100)))
    run = tmp_path / "run"
    line = _one_line_error(["train", "swissroll", *TINY, "train.steps=6", "train.guard_retries=2",
                            "--out", str(run), "--quiet"], capsys)
    assert line.startswith("fdrl: error: the loss is nan at step 0, after 2 rollback(s)")
    assert "train.guard_retries" in line and f"fdrl sample {run}" in line
    assert [r["event"] for r in _events(run) if "event" in r] == ["flow_plan", "rollback", "rollback", "diverged"]


# -- bad input: one line, exit code 2 (the other rows are in test_cli.py) -------------------------
def test_bad_input_non_positive_train_steps(capsys):
    assert "train.steps must be > 0" in _one_line_error(["train", "swissroll", "train.steps=0"], capsys)


def test_bad_input_non_finite_number(capsys):
    line = _one_line_error(["train", "swissroll", "train.lr=.nan"], capsys)
    assert "train.lr must be a finite number" in line


def test_bad_input_inf_in_vector_data_and_nan_is_a_missing_cell(tmp_path, capsys):
    data = np.random.default_rng(0).normal(size=(20, 2))
    data[3, 1] = np.inf
    np.save(tmp_path / "bad.npy", data)
    line = _one_line_error(["train", "swissroll", "data.name=array", f"data.params.path={tmp_path / 'bad.npy'}",
                            "--out", str(tmp_path / "run")], capsys)
    assert "row 3: column '1' holds inf" in line
    assert not (tmp_path / "run").exists()
    data[3, 1] = np.nan  # a missing cell: modelled (data.params.missing), said in a warning
    np.save(tmp_path / "gap.npy", data)
    with pytest.warns(UserWarning, match="1 missing cell"):
        from fdrl.data.source import ArrayData

        assert ArrayData.from_file(tmp_path / "gap.npy", test_fraction=0).codec.columns[1].missing


def test_bad_input_unwritable_run_directory(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    line = _one_line_error(["train", "swissroll", "--out", str(tmp_path / "file" / "sub")], capsys)
    assert "is not writable" in line and "pass another --out" in line


def test_bad_input_checkpoint_from_another_run(tmp_path, capsys):
    """A checkpoint copied in from a run with another config is refused, not silently loaded."""
    for name, objective in (("mine", "lsif-chi2"), ("other", "lr-kl")):
        assert main(["train", "swissroll", *TINY, "train.steps=2", "train.checkpoint_every=2",
                     f"objective={objective}", "--out", str(tmp_path / name), "--quiet"]) == 0
    shutil.copy(checkpoint_path(tmp_path / "other", 2), checkpoint_path(tmp_path / "mine", 4))
    capsys.readouterr()
    line = _one_line_error(["train", "--resume", str(tmp_path / "mine"), "train.steps=6", "--quiet"], capsys)
    assert "ckpt_000000004.pt belongs to a run with objective='lr-kl', not 'lsif-chi2'" in line
