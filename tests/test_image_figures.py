"""Image figures (Fig. 4, 8, 9, 11, App. G) and ``evaluate --metric classifier_fd`` on a tiny
digits run."""

from __future__ import annotations

import argparse
import copy
import json
import math

import pytest
import torch
from PIL import Image

from fdrl import seeding
from fdrl.classifier import DigitClassifier, save_classifier
from fdrl.cli.evaluate import register as register_eval
from fdrl.cli.images import register
from fdrl.config import load_config
from fdrl.data import build_image_data
from fdrl.data.images import TensorImages
from fdrl.model import FDRL
from fdrl.nets import MLP
from fdrl.priors import GaussianPrior, LowRankGaussianPrior, StandardNormalPrior, UniformPrior
from fdrl.train import Trainer
from fdrl_studies import image_figures as figs
from fdrl_studies.classifier_training import train_classifier

ROWS, CELL = 3, 8 * 4 + 1  # default scale 4 for 8x8 digits, 1 pixel of padding


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    overrides = ["train.steps=5", "train.batch_size=32", "flow.steps=3", "flow.refine_steps=1",
                 "model.params.width=32", "model.params.depth=1", "train.sample_n=16", "train.eval_n=100",
                 "device=cpu", f"prior.params.cache_dir={root / 'prior-cache'}"]
    Trainer(load_config("digits", overrides), root / "run", progress=False).fit()
    return root / "run"


@pytest.fixture(scope="module")
def model(run_dir):
    return FDRL.load(run_dir)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("classifier") / "mlp"
    train_classifier("digits", out, seed=1, arch="mlp", epochs=3)
    return out


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fdrl")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    register_eval(sub)
    return parser.parse_args(list(argv))


def grid_size(rows: int, cols: int) -> tuple[int, int]:
    """(width, height) of a grid of 8x8 digits at scale 4."""
    return cols * CELL + 1, rows * CELL + 1


@pytest.mark.parametrize(
    ("argv", "size"),
    [
        (["samples", "--n", "12", "--nrow", "4"], grid_size(3, 4)),
        (["samples", "--n", "9"], grid_size(3, 3)),
        (["prior", "--n", "6", "--nrow", "3"], grid_size(2, 3)),
        (["flow", "--n", str(ROWS), "--show", "0,2,4"], grid_size(ROWS, 3)),
        (["flow", "--n", str(ROWS)], grid_size(ROWS, 5)),  # steps 0..K+kappa = 0..4: 5 distinct columns
        (["interpolate", "--n", str(ROWS), "--points", "5"], grid_size(ROWS, 5)),
        (["interpolate", "--n", "2", "--points", "3", "--mode", "linear", "--scale", "2"], (3 * 17 + 1, 2 * 17 + 1)),
        (["neighbours", "--n", str(ROWS), "--k", "4"], (grid_size(ROWS, 1)[0] + figs.SEPARATOR + grid_size(ROWS, 4)[0],
                                                          grid_size(ROWS, 1)[1])),
    ],
)
def test_figure_commands_write_pngs_of_expected_size(run_dir, tmp_path, capsys, argv, size):
    out = tmp_path / "figure.png"
    args = parse("image-figure", argv[0], str(run_dir), *argv[1:], "--out", str(out), "--device", "cpu")
    assert args.func(args) == 0
    with Image.open(out) as image:
        assert image.size == size and image.mode == "RGB"
    assert capsys.readouterr().out.startswith("wrote ")


def test_neighbours_in_classifier_features(run_dir, classifier_dir, tmp_path):
    out = tmp_path / "nn.png"
    args = parse("image-figure", "neighbours", str(run_dir), "--out", str(out), "--n", "2", "--k", "3",
                 "--classifier", str(classifier_dir), "--data", "digits:train", "--device", "cpu")
    assert args.func(args) == 0
    with Image.open(out) as image:
        assert image.size == (CELL + 1 + figs.SEPARATOR + 3 * CELL + 1, 2 * CELL + 1)
        assert image.getpixel((CELL + 1, 5)) == (255, 0, 0)  # the red bar


