"""The project's digit classifier: training, held-out accuracy, save/load, classifier Frechet
distance, and the ``train-classifier`` / ``classifier-fd`` commands."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from fdrl.classifier import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    DigitClassifier,
    PenultimateFeatures,
    load_classifier,
    save_classifier,
    weights_digest,
)
from fdrl.cli.images import register
from fdrl.evaluate import METRICS
from fdrl.evaluate.classifier_report import classifier_frechet_distance
from fdrl_studies.classifier_training import labelled_images, train_classifier


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The default classifier (cnn, width 32, 30 epochs) on digits, saved."""
    out = tmp_path_factory.mktemp("classifier") / "digits-cnn"
    model, metrics = train_classifier("digits", out, seed=0)
    return out, model, metrics


@pytest.fixture(scope="module")
def digits_sets():
    train_x, _ = labelled_images("digits", "train")
    test_x, test_y = labelled_images("digits", "test")
    return train_x, test_x, test_y


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fdrl")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def _held_out_accuracy(model: DigitClassifier, test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    """The share of held-out digits the model labels correctly, computed here (not by the
    module under test)."""
    with torch.no_grad():
        predicted = torch.cat([model(x).argmax(1) for x in test_x.split(256)])
    return float((predicted == test_y).double().mean())


def test_trains_to_held_out_accuracy(trained, digits_sets):
    out, model, metrics = trained
    assert metrics["test_accuracy"] >= 0.95
    assert metrics["test_accuracy"] == pytest.approx(_held_out_accuracy(model, *digits_sets[1:]), abs=1e-9)
    assert metrics["train_n"] == 1438 and metrics["test_n"] == 359  # train split only; test held out
    info = json.loads((out / CONFIG_FILE).read_text())
    assert info["metrics"]["test_accuracy"] == metrics["test_accuracy"]
    assert info["arch"] == "cnn" and info["in_shape"] == [1, 8, 8] and info["num_classes"] == 10
    assert not model.training


def test_save_load_round_trip_is_exact(trained, digits_sets, tmp_path):
    out, model, _ = trained
    loaded = load_classifier(out)
    assert weights_digest(loaded) == weights_digest(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    x = digits_sets[1][:50]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(loaded.penultimate_features(x), model.penultimate_features(x))
    assert loaded.info["metrics"] == json.loads((out / CONFIG_FILE).read_text())["metrics"]
    # saved again, read again: the same weights and description
    save_classifier(loaded, tmp_path / "again")
    again = load_classifier(tmp_path / "again")
    assert weights_digest(again) == weights_digest(model) and again.info == loaded.info
    assert PenultimateFeatures(again).identity == PenultimateFeatures(model).identity


def test_classifier_fd_small_within_data_large_for_noise(trained, digits_sets):
    out, model, _ = trained
    train_x, test_x, _ = digits_sets
    noise = torch.rand(500, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    held_out = classifier_frechet_distance(train_x, test_x, model)
    to_noise = classifier_frechet_distance(noise, test_x, model)
    assert 0 <= held_out < 0.02 * to_noise
    # the metric interface: a classifier directory or model, or its features as an extractor
    assert METRICS["classifier_fd"](train_x, test_x, classifier=out) == pytest.approx(held_out, rel=1e-9)
    extractor = PenultimateFeatures(model)
    assert METRICS["classifier_fd"](train_x, test_x, extractor=extractor) == pytest.approx(held_out, rel=1e-9)
    with pytest.raises(ValueError, match="exactly one"):
        METRICS["classifier_fd"](train_x, test_x)


def test_second_architecture_is_independent_and_deterministic(tmp_path):
    first, metrics = train_classifier("digits", tmp_path / "a", seed=1, arch="mlp", epochs=10)
    second, _ = train_classifier("digits", None, seed=1, arch="mlp", epochs=10)
    assert metrics["test_accuracy"] >= 0.93
    assert weights_digest(first) == weights_digest(second)  # the seed fixes init, order and noise
    other, _ = train_classifier("digits", None, seed=2, arch="mlp", epochs=1)
    assert weights_digest(other) != weights_digest(first)
    assert load_classifier(tmp_path / "a").arch == "mlp"


def test_bad_classifier_inputs_are_one_line_errors(trained, tmp_path):
    out, model, _ = trained
    cases = [
        (lambda: load_classifier(tmp_path / "missing"), FileNotFoundError, "no classifier in"),
        (lambda: load_classifier(out, num_classes=5), ValueError, "has 10 classes, 5 were expected"),
        (lambda: model(torch.zeros(2, 1, 28, 28)), ValueError, r"takes images of shape \(1, 8, 8\)"),
        (lambda: DigitClassifier((1, 8, 8), arch="resnet"), ValueError, "unknown classifier architecture"),
        (lambda: train_classifier("swissroll", None), ValueError, "no class labels"),
        (lambda: train_classifier("digits", None, epochs=0), ValueError, "epochs >= 1"),
    ]
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / CONFIG_FILE).write_text((out / CONFIG_FILE).read_text())
    (damaged / WEIGHTS_FILE).write_bytes(b"not safetensors")
    cases.append((lambda: load_classifier(damaged), ValueError, "damaged"))
    wrong = tmp_path / "wrong-classes"
    save_classifier(DigitClassifier((1, 8, 8), num_classes=3), wrong)
    info = json.loads((wrong / CONFIG_FILE).read_text())
    (wrong / CONFIG_FILE).write_text(json.dumps({**info, "num_classes": 10}))
    cases.append((lambda: load_classifier(wrong), ValueError, "damaged or of another version"))
    for call, error, message in cases:
        with pytest.raises(error, match=message) as raised:
            call()
        assert "\n" not in str(raised.value)


def test_train_classifier_command(tmp_path, capsys, digits_sets):
    out = tmp_path / "clf"
    args = parse("train-classifier", "digits", "--out", str(out), "--arch", "mlp", "--epochs", "2", "--seed", "3",
                 "--device", "cpu", "--quiet")
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[0])
    assert report["arch"] == "mlp" and report["seed"] == 3 and report["epochs"] == 2
    saved = load_classifier(out)
    assert report["test_accuracy"] == pytest.approx(_held_out_accuracy(saved, *digits_sets[1:]), abs=1e-9)
    assert report["test_accuracy"] > 0.5  # two epochs of an MLP: far above chance (0.1)
    assert saved.info["training"]["seed"] == 3


def test_classifier_fd_command(trained, tmp_path, capsys):
    out, model, _ = trained
    noise = np.random.default_rng(0).uniform(-1, 1, (300, 8, 8)).astype(np.float32)  # (n, H, W) is accepted
    np.save(tmp_path / "noise.npy", noise)
    from safetensors.torch import save_file

    test_x, _ = labelled_images("digits", "test")
    save_file({"samples": test_x.contiguous()}, str(tmp_path / "test.pt"))

    values = {}
    for a, b in [("digits:train", "digits:test"), ("digits:train", str(tmp_path / "noise.npy")),
                 (str(tmp_path / "test.pt"), "digits:test")]:
        args = parse("classifier-fd", "--classifier", str(out), a, b, "--device", "cpu")
        assert args.func(args) == 0
        record = json.loads(capsys.readouterr().out)
        values[b if a == "digits:train" else "same"] = record["classifier_fd"]
    assert values["same"] == pytest.approx(0.0, abs=1e-6)
    assert values["digits:test"] < 0.02 * values[str(tmp_path / "noise.npy")]

    np.save(tmp_path / "big.npy", np.zeros((10, 1, 28, 28), np.float32))
    for argv, error, message in [
        (["--classifier", str(tmp_path / "none"), "digits", "digits"], FileNotFoundError, "no classifier in"),
        (["--classifier", str(out), "digits", "mnist:test"], ValueError, "holds images of shape"),
        (["--classifier", str(out), "digits", str(tmp_path / "big.npy")], ValueError, "holds images of shape"),
        (["--classifier", str(out), "digits", "nonsense"], FileNotFoundError, "neither a sample file"),
        (["--classifier", str(out), "digits", str(tmp_path)], FileNotFoundError, "neither a run directory"),
    ]:
        args = parse("classifier-fd", *argv, "--device", "cpu")
        with pytest.raises(error, match=message) as raised:
            args.func(args)
        assert "\n" not in str(raised.value)
