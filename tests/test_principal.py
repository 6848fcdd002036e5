"""FDRL in a principal-component space of images (fdrl.data.principal): the space's encode and
decode, a folder trained with no option in it, samples as full images that a loaded model
repeats, and samples that beat the Gaussian of Eq. 8 on images that are one of two shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fdrl.cli import main
from fdrl.data import build_data
from fdrl.data.images import TensorImages
from fdrl.components import check_pca
from fdrl.data.principal import AUTO_K, MAX_K, PrincipalSpace
from fdrl.guidance import transport
from fdrl.model import FDRL


def _two_shapes(n: int, side: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` grayscale images (uint8, n x side x side), each a square or a cross (half each) at a
    random brightness and shifted by up to two pixels, on a dark background with a little noise."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, side, side))
    mid = side // 2
    for i in range(n):
        img = np.zeros((side, side))
        if i % 2:
            img[mid - 4:mid + 4, mid - 4:mid + 4] = 1.0
        else:
            img[mid - 1:mid + 1, 2:-2] = img[2:-2, mid - 1:mid + 1] = 1.0
        dy, dx = rng.integers(-2, 3, 2)
        out[i] = np.roll(img, (dy, dx), (0, 1)) * rng.uniform(0.6, 1.0)
    out += rng.normal(0, 0.03, out.shape)
    return (out.clip(0, 1) * 255).astype(np.uint8)


def _folder(root, n: int = 120, seed: int = 0):
    root.mkdir()
    for i, img in enumerate(_two_shapes(n, seed=seed)):
        Image.fromarray(img).save(root / f"s{i:03d}.png")
    return root


def _images(n: int = 200) -> TensorImages:
    return TensorImages("shapes", torch.from_numpy(_two_shapes(n))[:, None], flip=False, dequantize=0.0, key={})


def test_coefficients_round_trip_exactly_and_are_standardised():
    images = _images()
    space = PrincipalSpace.fit(images, 0.9)
    z = space.encode(images.subset(10**6, 0))
    assert z.shape == (200, space.k)
    assert torch.allclose(z.std(0, correction=0), torch.ones(space.k), atol=1e-4)  # standardised coefficients
    assert z.mean(0).abs().max() < 1e-4
    assert torch.allclose(space.encode(space.decode(z)), z, atol=1e-4)  # decode is the inverse on the space
    # the fewest directions that hold 90% of the variance
    share = torch.cumsum(space.gaussian.eigenvalues, 0) / space.gaussian.total_variance
    assert share[space.k - 1] >= 0.9 > share[space.k - 2]
    assert PrincipalSpace.fit(images, 3).k == 3


def test_decoded_samples_carry_the_gaussians_other_directions():
    images = _images()
    space = PrincipalSpace.fit(images, 4)
    z = torch.randn(4000, 4, generator=torch.Generator().manual_seed(0))
    x = space.decode(z, torch.Generator().manual_seed(1))
    assert x.shape == (4000, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
    # unclamped, off the space every pixel varies as the Gaussian's other directions say
    space.gaussian.clamp = None
    residual = (space.decode(z, torch.Generator().manual_seed(1)) - space.decode(z)).reshape(4000, -1)
    g = space.gaussian
    expected = (g.components[:, 4:] ** 2) @ g.eigenvalues[4:] + g.residual
    ratio = residual.var(0) / expected
    assert 0.9 < float(ratio.min()) and float(ratio.max()) < 1.1


def test_pca_option_is_checked():
    assert check_pca(0.9) == 0.9 and check_pca(12) == 12 and check_pca(0) == 0 and check_pca("auto") == "auto"
    for bad in (-0.1, 1.5, True, "0.9", "Auto", float("nan")):
        with pytest.raises(ValueError, match="data.params.pca must be"):
            check_pca(bad)
    with pytest.raises(ValueError, match="at most"):
        PrincipalSpace.fit(_images(20), 50)
    assert PrincipalSpace.fit(_images(), 0.999999).k <= MAX_K
    # auto: one direction per five training images, at most AUTO_K, never more than the images give
    assert PrincipalSpace.fit(_images(200), "auto").k == 40 and PrincipalSpace.fit(_images(4), "auto").k == 1
    assert PrincipalSpace.fit(_images(1000), "auto").k == AUTO_K


QUICK = ["train.steps=300", "train.eval_n=60", "train.sample_n=16", "train.sample_every=300",
         "data.params.image_size=16"]


def test_a_folder_trains_in_the_space_and_samples_full_images(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "shapes")
    assert main(["train", "shapes", *QUICK, "--quiet", "--device", "cpu"]) == 0
    run = tmp_path / "runs" / "shapes"
    model = FDRL.load(run)
    assert model.space is not None and tuple(model.prior.shape) == (model.space.k,)
    samples = model.sample(40, seed=3)
    assert samples.shape == (40, 3, 16, 16) and samples.min() >= -1 and samples.max() <= 1
    assert torch.equal(samples, FDRL.load(run).sample(40, seed=3))  # the space is stored in the run
    assert torch.equal(samples, FDRL.load(model.save(tmp_path / "saved")).sample(40, seed=3))
    assert not torch.equal(samples, model.sample(40, seed=4))
    # the report scores images, and beats the Gaussian of Eq. 8 on them
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["reference"].startswith("held-out part (24 samples")
    assert metrics["energy_distance"] < metrics["baselines"]["gaussian"]["energy_distance"]
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    info = capsys.readouterr().out
    assert f"space     the leading {model.space.k} principal coefficients" in info
    assert f"marginals {model.space.k} features mapped onto the training data's marginals at strength" in info
    assert main(["sample", str(run), "--n", "6", "--out", "s.npy", "--quiet"]) == 0
    assert np.load(tmp_path / "s.npy").shape == (6, 3, 16, 16)
    with pytest.raises(ValueError, match=r"flowing given images \(translation, refinement\) needs a pixel-space"):
        transport(model, samples)
    capsys.readouterr()
    for command in (["translate", str(run), "--input", "shapes", "--out", "t"],
                    ["image-figure", "samples", str(run), "--out", "f.png"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "needs a pixel-space estimator" in err and err.count("\n") == 1