def test_flow_columns_run_from_prior_draw_to_sample(model):
    snapshots = figs.flow_snapshots(model, 4, [0, 2, 4], seed=3)
    assert snapshots.shape == (4, 3, 1, 8, 8)
    prior_draw = model.prior.sample(4, seeding.generator(3, "prior", 0))
    assert torch.equal(snapshots[:, 0], prior_draw)
    # the flow's own particles: a marginal map (on in the digits preset) applies to samples only
    assert torch.allclose(snapshots[:, -1], model.particles(4, seed=3), atol=1e-6)
    plain = copy.copy(model)
    plain.marginals = None
    assert torch.allclose(snapshots[:, -1], plain.sample(4, seed=3), atol=1e-6)
    assert figs.default_flow_steps(70, 8) == [0, 10, 20, 30, 40, 50, 60, 70]


@pytest.mark.parametrize("mode", ["slerp", "linear"])
def test_interpolation_endpoints_are_the_flowed_prior_draws(model, mode):
    starts, flowed = figs.interpolate_prior(model, rows=3, points=4, seed=5, mode=mode)
    assert starts.shape == flowed.shape == (3, 4, 1, 8, 8)
    for column, stream in ((0, 0), (-1, 1)):
        draw = model.prior.sample(3, seeding.generator(5, "prior", stream))
        assert torch.allclose(starts[:, column], draw, atol=1e-6)
        expected = model.flow(draw, generator=seeding.generator(5, "flow", 0))
        assert torch.allclose(flowed[:, column], expected, atol=1e-5)
    assert not torch.allclose(starts[:, 1], starts[:, 0])


def test_interpolation_paths():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 100, generator=g), torch.randn(5, 100, generator=g)
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)
    for mode in ("slerp", "linear"):
        assert torch.equal(figs.interpolate(a, b, 0.0, mode), a)
        assert torch.equal(figs.interpolate(a, b, 1.0, mode), b)
    mid = figs.interpolate(a, b, 0.5, "slerp")
    assert torch.allclose(mid.norm(dim=1), a.norm(dim=1), rtol=1e-5)  # slerp keeps the norm
    assert (figs.interpolate(a, b, 0.5, "linear").norm(dim=1) < 0.9 * a.norm(dim=1)).all()
    assert torch.allclose(figs.interpolate(a, a, 0.3, "slerp"), a, atol=1e-6)  # parallel rows: no 0 / 0


def test_prior_latent_map_reproduces_prior_samples():
    g = torch.Generator().manual_seed(1)
    data = torch.rand(200, 1, 4, 4, generator=g) * 2 - 1
    priors = [
        StandardNormalPrior((1, 4, 4)),
        GaussianPrior.fit([data], clamp=(-1.0, 1.0)),
        LowRankGaussianPrior.fit(lambda: [data], rank=3, clamp=(-1.0, 1.0)),
    ]
    for prior in priors:
        z = figs.prior_latent(prior, 6, torch.Generator().manual_seed(7))
        assert torch.equal(figs.prior_from_latent(prior, z), prior.sample(6, torch.Generator().manual_seed(7)))
    with pytest.raises(ValueError, match="no Gaussian latent"):
        figs.prior_latent(UniformPrior((1, 4, 4)), 2)


def test_uniform_prior_interpolates_linearly_in_sample_space(tmp_path):
    net = MLP((1, 4, 4), width=8, depth=1)
    spec = {"name": "mlp", "in_shape": [1, 4, 4], "params": {"width": 8, "depth": 1}}
    model = FDRL(net, "lsif-chi2", UniformPrior((1, 4, 4)), 0.1, 0.01, 2, estimator_spec=spec)
    starts, _ = figs.interpolate_prior(model, rows=2, points=3, seed=0)
    a, b = starts[:, 0], starts[:, -1]
    assert torch.allclose(starts[:, 1], (a + b) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="use mode linear"):
        figs.interpolate_prior(model, rows=2, points=3, mode="slerp")


