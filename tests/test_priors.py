"""Priors: sampling, the streaming fit of Eq. 8, and safe save/load."""

import pytest
import torch

from fdrl.priors import (
    DatasetPrior,
    GaussianPrior,
    StandardNormalPrior,
    UniformPrior,
    build_prior,
    load_prior,
)
from fdrl.data import ArrayData


def _correlated(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mix.T + torch.arange(d, dtype=torch.float64)


def test_streaming_fit_equals_direct_fit():
    x = _correlated(3000, 12)
    prior = GaussianPrior.fit(x.split(128))
    direct_cov = torch.cov(x.T, correction=0)
    torch.testing.assert_close(prior.mean.double(), x.mean(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(prior.covariance.double(), direct_cov, rtol=1e-5, atol=1e-5)


def test_fit_of_rank_deficient_data_uses_jitter_and_samples():
    x = torch.randn(50, 3, dtype=torch.float64) @ torch.randn(3, 10, dtype=torch.float64)  # rank 3 in 10-D
    prior = GaussianPrior.fit(x.split(16))
    assert prior.jitter > 0
    assert torch.isfinite(prior.sample(100)).all()


def test_gaussian_samples_match_mean_and_covariance():
    x = _correlated(5000, 4)
    prior = GaussianPrior.fit([x])
    s = prior.sample(200_000, torch.Generator().manual_seed(0)).double()
    torch.testing.assert_close(s.mean(0), x.mean(0), atol=0.05, rtol=0.02)
    torch.testing.assert_close(torch.cov(s.T), torch.cov(x.T), atol=0.1, rtol=0.03)


def test_clamped_gaussian_stays_in_range():
    prior = GaussianPrior(torch.zeros(6), 3 * torch.eye(6), shape=(1, 2, 3), clamp=(-1.0, 1.0))
    s = prior.sample(500)
    assert s.shape == (500, 1, 2, 3) and s.min() >= -1 and s.max() <= 1


def test_uniform_range_and_refusal():
    s = UniformPrior((3,), -2.0, 0.5).sample(10_000)
    assert s.min() >= -2.0 and s.max() <= 0.5 and abs(float(s.mean()) + 0.75) < 0.05
    with pytest.raises(ValueError):
        UniformPrior((3,), 1.0, 1.0)


def test_dataset_prior_draws_given_samples():
    source = torch.arange(20.0).reshape(10, 2)
    s = DatasetPrior(source).sample(50, torch.Generator().manual_seed(0))
    rows = {tuple(r.tolist()) for r in source}
    assert all(tuple(r.tolist()) in rows for r in s)


@pytest.mark.parametrize(
    "prior",
    [
        StandardNormalPrior((2,)),
        UniformPrior((2, 2), -1, 1),
        GaussianPrior(torch.tensor([1.0, 2.0]), torch.tensor([[1.0, 0.0], [0.5, 2.0]]), clamp=(-3.0, 3.0)),
        DatasetPrior(torch.randn(7, 3)),
    ],
)
def test_save_load_round_trip_without_pickle(prior, tmp_path):
    prior.save(tmp_path)
    assert {p.suffix for p in tmp_path.iterdir()} <= {".json", ".safetensors"}
    loaded = load_prior(tmp_path)
    assert type(loaded) is type(prior) and loaded.shape == prior.shape
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    torch.testing.assert_close(loaded.sample(5, g1), prior.sample(5, g2))


def test_build_data_gaussian_from_array_data():
    x = _correlated(1000, 3).float()
    prior = build_prior("data_gaussian", ArrayData(x), batch_size=100)
    torch.testing.assert_close(prior.mean, x.mean(0), atol=1e-4, rtol=1e-4)


def test_build_prior_refuses_unknown_names():
    with pytest.raises(ValueError, match="standard_normal"):
        build_prior("laplace", ArrayData(torch.randn(4, 2)))
