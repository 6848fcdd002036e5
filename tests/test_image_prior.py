"""The data-dependent prior of Eq. 8 at image scale: streaming full fit, low-rank form, cache."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fdrl.data import build_data
from fdrl.data.images import TensorImages
from fdrl.priors import (
    DEFAULT_RANK, MAX_FULL_DIM, SKETCH_ROWS, CovarianceSketch, GaussianPrior, GaussianStats, LowRankGaussianPrior,
    build_prior, fit_batch_size, load_prior,
)


@pytest.fixture(scope="module")
def images() -> TensorImages:
    """3000 3x8x8 uint8 images with a decaying spectrum: a few smooth patterns plus noise,
    centred away from 0 so the streaming sums would show cancellation if they had any."""
    g = torch.Generator().manual_seed(0)
    d = 3 * 8 * 8
    basis = torch.linalg.qr(torch.randn(d, d, generator=g)).Q
    scales = 40.0 * 0.7 ** torch.arange(d, dtype=torch.float32) + 2.0
    x = 150.0 + (torch.randn(3000, d, generator=g) * scales) @ basis.T
    pixels = x.round().clamp(0, 255).to(torch.uint8).reshape(3000, 3, 8, 8)
    return TensorImages("synthetic", pixels, flip=True, dequantize=3e-2, key={})


def direct_moments(data) -> tuple[torch.Tensor, torch.Tensor]:
    x = data.images(range(len(data))).reshape(len(data), -1).double()
    mean = x.mean(0)
    return mean, (x - mean).T @ (x - mean) / len(x)


def test_streaming_full_fit_equals_direct_fit(images):
    mean, cov = direct_moments(images)
    for batch_size in (97, 3000):
        stats = GaussianStats(mean.numel())
        for batch in images.iter_batches(batch_size):
            stats.update(batch)
        assert ((stats.mean - mean).norm() / mean.norm()).item() < 1e-6
        assert ((stats.covariance() - cov).norm() / cov.norm()).item() < 1e-6
    prior = build_prior("data_gaussian", images, rank="full", cache=False, batch_size=256)
    assert isinstance(prior, GaussianPrior) and prior.clamp == (-1.0, 1.0)
    assert torch.allclose(prior.mean.double(), mean, rtol=1e-6, atol=1e-6)
    fitted = prior.covariance.double() - prior.jitter * torch.eye(cov.shape[0], dtype=torch.float64)
    assert ((fitted - cov).norm() / cov.norm()).item() < 1e-6


def test_low_rank_fit_captures_the_covariance(images):
    mean, cov = direct_moments(images)
    eigenvalues = torch.linalg.eigvalsh(cov).flip(0)
    rank = 12
    prior = LowRankGaussianPrior.fit(lambda: images.iter_batches(500), rank=rank, shape=images.shape)
    assert prior.rank == rank and prior.shape == (3, 8, 8)
    assert torch.allclose(prior.mean.double(), mean, atol=1e-6)
    # variance kept equals the true share of the top-r eigenvalues
    best_share = (eigenvalues[:rank].sum() / eigenvalues.sum()).item()
    assert best_share - 5e-3 < prior.variance_kept() <= best_share + 1e-6
    assert 0.8 < prior.variance_kept() < 1.0
    # the diagonal is exact; off the diagonal, close to the best rank-r approximation
    assert torch.allclose(prior.covariance.diagonal().double(), cov.diagonal(), rtol=1e-4, atol=1e-7)
    best = (eigenvalues[rank:] ** 2).sum().sqrt()
    assert (prior.covariance.double() - cov).norm() <= 1.05 * best
    # samples (unclamped) have that covariance
    unclamped = LowRankGaussianPrior(prior.mean, prior.components, prior.eigenvalues, prior.residual, prior.shape)
    s = unclamped.sample(40000, torch.Generator().manual_seed(1)).reshape(40000, -1).double()
    sample_cov = torch.cov(s.T, correction=0)
    assert ((sample_cov - prior.covariance.double()).norm() / cov.norm()).item() < 0.03
    assert ((sample_cov - cov).norm() / cov.norm()).item() < 0.05
    clamped = prior.sample(500, torch.Generator().manual_seed(2))
    assert clamped.shape == (500, 3, 8, 8) and clamped.min() >= -1 and clamped.max() <= 1


def test_more_passes_sharpen_the_subspace(images):
    _, cov = direct_moments(images)
    errors = [(LowRankGaussianPrior.fit(lambda: images.iter_batches(1000), rank=6, oversample=2, passes=p,
                                        shape=images.shape).covariance.double() - cov).norm().item()
              for p in (1, 3)]
    assert errors[1] < errors[0]


def test_low_rank_memory_at_lsun_size_is_bounded():
    d, rank = 3 * 128 * 128, 256
    prior = LowRankGaussianPrior(torch.zeros(d), torch.zeros(d, rank), torch.ones(rank), torch.ones(d), (3, 128, 128))
    assert prior.memory_bytes() == 4 * (d * rank + rank + 2 * d) < 2e9
    assert LowRankGaussianPrior.fit_memory_bytes(d, rank) < 2e9
    assert 8 * d * d > 2e9  # what a full covariance would need
    assert prior.variance_kept() == pytest.approx(rank / (rank + d))


def test_sketch_of_a_batch_in_row_blocks_equals_the_direct_product():
    """The sketch converts a batch to float64 SKETCH_ROWS rows at a time (bounded memory at
    3x128x128); sums and Sigma @ Omega equal the direct float64 computation."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3 * SKETCH_ROWS + 5, 40, generator=g) + 5.0  # a mean far from 0
    omega = torch.randn(40, 7, generator=g, dtype=torch.float64)
    sketch = CovarianceSketch(omega)
    sketch.update(x[:200])
    sketch.update(x[200:])
    x64 = x.double()
    centred = x64 - x64.mean(0)
    torch.testing.assert_close(sketch.mean(), x64.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sketch.covariance_times_omega(), centred.T @ (centred @ omega) / len(x),
                               rtol=1e-10, atol=1e-12)
    assert fit_batch_size(3 * 128 * 128) == 341 and fit_batch_size(64) == 1024