def test_nearest_neighbours_streams_over_batches():
    data = build_image_data("digits", split="test")
    queries = data.images([5, 17, 100]) + 0.01
    d_all, i_all = figs.nearest_neighbours(queries, [data.images(range(len(data)))], k=4)
    d_streamed, i_streamed = figs.nearest_neighbours(queries, data.iter_batches(50), k=4)
    assert torch.equal(i_all, i_streamed) and torch.allclose(d_all, d_streamed)
    assert i_all[:, 0].tolist() == [5, 17, 100]  # an image's nearest neighbour is itself
    brute = torch.cdist(queries.reshape(3, -1).double(), data.images(range(len(data))).reshape(len(data), -1).double())
    assert torch.allclose(d_all, brute.sort(1).values[:, :4])
    with pytest.raises(ValueError, match="fewer than k"):
        figs.nearest_neighbours(queries, [data.images(range(3))], k=4)


def test_evaluate_classifier_fd(run_dir, classifier_dir, tmp_path, capsys):
    args = parse("evaluate", str(run_dir), "--metric", "classifier_fd", "--classifier", str(classifier_dir),
                 "--n", "60", "--device", "cpu", "--quiet", "--stats-cache", str(tmp_path / "stats"))
    assert args.func(args) == 0
    record = json.loads((run_dir / "eval" / "metrics.json").read_text())["classifier_fd"]
    assert record["value"] > 0 and math.isfinite(record["value"]) and record["n"] == 60
    assert record["reference_n"] == 1438 and record["reference"]["subset"] == "all"
    assert record["extractor"]["arch"] == "mlp" and record["extractor"]["weights"].startswith("sha256:")
    assert list((tmp_path / "stats").glob("*.safetensors"))  # reference statistics cached

    out = tmp_path / "ablation"
    args = parse("ablate-steps", str(run_dir), "--steps", "0,4", "--metric", "classifier_fd", "--classifier",
                 str(classifier_dir), "--n", "40", "--device", "cpu", "--out", str(out),
                 "--stats-cache", str(tmp_path / "stats"))
    assert args.func(args) == 0
    rows = json.loads((out / "ablate_steps.json").read_text())["rows"]
    assert [r["steps"] for r in rows] == [0, 4] and all(r["classifier_fd"] > 0 for r in rows)
    capsys.readouterr()


def test_bad_figure_inputs_are_one_line_errors(run_dir, tmp_path):
    vector_model = tmp_path / "vectors"
    spec = {"name": "mlp", "in_shape": [2], "params": {"width": 8, "depth": 1}}
    FDRL(MLP((2,), width=8, depth=1), "lsif-chi2", StandardNormalPrior((2,)), 0.1, 0.01, 2,
         estimator_spec=spec).save(vector_model)
    mnist_classifier = tmp_path / "mnist-shaped"
    save_classifier(DigitClassifier((1, 28, 28)), mnist_classifier)
    out = str(tmp_path / "f.png")
    cases = [
        (["samples", str(vector_model), "--out", out], ValueError, "need a run on images"),
        (["samples", str(run_dir), "--out", str(tmp_path / "f.jpg")], ValueError, "must end in .png"),
        (["samples", str(run_dir), "--out", out, "--n", "0"], ValueError, "--n must be a positive"),
        (["prior", str(tmp_path / "missing"), "--out", out], FileNotFoundError, "neither a saved model"),
        (["interpolate", str(run_dir), "--out", out, "--points", "1"], ValueError, "at least 2 points"),
        (["flow", str(run_dir), "--out", out, "--show", "0,-2"], ValueError, "flow steps to show"),
        (["neighbours", str(run_dir), "--out", out, "--classifier", str(mnist_classifier)], ValueError,
         r"takes images of shape \(1, 28, 28\)"),
        (["neighbours", str(run_dir), "--out", out, "--classifier", str(tmp_path / "none")], FileNotFoundError,
         "no classifier in"),
    ]
    for argv, error, message in cases:
        args = parse("image-figure", *argv, "--device", "cpu")
        with pytest.raises(error, match=message) as raised:
            args.func(args)
        assert "\n" not in str(raised.value)
    args = parse("evaluate", str(run_dir), "--metric", "classifier_fd", "--classifier", str(mnist_classifier),
                 "--device", "cpu")
    with pytest.raises(ValueError, match="takes images of shape"):
        args.func(args)
    small = TensorImages("small", torch.zeros(4, 1, 4, 4, dtype=torch.uint8), flip=False, dequantize=0.0, key={})
    with pytest.raises(ValueError, match="training images have shape"):
        figs.neighbours_figure(FDRL.load(run_dir), small, out)


