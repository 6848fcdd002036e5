"""FID plumbing, offline: the real torch-fidelity Inception code path with random Kaiming weights.

Default initialisation shrinks activations layer by layer until every pool3 feature (and so
every FID) is ~0; Kaiming-normal convolutions keep them from vanishing, so a random network
still tells structured images from noise.
"""

from __future__ import annotations

import argparse
import json
import math
import urllib.error

import numpy as np
import pytest
import torch
from torch import nn

from fdrl.evaluate import fid as fid_module
from fdrl.evaluate import InceptionWeightsError, fid_from_samples, fid_reference_stats

import torch_fidelity.feature_extractor_inceptionv3 as inception_v3  # the fid extra, installed by the README


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> str:
    """A state dict of the FID Inception architecture with Kaiming-initialised convolutions."""
    cls = inception_v3.FeatureExtractorInceptionV3
    with pytest.MonkeyPatch.context() as mp:  # build the architecture without loading any weights
        mp.setattr(cls, "load_state_dict", lambda self, state, *a, **k: None)
        mp.setattr(inception_v3, "load_state_dict_from_url", lambda *a, **k: {})
        network = cls("inception-v3-compat", ["2048"])
    torch.manual_seed(0)
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
    torch.save(network.state_dict(), path)
    return str(path)


def blobs(n: int, seed: int, size: int = 16) -> torch.Tensor:
    """Structured RGB images in [-1, 1]: two smooth coloured Gaussian bumps on a dark background."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    images = torch.full((n, 3, size, size), -0.8)
    for _ in range(2):
        centre = torch.rand(n, 2, 1, 1, generator=g)
        colour = torch.rand(n, 3, 1, 1, generator=g) * 1.6
        bump = torch.exp(-((xx - centre[:, :1]) ** 2 + (yy - centre[:, 1:]) ** 2) / 0.02)  # (n, 1, size, size)
        images = images + colour * bump
    return images.clamp(-1, 1)


def test_fid_orders_real_and_noise_through_weights_file(random_weights, tmp_path):
    n = 8
    real, real_again = blobs(n, 0), blobs(n, 1)
    noise = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    dataset = {"name": "blobs", "seed": 0, "n": n}
    ref = fid_reference_stats(real, dataset, cache_dir=tmp_path, batch_size=n, inception_weights=random_weights)
    assert ref.mean.shape == (2048,) and ref.cov.shape == (2048, 2048) and ref.n == n
    assert float(ref.mean.abs().mean()) > 1e-2, "random features collapsed to ~0"
    fid_real = fid_from_samples(real_again, ref, batch_size=n, inception_weights=random_weights)
    fid_noise = fid_from_samples(noise, ref, batch_size=n, inception_weights=random_weights)
    assert math.isfinite(fid_real) and math.isfinite(fid_noise)
    assert 0 < fid_real < fid_noise / 10

    # the cached reference is reused as is, without touching the images again
    again = fid_reference_stats(iter(()), dataset, cache_dir=tmp_path, inception_weights=random_weights)
    assert torch.equal(again.mean, ref.mean) and again.key == ref.key


def test_weights_from_environment_variable(random_weights, monkeypatch):
    monkeypatch.setenv(fid_module.WEIGHTS_ENV, random_weights)
    assert fid_module.inception_identity() == fid_module.inception_identity(random_weights)
    assert fid_module.resolve_inception_weights() is not None


def test_offline_without_weights_names_both_fixes(monkeypatch):
    monkeypatch.delenv(fid_module.WEIGHTS_ENV, raising=False)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(inception_v3, "load_state_dict_from_url", offline)
    with pytest.raises(InceptionWeightsError) as err:
        fid_module.load_inception()
    message = str(err.value)
    assert "inception_weights=PATH" in message and fid_module.WEIGHTS_ENV in message and "\n" not in message
    assert isinstance(err.value, FileNotFoundError)  # the CLI reports it as one line, exit 2


def test_missing_or_unsafe_weights_file(tmp_path):
    with pytest.raises(InceptionWeightsError, match="does not exist"):
        fid_module.load_inception(tmp_path / "absent.pth")
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"weights": np.ones(2)}, unsafe)  # unpickling a numpy array is refused by weights_only
    with pytest.raises(ValueError, match="not a state dict"):
        fid_module.load_inception(unsafe)


def test_evaluate_fid_command_on_an_image_run(random_weights, tmp_path):
    from fdrl.cli.evaluate import register
    from fdrl.config import load_config
    from fdrl.train import Trainer

    images = blobs(5, 3, size=8)
    np.save(tmp_path / "images.npy", images.numpy())
    run = tmp_path / "run"
    overrides = [f"data.params.path={tmp_path / 'images.npy'}", "data.test_fraction=0", "train.steps=2", "train.batch_size=4",
                 "flow.steps=2", "flow.refine_steps=0", "flow.eta=0.01", "model.params.width=8",
                 "model.params.depth=1", "train.sample_n=4", "device=cpu"]
    Trainer(load_config({"data": {"name": "array"}}, overrides), run, progress=False).fit()

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["evaluate", str(run), "--fid", "--n", "4", "--batch", "5", "--device", "cpu",
                              "--inception-weights", random_weights, "--stats-cache", str(tmp_path / "cache")])
    assert args.func(args) == 0
    record = json.loads((run / "eval" / "metrics.json").read_text())["fid"]
    assert record["n"] == 4 and record["steps"] == 2 and record["seed"] == 0
    assert record["extractor"]["weights"].startswith("sha256:") and record["reference"]["subset"] == "all"
    assert record["reference_n"] == 5 and len(record["reference"]["sha256"]["path"]) == 64
    assert math.isfinite(record["value"]) and record["value"] > 0
    assert (run / "eval" / "samples.png").stat().st_size > 0
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
