"""Degenerate data, impossible sizes, bad output paths, numbers and names: each is refused up
front in one line (``fdrl: error: ...``, exit code 2), or, for one-feature data, works."""

import json
from pathlib import Path

import numpy as np
import pytest

import fdrl
from fdrl.cli import main
from fdrl.config import ConfigError, load_config
from fdrl.model import resolve_device

TINY = ["flow.steps=3", "flow.refine_steps=1", "train.batch_size=32", "model.params.width=16", "model.params.depth=1",
        "train.sample_every=2", "train.sample_n=50", "train.eval_n=60", "device=cpu", "train.steps=2"]


def _one_line_error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fdrl: error: "), lines
    return lines[0]


# -- degenerate data -----------------------------------------------------------------------------
def test_one_feature_trains_and_its_figures_are_histograms(tmp_path, capsys):
    from PIL import Image

    np.save(tmp_path / "one.npy", np.random.default_rng(0).normal(size=(150, 1)).astype("float32"))
    assert main(["train", str(tmp_path / "one.npy"), "--out", str(tmp_path / "run"), "--quiet", *TINY]) == 0
    assert Image.open(tmp_path / "run" / "samples" / "step_0000002.png").size[0] > 0
    assert main(["sample", str(tmp_path / "run"), "--n", "40", "--quiet", "--out", str(tmp_path / "s.png")]) == 0
    assert "histogram of 40 samples" in capsys.readouterr().out


def test_zero_features_is_refused(tmp_path, capsys):
    np.save(tmp_path / "zero.npy", np.zeros((20, 0), dtype="float32"))
    assert "needs at least one row and one column" in _one_line_error(["train", str(tmp_path / "zero.npy")], capsys)
    with pytest.raises(ValueError, match="one column|no features|0 features"):
        fdrl.fit(np.zeros((20, 0), dtype="float32"), out=tmp_path / "fit", progress=False)


@pytest.mark.parametrize("override, why", [
    ("train.batch_size=10000000000", "would not fit in memory"),
    ("train.sample_n=100000000000", "would not fit in memory"),
    ("flow.steps=1000000000", "flow steps"),
    ("train.keep_checkpoints=1000000", "fill the disk"),
])
def test_sizes_that_cannot_fit_are_refused_before_any_work(override, why, tmp_path, capsys):
    line = _one_line_error(["train", "swissroll", override, "--out", str(tmp_path / "run")], capsys)
    assert override.split("=")[0] in line and why in line
    assert not (tmp_path / "run").exists()


# -- paths -----------------------------------------------------------------------------------------
@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "file"
    path.write_text("a regular file")
    return path


@pytest.mark.parametrize("argv", [
    ["translate", "RUN", "--input", "x", "--out", "{file}/sub"],
    ["refine", "RUN", "--input", "x", "--out", "{file}"],
    ["image-figure", "samples", "RUN", "--out", "{file}/x.png"],
    ["image-figure", "samples", "RUN", "--out", "{dir}"],
    ["ablate-steps", "RUN", "--steps", "1,2", "--out", "{file}"],
    ["chasm", "--out", "{file}/sub"],
    ["figure", "swissroll", "{dir}", "--out", "{dir}"],
    ["sample-conditional", "RUN", "--classifier", "c", "--label", "1", "--out", "{file}/x.png"],
    ["train-classifier", "digits", "--out", "{file}"],
])
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(argv, a_file, tmp_path, capsys):
    argv = [a.format(file=a_file, dir=tmp_path) for a in argv]
    line = _one_line_error(argv, capsys)
    assert "argument --out" in line and ("is a file" in line or "is a directory" in line), line


def test_train_out_under_a_file_and_resume_of_a_file_are_one_line(a_file, capsys):
    assert "is not writable" in _one_line_error(["train", "swissroll", "--out", f"{a_file}/run"], capsys)
    assert "is a file, not a run directory" in _one_line_error(["train", "--resume", str(a_file)], capsys)


def test_a_text_file_named_npy_is_not_pickled_data(tmp_path):
    from fdrl.sample_files import read_samples

    (tmp_path / "samples.npy").write_text("1 2\n3 4\n")
    with pytest.raises(ValueError, match="not a NumPy .npy file"):
        read_samples(tmp_path / "samples.npy")


# -- numbers and names -----------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cuda:abc", "cuda:", "cpu:0x", "gpu", "cuda:1:2"])
def test_a_malformed_device_is_refused_in_the_config_and_on_the_command_line(device, capsys):
    with pytest.raises(ConfigError, match="device must be"):
        load_config("swissroll", [f"device={device}"])
    with pytest.raises(ValueError, match="device must be"):
        resolve_device(device)
    assert "device must be" in _one_line_error(["train", "swissroll", "--device", device], capsys)