def test_classifier_report_scores_samples_prior_and_floor(run_dir, classifier_dir):
    args = parse("classifier-report", str(run_dir), "--classifier", str(classifier_dir), "--n", "200",
                 "--device", "cpu")
    assert args.func(args) == 0
    report = json.loads((run_dir / "metrics.json").read_text())["classifier_report"]
    assert report["n"] == 200
    assert report["classifier_fd_floor"] < report["classifier_fd_prior"]
    for name in ("samples", "prior"):
        assert sum(report[name]["class_histogram"]) == 200


def test_classifier_report_of_known_sets(classifier_dir):
    """Held-out images scored as samples sit at distance ~0 (ratio ~0); prior-like noise is far;
    the floor (training vs held-out) lies in between."""
    from fdrl.classifier import load_classifier
    from fdrl.evaluate.classifier_report import classifier_report

    clf = load_classifier(classifier_dir)
    train, test = (torch.cat(list(build_image_data("digits", split=s).iter_batches(512))) for s in ("train", "test"))
    noise = torch.rand(test.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    report = classifier_report(test, noise, train, test, clf)
    assert report["classifier_fd"] < 1e-3 * report["classifier_fd_prior"]
    assert report["classifier_fd"] < report["classifier_fd_floor"] < report["classifier_fd_prior"]
    # the floor is n training images, as many as the samples: the distance of fewer points is larger
    assert report["classifier_fd_floor_n"] == len(test) < len(train)
    assert report["classifier_fd_floor"] > report["classifier_fd_floor_all"]
    # the mean over disjoint subsets of that size, as many as the training images hold (at most 5)
    assert len(report["classifier_fd_floor_subsets"]) == min(5, len(train) // len(test))
    floors = report["classifier_fd_floor_subsets"]
    assert report["classifier_fd_floor"] == pytest.approx(sum(floors) / len(floors))
    fewer = classifier_report(test[:60], noise[:60], train, test, clf)
    assert fewer["classifier_fd_floor_n"] == 60 and fewer["classifier_fd_floor"] > report["classifier_fd_floor"]


def test_prediction_stats_of_a_classifier_with_known_outputs():
    """Confidence, histogram and entropy against values computed by hand: a stub whose softmax is
    0.7 on class 2 for images with a dark first pixel and 0.9 on class 5 otherwise."""
    from fdrl.evaluate.classifier_report import prediction_stats

    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            bright = x[:, 0, 0, 0] > 0
            probs = torch.full((x.shape[0], 10), 0.3 / 9)
            probs[~bright, 2] = 0.7
            probs[bright] = 0.1 / 9
            probs[bright, 5] = 0.9
            return probs.log()

    images = -torch.ones(40, 1, 8, 8)
    images[:10, 0, 0, 0] = 1.0  # 10 bright, 30 dark
    stats = prediction_stats(images, Stub(), batch_size=16)
    assert stats["confidence"] == pytest.approx((10 * 0.9 + 30 * 0.7) / 40)
    assert stats["class_histogram"] == [0, 0, 30, 0, 0, 10, 0, 0, 0, 0]
    assert stats["class_entropy"] == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert stats["class_entropy_max"] == pytest.approx(math.log(10))
