"""The Gaussian-mixture prior: EM recovers a known mixture, draws follow the stored parameters,
it saves and loads exactly, and it fits the rows of a table."""

import warnings

import numpy as np
import pytest
import torch

from fdrl.components import DataMixtureSpec
from fdrl.data.source import ArrayData
from fdrl.evaluate.heldout import gaussian_mixture_draws
from fdrl.priors import GaussianMixturePrior, GaussianPrior, build_prior, load_prior
from fdrl.schema import ConfigError

CENTRES = np.array([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]])
WEIGHTS = np.array([0.2, 0.3, 0.5])


def three_clusters(n: int = 1500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    which = rng.choice(3, size=n, p=WEIGHTS)
    return CENTRES[which] + rng.normal(size=(n, 2)) * np.array([1.0, 0.5])


def test_em_recovers_a_known_mixture():
    prior = GaussianMixturePrior.fit(torch.as_tensor(three_clusters()), components=3)
    order = np.argsort(prior.means[:, 0].numpy() + 0.1 * prior.means[:, 1].numpy())
    np.testing.assert_allclose(prior.means.numpy()[order], CENTRES[[0, 1, 2]], atol=0.15)
    np.testing.assert_allclose(prior.weights.numpy()[order], WEIGHTS, atol=0.04)
    covariances = (prior.scale_trils @ prior.scale_trils.transpose(1, 2)).numpy()
    for cov in covariances:
        np.testing.assert_allclose(cov, np.diag([1.0, 0.25]), atol=0.15)


def test_components_are_capped_by_rows():
    rows = torch.as_tensor(three_clusters(42))
    assert GaussianMixturePrior.fit(rows).components == 42 // 5
    assert GaussianMixturePrior.fit(rows, components=2).components == 2
    assert GaussianMixturePrior.fit(rows[:4]).components == 1


def test_components_are_capped_by_distinct_rows_and_em_does_not_warn():
    """A column of 7 codes has 7 clusters at most: asking EM for 10 would make it warn (and
    fit components to nothing)."""
    codes = torch.arange(7.0).repeat(40)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prior = GaussianMixturePrior.fit(codes)
    assert prior.components == 7
    assert sorted(prior.means.squeeze(1).round().tolist()) == list(range(7))
    assert gaussian_mixture_draws(codes, 50, seed=0).shape == (50, 1)  # the report's baseline too


def test_discrete_and_repeated_rows_still_fit():
    # a 0/1 feature and rows repeated: components are singular until regularised
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 2, (200, 1)), rng.normal(size=(200, 2))], 1).repeat(3, 0)
    draws = GaussianMixturePrior.fit(torch.as_tensor(rows)).sample(2000, torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(draws).all())
    assert abs(float(draws[:, 0].mean()) - rows[:, 0].mean()) < 0.05


def test_draws_follow_the_weights_means_and_covariances():
    means = torch.tensor([[0.0, 0.0, 0.0], [30.0, -30.0, 5.0]])
    trils = torch.stack([torch.eye(3), torch.tensor([[2.0, 0, 0], [1.0, 1.0, 0], [0, 0, 0.5]])])
    prior = GaussianMixturePrior(torch.tensor([0.25, 0.75]), means, trils)
    x = prior.sample(40000, torch.Generator().manual_seed(0))
    second = x[:, 0] > 15
    assert abs(float(second.float().mean()) - 0.75) < 0.01
    np.testing.assert_allclose(x[second].mean(0).numpy(), means[1].numpy(), atol=0.05)
    np.testing.assert_allclose(torch.cov(x[second].T).numpy(), (trils[1] @ trils[1].T).numpy(), atol=0.1)
    np.testing.assert_allclose(torch.cov(x[~second].T).numpy(), np.eye(3), atol=0.05)


def test_saved_and_loaded_it_draws_the_same(tmp_path):
    prior = GaussianMixturePrior.fit(torch.as_tensor(three_clusters(300)), clamp=(-5.0, 5.0))
    prior.save(tmp_path)
    loaded = load_prior(tmp_path)
    assert isinstance(loaded, GaussianMixturePrior) and loaded.components == prior.components
    a = prior.sample(500, torch.Generator().manual_seed(3))
    assert torch.equal(a, loaded.sample(500, torch.Generator().manual_seed(3)))
    assert float(a.abs().max()) <= 5.0


def test_weights_that_do_not_sum_to_one_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixturePrior(torch.tensor([0.5, 0.6]), torch.zeros(2, 2), torch.eye(2).expand(2, 2, 2))


def test_built_from_a_table_it_fits_the_training_rows(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, three_clusters(500).astype(np.float32))
    data = ArrayData.from_file(path, test_fraction=0.2, standardize=True)
    prior = build_prior("data_mixture", data, components=3)
    assert isinstance(prior, GaussianMixturePrior) and prior.components == 3
    draws = prior.sample(4000, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(draws.mean(0).numpy(), data.samples.mean(0).numpy(), atol=0.06)
    np.testing.assert_allclose(torch.cov(draws.T).numpy(), torch.cov(data.samples.T).numpy(), atol=0.08)


def test_options_are_checked():
    with pytest.raises(ConfigError, match="components"):
        DataMixtureSpec(components=0)
    # wider than max_dim: the one Gaussian of Eq. 8 (a full covariance per component costs too much)
    wide = build_prior("data_mixture", ArrayData(torch.randn(50, 600)))
    assert isinstance(wide, GaussianPrior) and wide.dim == 600


def test_a_table_run_starts_from_the_mixture_and_info_says_so(tmp_path):
    import subprocess
    import sys

    import fdrl
    from fdrl import FDRL

    rows = three_clusters(200).astype(np.float32)
    fdrl.fit(rows, out=tmp_path / "run", progress=False, **{"train.steps": 5, "train.eval_n": 50})
    loaded = FDRL.load(tmp_path / "run")
    assert isinstance(loaded.prior, GaussianMixturePrior) and loaded.prior.components == 10
    info = lambda: subprocess.run([sys.executable, "-m", "fdrl.cli", "info", str(tmp_path / "run")],  # noqa: E731
                                  capture_output=True, text=True, timeout=300)
    done = info()
    assert done.returncode == 0, done.stderr
    assert "prior     data_mixture: gaussian_mixture, 10 components" in done.stdout.splitlines()
    (tmp_path / "run" / "prior.json").write_text("{not json")
    done = info()
    assert done.returncode == 0 and "prior     data_mixture (prior.json is unreadable)" in done.stdout