@pytest.mark.parametrize("argv", [
    ["train", "swissroll", "train.seed=4294967296"],
    ["train", "swissroll", "--seed", "4294967296"],
    ["sample", ".", "--seed", "-1"],
    ["evaluate", ".", "--seed", "99999999999"],
    ["chasm", "--seeds", "0,4294967296"],
])
def test_seeds_outside_0_to_2_to_the_32_are_refused_up_front(argv, capsys):
    assert "4294967295" in _one_line_error(argv, capsys)


def test_extends_cycles_are_one_line_and_relative_extends_are_from_the_including_file(tmp_path, monkeypatch, capsys):
    sub = tmp_path / "configs" / "sub"
    sub.mkdir(parents=True)
    (sub / "a.yaml").write_text("extends: b.yaml\n")
    (sub / "b.yaml").write_text("extends: a.yaml\n")
    (sub / "child.yaml").write_text("extends: ../base.yaml\ntrain: {steps: 7}\n")
    (tmp_path / "configs" / "base.yaml").write_text("extends: swissroll\nflow: {steps: 9}\n")
    monkeypatch.chdir(tmp_path)  # not the including file's folder
    line = _one_line_error(["config", str(sub / "a.yaml")], capsys)
    assert "goes round in a circle" in line and "a.yaml -> " in line
    config = load_config(str(sub / "child.yaml"))
    assert (config.train.steps, config.flow.steps, config.data.name) == (7, 9, "swissroll")
    assert json.dumps(config.to_dict())  # a plain, complete config


# -- Table 4's translation protocol: fdrl evaluate RUN --translate-from A --against B ---------------
@pytest.fixture(scope="module")
def translation_inputs(tmp_path_factory) -> Path:
    """A 2-step digits 3 -> 8 run, a vector run, classifiers for 8 x 8 and 28 x 28 images, and
    inputs good and bad."""
    from PIL import Image

    from fdrl.classifier import DigitClassifier, save_classifier
    from fdrl_studies.composition import translation_config
    from fdrl.train import Trainer

    root = tmp_path_factory.mktemp("translation-inputs")
    Trainer(translation_config("digits", 3, 8, TINY), root / "run", progress=False).fit()
    Trainer(load_config("swissroll", TINY), root / "vectors", progress=False).fit()
    save_classifier(DigitClassifier((1, 8, 8), arch="mlp", width=4), root / "judge")
    save_classifier(DigitClassifier((1, 28, 28), arch="mlp", width=4), root / "judge28")
    rng = np.random.default_rng(0)
    np.save(root / "good.npy", rng.uniform(-1, 1, (5, 1, 8, 8)).astype("float32"))
    np.save(root / "one.npy", rng.uniform(-1, 1, (1, 1, 8, 8)).astype("float32"))
    np.save(root / "9x9.npy", rng.uniform(-1, 1, (5, 1, 9, 9)).astype("float32"))
    (root / "empty").mkdir()
    (root / "big").mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "big" / "x.png")
    return root


@pytest.mark.parametrize("argv, message", [
    (["--translate-from", "good.npy", "--against", "good.npy"], "pass --inception-weights FILE for FID"),
    (["--translate-from", "good.npy", "--against", "good.npy", "--classifier", "judge", "--inception-weights",
      "good.npy"], "not both"),
    (["--translate-from", "good.npy", "--classifier", "judge"], "--translate-from A_TEST and --against B_TEST go"),
    (["--translate-from", "good.npy", "--against", "good.npy", "--classifier", "judge", "--fid"], "drop --fid"),
    (["--translate-from", "missing", "--against", "good.npy", "--classifier", "judge"], "'missing' does not exist"),
    (["--translate-from", "empty", "--against", "good.npy", "--classifier", "judge"], "holds no images"),
    (["--translate-from", "big", "--against", "good.npy", "--classifier", "judge"], "is 16x16; the model takes 8x8"),
    (["--translate-from", "good.npy", "--against", "9x9.npy", "--classifier", "judge"],
     r"holds 5 image(s) of shape (1, 9, 9); the model takes (1, 8, 8)"),
    (["--translate-from", "one.npy", "--against", "good.npy", "--classifier", "judge"],
     "the test-A set holds 1 image(s); a Frechet distance needs at least 2"),
    (["--translate-from", "good.npy", "--against", "good.npy", "--classifier", "judge28"],
     "takes images of shape (1, 28, 28), but the run's images have shape (1, 8, 8)"),
    (["--translate-from", "good.npy", "--against", "good.npy", "--inception-weights", "nothing.pth"],
     "nothing.pth' (from inception_weights) does not exist"),
    (["--translate-from", "good.npy", "--against", "good.npy", "--classifier", "judge", "--run", "vectors"],
     "is not a run on images (samples of shape (2,)); --translate-from needs one"),
])
def test_translation_scoring_bad_input_is_one_line(argv, message, translation_inputs, monkeypatch, capsys):
    monkeypatch.chdir(translation_inputs)
    monkeypatch.delenv("FDRL_INCEPTION_WEIGHTS", raising=False)
    run = "run"
    if "--run" in argv:
        i = argv.index("--run")
        run, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    assert message in _one_line_error(["evaluate", run, "--device", "cpu", *argv], capsys)