def test_low_rank_save_load_round_trip(images, tmp_path):
    prior = LowRankGaussianPrior.fit(lambda: images.iter_batches(1000), rank=5, shape=images.shape, clamp=(-1, 1))
    prior.save(tmp_path)
    assert json.loads((tmp_path / "prior.json").read_text())["kind"] == "low_rank_gaussian"
    loaded = load_prior(tmp_path)
    assert isinstance(loaded, LowRankGaussianPrior) and loaded.clamp == (-1, 1)
    assert loaded.variance_kept() == pytest.approx(prior.variance_kept())
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(loaded.sample(8, g1), prior.sample(8, g2))


def test_build_prior_chooses_the_form(images):
    base = {"cache": False, "batch_size": 1000}
    assert isinstance(build_prior("data_gaussian", images, **base), GaussianPrior)  # 192 <= MAX_FULL_DIM
    auto = build_prior("data_gaussian", images, **base, max_full_dim=100)
    assert isinstance(auto, LowRankGaussianPrior) and auto.rank == min(DEFAULT_RANK, 192)
    assert build_prior("data_gaussian", images, **base, rank=8).rank == 8
    with pytest.raises(ValueError, match="rank"):
        build_prior("data_gaussian", images, **base, rank=-2)
    assert MAX_FULL_DIM >= 3 * 64 * 64 > 3 * 32 * 32 and 3 * 128 * 128 > MAX_FULL_DIM


def test_fitted_priors_are_cached_by_dataset_and_preprocessing(tmp_path, monkeypatch):
    digits = build_data("digits")
    params = {"rank": 10, "cache_dir": str(tmp_path)}
    first = build_prior("data_gaussian", digits, **params)
    entries = list(tmp_path.iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("digits-")
    key = json.loads((entries[0] / "key.json").read_text())
    assert key["data"]["dataset"] == "digits" and key["form"]["rank"] == 10

    def no_refit(*args, **kwargs):
        raise AssertionError("the cached prior should have been reused")

    monkeypatch.setattr(LowRankGaussianPrior, "fit", no_refit)
    again = build_prior("data_gaussian", digits, **params)
    assert torch.equal(again.components, first.components)
    # augmentation does not change the key (priors are fitted to clean images) ...
    build_prior("data_gaussian", build_data("digits", flip=True, dequantize=0.1), **params)
    monkeypatch.undo()
    # ... but a different split, preprocessing or rank does
    build_prior("data_gaussian", build_data("digits", split="test"), **params)
    build_prior("data_gaussian", digits, **{**params, "rank": 4})
    assert len(list(tmp_path.iterdir())) == 3
    # an entry whose key does not match is refitted, not trusted
    (entries[0] / "key.json").write_text(json.dumps({**key, "form": "tampered"}))
    refit = build_prior("data_gaussian", digits, **params)
    assert json.loads((entries[0] / "key.json").read_text()) == key
    assert math.isclose(refit.variance_kept(), first.variance_kept(), rel_tol=1e-5)


def test_unwritable_cache_is_reported_not_fatal(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(UserWarning, match="could not cache"):
        prior = build_prior("data_gaussian", build_data("digits"), cache_dir=str(blocker / "sub"))
    assert isinstance(prior, GaussianPrior) and prior.shape == (1, 8, 8)
