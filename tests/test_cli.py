"""The `fdrl` command: presets, train/sample round trip, and one-line errors with exit code 2."""

import subprocess
import sys

import numpy as np
import pytest

from fdrl.cli import main
from fdrl.config import preset_names

FAST = ["train.steps=4", "flow.steps=3", "flow.refine_steps=1", "train.batch_size=32",
        "train.checkpoint_every=2", "train.sample_every=4", "train.sample_n=50", "train.eval_n=200",
        "model.params.width=16", "model.params.depth=1"]


def _fdrl(*args):
    return subprocess.run([sys.executable, "-m", "fdrl.cli", *args], capture_output=True, text=True, timeout=300)


def test_help_and_presets_from_a_subprocess():
    assert _fdrl("--help").returncode == 0
    result = _fdrl("presets")
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert listed == preset_names() and "swissroll" in listed
    # descriptions are not cut: the vectors preset's whole leading comment is there, wrapped
    printed = " ".join(result.stdout.split())
    assert "docs/choices.md." in printed and "Gaussian mixture and the floor" in printed


def test_output_into_a_closed_pipe_is_not_a_traceback():
    """`fdrl presets | head -1`: the reader goes away before fdrl writes; no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "fdrl.cli", "presets"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the interpreter has even imported fdrl
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and "Traceback" not in err and "Error" not in err


def test_train_then_sample(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "swissroll", *FAST, "--out", str(run), "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "scored against: fresh draws" in out and "Gaussian mixture" in out and "floor" in out
    assert out.startswith("verdict:\n  - ") and "C2ST accuracy [95%]" in out
    assert (run / "metrics.json").exists()
    out = tmp_path / "s.png"
    assert main(["sample", str(run), "--n", "64", "--out", str(out), "--quiet"]) == 0
    assert out.stat().st_size > 0
    assert main(["sample", str(run), "-n", "10", "--steps", "2", "--out", str(tmp_path / "s.npy"), "--quiet"]) == 0
    assert np.load(tmp_path / "s.npy").shape == (10, 2)


def test_resume_continues_a_run(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "swissroll", *FAST, "--out", str(run), "--quiet"]) == 0
    assert main(["train", "--resume", str(run), "train.steps=6", "--quiet"]) == 0
    assert (run / "checkpoints" / "ckpt_000000006.pt").exists()


BAD = [
    (["train", "no-such-preset"], "unknown preset 'no-such-preset'"),
    (["train", "/no/such/folder"], "'/no/such/folder' does not exist; give an image folder, a data file"),
    (["train", "./missing/"], "'./missing/' does not exist"),
    (["train", "swissroll", "train.nonsense=1"], "unknown config key 'train.nonsense'"),
    (["train", "swissroll", "train.steps=abc"], "train.steps must be int"),
    (["train", "swissroll", "objective=lsif-kl"], "not a valid pairing"),
    (["train", "swissroll", "objective=foo"], "choose one of: lsif-chi2, lr-kl, lr-js, lr-logd"),
    (["train", "swissroll", "flow.eta=0"], "flow.eta must be > 0"),
    (["train", "swissroll", "flow.eta=-1"], "flow.eta must be > 0"),
    (["train", "swissroll", "flow.steps=0"], "flow.steps must be > 0"),
    (["train", "swissroll", "train.batch_size=0"], "train.batch_size must be > 0"),
    (["train", "swissroll", "data.name=moons"], "unknown dataset 'moons'"),
    (["train", "swissroll", "model.params.widht=3"], "unknown config key 'model.params.widht' for model 'mlp'"),
    (["train", "swissroll", "notakeyvalue"], "must look like key=value"),
    (["sample", "/no/such/run"], "does not exist"),
    (["train", "--resume", "/no/such/run"], "does not exist"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_code_2(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("fdrl: error: "), err
    assert len(err.strip().splitlines()) == 1, err


def test_bad_input_from_a_real_process_has_no_traceback():
    result = _fdrl("train", "swissroll", "flow.eta=0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["fdrl: error: flow.eta must be > 0, got 0.0"]


def test_run_directory_without_checkpoint(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("objective: lsif-chi2\n")
    assert main(["sample", str(tmp_path)]) == 2
    assert "has no checkpoint" in capsys.readouterr().err


def test_changed_config_in_an_existing_run_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "swissroll", *FAST, "--out", str(run), "--quiet"]) == 0
    assert main(["train", "swissroll", *FAST, "flow.eta=0.5", "--out", str(run), "--quiet"]) == 2
    assert "flow.eta" in capsys.readouterr().err


def test_a_preset_name_wins_over_a_same_named_folder(tmp_path, monkeypatch):
    """`fdrl train swissroll` in a folder that holds a run directory called swissroll."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "swissroll").mkdir()
    from fdrl.config import load_config

    assert load_config("swissroll").data.name == "swissroll"
