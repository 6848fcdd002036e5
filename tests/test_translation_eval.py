"""Table 4's protocol (Sec. 6.5, App. F): ``fdrl evaluate RUN --translate-from A --against B`` on
the digits 3 -> 8 stand-in (the MNIST 3 -> 8 of docs/studies/translation.md at 8 x 8, so that it trains in seconds)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from fdrl.classifier import load_classifier
from fdrl.cli import main
from fdrl.guidance import translate
from fdrl.model import FDRL
from fdrl.train import Trainer
from fdrl_studies.classifier_training import train_classifier
from fdrl_studies.composition import translation_config
from test_fid import random_weights  # noqa: F401 (a fixture: FID Inception weights, randomly initialised)


@pytest.fixture(scope="module")
def three_to_eight(tmp_path_factory):
    """A run with the prior = the digits' training 3s and the data = their training 8s (150
    steps), a judge classifier, and the held-out 3s and 8s as .npy files."""
    from fdrl.data import build_image_data

    root = tmp_path_factory.mktemp("three-to-eight")
    overrides = ["train.steps=150", "train.batch_size=64", "flow.steps=20", "flow.refine_steps=0",
                 "model.params.width=64", "model.params.depth=2", "train.sample_every=1000",
                 "train.checkpoint_every=150", "device=cpu"]
    Trainer(translation_config("digits", 3, 8, overrides), root / "run", progress=False).fit()
    _, metrics = train_classifier("digits", root / "judge", seed=1, arch="mlp", epochs=5, width=16)
    assert metrics["test_accuracy"] > 0.85
    for digit, name in ((3, "a.npy"), (8, "b.npy")):
        test = build_image_data("digits", split="test", classes=[digit])
        np.save(root / name, test.images(range(len(test))).numpy())
    return root


def _evaluate(root, *extra: str, out: str = "t.json") -> dict:
    argv = ["evaluate", str(root / "run"), "--translate-from", str(root / "a.npy"), "--against", str(root / "b.npy"),
            "--device", "cpu", "--out", str(root / out), *extra]
    assert main(argv) == 0
    return json.loads((root / out).read_text())


def _frechet_by_scipy(x: torch.Tensor, y: torch.Tensor, judge) -> float:
    """The Frechet distance written out with scipy's matrix square root (not fdrl's eigen route)."""
    with torch.no_grad():
        fx, fy = (judge.penultimate_features(v).double().numpy() for v in (x, y))
    mx, my = fx.mean(0), fy.mean(0)
    sx, sy = np.cov(fx, rowvar=False), np.cov(fy, rowvar=False)
    with warnings.catch_warnings():  # fewer images than features (and dead ReLUs): singular, which sqrtm says
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(sx @ sy).real
    return float(((mx - my) ** 2).sum() + np.trace(sx + sy - 2 * root))


def test_translation_moves_test_a_towards_test_b_and_scores_the_flow_of_fdrl_translate(three_to_eight, capsys):
    root = three_to_eight
    record = _evaluate(root, "--classifier", str(root / "judge"))
    assert record["metric"] == "classifier_fd" and record["prior"] == "data_source" and record["steps"] == 20
    assert record["n"] == 37 and record["target_n"] == 35 and record["floor_n"] == 37  # the held-out 3s and 8s
    assert record["floor_reference"]["params"]["classes"] == [8]  # the run's B training images
    # untranslated 3s are far from the 8s; training 8s are close to them; the flow closes most of the gap
    assert record["floor"] < 0.25 * record["before"] and record["after"] < 0.25 * record["before"], record
    out = capsys.readouterr().out
    assert "before" in out and "after" in out and "floor" in out and str(root / "t.json") in out

    # "after" is the distance of exactly the images `fdrl translate` makes (same seed and batch),
    # to the test 8s, as scipy computes it
    model, judge = FDRL.load(root / "run"), load_classifier(root / "judge")
    a, b = torch.from_numpy(np.load(root / "a.npy")), torch.from_numpy(np.load(root / "b.npy"))
    translated, _, _ = translate(model, a, seed=0, batch_size=500)
    assert math.isclose(record["after"], _frechet_by_scipy(translated, b, judge), rel_tol=1e-5)
    assert math.isclose(record["before"], _frechet_by_scipy(a, b, judge), rel_tol=1e-5)


def test_zero_flow_steps_leave_the_images_as_they_were(three_to_eight):
    root = three_to_eight
    record = _evaluate(root, "--classifier", str(root / "judge"), "--steps", "0", "--n", "12", out="zero.json")
    assert record["steps"] == 0 and (record["n"], record["target_n"], record["floor_n"]) == (12, 12, 12)
    assert record["after"] == record["before"] > 0


def test_fid_with_a_weights_file(three_to_eight, random_weights):  # noqa: F811 (the imported fixture)
    root = three_to_eight
    record = _evaluate(root, "--inception-weights", random_weights, "--n", "3", "--steps", "2", out="fid.json")
    assert record["metric"] == "fid" and record["extractor"]["weights"].startswith("sha256:")
    assert all(math.isfinite(record[k]) and record[k] >= 0 for k in ("before", "after", "floor"))
    assert record["n"] == 3 and record["floor_n"] == 3


def test_a_run_without_a_source_domain_prior_is_a_warning(tmp_path):
    """A data_gaussian run still flows the given images, but says that it was not trained to."""
    overrides = ["train.steps=2", "train.batch_size=16", "flow.steps=2", "flow.refine_steps=0",
                 "model.params.width=8", "model.params.depth=1", "train.sample_every=1000", "device=cpu"]
    from fdrl.config import load_config

    Trainer(load_config("digits", overrides), tmp_path / "run", progress=False).fit()
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    np.save(tmp_path / "a.npy", images.numpy())
    train_classifier("digits", tmp_path / "judge", seed=0, arch="mlp", epochs=1, width=4)
    with pytest.warns(UserWarning, match=r"has a gaussian prior, not a source domain \(prior.name=dataset\)"):
        assert main(["evaluate", str(tmp_path / "run"), "--translate-from", str(tmp_path / "a.npy"), "--against",
                     str(tmp_path / "a.npy"), "--classifier", str(tmp_path / "judge"), "--device", "cpu"]) == 0
    assert (tmp_path / "run" / "eval" / "translation.json").is_file()
