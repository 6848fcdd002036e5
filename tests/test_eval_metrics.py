"""Frechet distance, feature statistics and their cache, vector metrics and the registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from PIL import Image

from fdrl.evaluate import (
    METRICS,
    FeatureStats,
    cached_stats,
    energy_distance,
    feature_stats,
    frechet_distance,
    frechet_feature_distance,
    get_metric,
    mmd2,
    sliced_wasserstein,
    to_uint8_rgb,
)
from fdrl.evaluate.frechet import cache_path
from fdrl.evaluate.metrics import _wasserstein_1d
from fdrl.image_io import save_grid


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(0), np.cov(x, rowvar=False)


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_matches_scipy_sqrtm(seed):
    rng = np.random.default_rng(seed)
    d = 32
    x = rng.standard_normal((400, d)) @ rng.standard_normal((d, d))
    y = rng.standard_normal((300, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d)
    (mu1, s1), (mu2, s2) = _stats(x), _stats(y)
    expected = _scipy_frechet(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1), mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_frechet_is_exact_for_singular_covariances():
    """n < d: tr sqrt(S1 S2) is the nuclear norm of Xc Yc^T / sqrt((n-1)(m-1)), an exact reference
    computed from the small n x m matrix of centred samples."""
    rng = np.random.default_rng(3)
    d, n, m = 300, 12, 15
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d)
    y = rng.standard_normal((m, d)) * rng.uniform(0.5, 2.0, d) + 0.1
    (mu1, s1), (mu2, s2) = _stats(x), _stats(y)
    xc, yc = x - mu1, y - mu2
    nuclear = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1))
    expected = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * nuclear
    value = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(value)
    assert value == pytest.approx(expected, rel=1e-9)
    # a set against itself is 0 up to round-off, not sqrt(round-off) summed over d
    assert frechet_distance(mu1, s1, mu1, s1) <= 1e-9 * np.trace(s1)
    # rank-0 covariances reduce to the squared mean difference
    zero = np.zeros((d, d))
    assert frechet_distance(mu1, zero, mu2, s2) == pytest.approx((mu1 - mu2) @ (mu1 - mu2) + np.trace(s2))


def test_frechet_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_stats_roundtrip_and_streaming(tmp_path):
    x = torch.randn(257, 5, dtype=torch.float64)
    stats = FeatureStats.from_batches(x.split(50), key={"dataset": {"name": "toy"}})
    assert stats.n == 257
    torch.testing.assert_close(stats.mean, x.mean(0))
    torch.testing.assert_close(stats.cov, torch.from_numpy(np.cov(x.numpy(), rowvar=False)))
    path = stats.save(tmp_path / "s.safetensors")
    assert json.loads(path.with_suffix(".json").read_text())["n"] == 257
    loaded = FeatureStats.load(path)
    assert torch.equal(loaded.mean, stats.mean) and torch.equal(loaded.cov, stats.cov) and loaded.key == stats.key
    with pytest.raises(FileNotFoundError):
        FeatureStats.load(tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats.from_batches([torch.randn(1, 5)])


def test_stats_cache_reuses_only_under_the_same_key(tmp_path):
    calls = []

    def compute(value: float):
        def run() -> FeatureStats:
            calls.append(value)
            return FeatureStats(torch.full((2,), value, dtype=torch.float64), torch.eye(2, dtype=torch.float64), 10)

        return run

    key = {"dataset": {"name": "cifar10", "split": "train"}, "preprocessing": "png-uint8", "extractor": {"w": "a"}}
    first = cached_stats(tmp_path, key, compute(1.0))
    again = cached_stats(tmp_path, dict(key), compute(2.0))
    assert calls == [1.0] and torch.equal(again.mean, first.mean) and again.key == key
    assert cache_path(tmp_path, key).name.startswith("cifar10-")

    # any change of dataset, preprocessing or extractor is a different key: recompute
    for changed in ({**key, "extractor": {"w": "b"}}, {**key, "preprocessing": "other"},
                    {**key, "dataset": {"name": "cifar10", "split": "test"}}):
        assert float(cached_stats(tmp_path, changed, compute(3.0)).mean[0]) == 3.0
    assert calls == [1.0, 3.0, 3.0, 3.0]

    # an entry whose stored key does not match (edited, or a hash collision) is recomputed
    meta = cache_path(tmp_path, key).with_suffix(".json")
    meta.write_text(json.dumps({"n": 10, "key": {**key, "extractor": {"w": "z"}}}))
    assert float(cached_stats(tmp_path, key, compute(4.0)).mean[0]) == 4.0
    meta.write_text("not json")
    assert float(cached_stats(tmp_path, key, compute(5.0)).mean[0]) == 5.0
    cache_path(tmp_path, key).write_bytes(b"truncated")
    assert float(cached_stats(tmp_path, key, compute(6.0)).mean[0]) == 6.0
    assert float(cached_stats(tmp_path, key, compute(7.0)).mean[0]) == 6.0


def test_frechet_feature_distance_with_any_extractor():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 6))
    a, b = torch.randn(300, 1, 4, 4), torch.randn(300, 1, 4, 4)
    shifted = b + 1.0
    same = frechet_feature_distance(a, b, net, batch_size=64)
    far = frechet_feature_distance(a, shifted, net, batch_size=64)
    assert 0 <= same < far
    # reference statistics and a plain callable give the same value as raw inputs and the module
    ref = feature_stats(b, net, batch_size=100)
    assert frechet_feature_distance(a, ref, lambda x: net(x)) == pytest.approx(same, rel=1e-9)
    assert METRICS["classifier_fd"](a, b, extractor=net) == pytest.approx(same, rel=1e-9)

    # statistics of another extractor are refused, not silently compared
    net.identity = {"name": "digits", "weights": "sha256:1"}
    foreign = FeatureStats(ref.mean, ref.cov, ref.n, {"extractor": {"name": "digits", "weights": "sha256:2"}})
    with pytest.raises(ValueError, match="extractor"):
        frechet_feature_distance(a, foreign, net)


def test_mmd_and_sliced_wasserstein_properties():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(600, 3, generator=g), torch.randn(500, 3, generator=g)
    near, far = y + 0.5, y + 2.0
    for metric in (mmd2, sliced_wasserstein, energy_distance):
        same, shifted, shifted_more = metric(x, y), metric(x, near), metric(x, far)
        assert abs(same) < shifted < shifted_more, metric.__name__
    assert abs(mmd2(x, y)) < 5e-3
    assert mmd2(x, x.clone()) == pytest.approx(mmd2(x, x), abs=1e-12)
    assert sliced_wasserstein(x, x) == pytest.approx(0.0, abs=1e-12)
    # the projections are fixed by the seed
    assert sliced_wasserstein(x, far, seed=1) == sliced_wasserstein(x, far, seed=1)
    # a pure shift by t moves every 1-D projection by <t, theta>: SW_2^2 = |t|^2 / d exactly
    t = torch.tensor([1.0, -2.0, 0.5])
    sw = sliced_wasserstein(x, x + t, n_projections=4000)
    assert sw**2 == pytest.approx(float(t @ t) / 3, rel=0.05)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd2(torch.zeros(5, 2), torch.zeros(5, 2))


def test_one_dimensional_wasserstein_is_exact_for_unequal_sizes():
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(37), rng.standard_normal(23) + 0.3
    w1 = _wasserstein_1d(torch.from_numpy(u)[:, None], torch.from_numpy(v)[:, None], p=1.0)
    assert float(w1[0]) == pytest.approx(scipy.stats.wasserstein_distance(u, v), rel=1e-12)


def test_registry():
    assert {"energy", "mmd", "sliced_wasserstein", "c2st", "fid", "classifier_fd"} <= set(METRICS)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + 3
    for name in ("energy", "mmd", "sliced_wasserstein", "c2st"):
        assert isinstance(get_metric(name)(x, y), float)
    assert METRICS["c2st"](x, y) > 0.9
    with pytest.raises(ValueError, match="unknown metric 'nope'; choose one of: energy"):
        get_metric("nope")


def test_uint8_conversion_matches_a_saved_png(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, 9, 7, generator=g) * 2.4 - 1.2  # values beyond [-1, 1] are clamped
    images[0, 0, 0, :5] = torch.tensor([-1.0, 1.0, 0.0, 1 / 255, -1 / 255])
    save_grid(images, tmp_path / "one.png")
    png = torch.from_numpy(np.array(Image.open(tmp_path / "one.png"))).permute(2, 0, 1)
    converted = to_uint8_rgb(images)
    assert converted.dtype == torch.uint8 and torch.equal(converted[0], png)
    grey = to_uint8_rgb(images[:, :1])
    assert grey.shape == (1, 3, 9, 7) and torch.equal(grey[:, 0], grey[:, 2])
    assert torch.equal(to_uint8_rgb(images[:, 0]), grey)
    assert torch.equal(to_uint8_rgb(converted), converted)
    with pytest.raises(ValueError, match="images"):
        to_uint8_rgb(torch.zeros(2, 5))


def test_a_bound_metric_scores_a_finite_dataset_against_distinct_rows():
    """Fresh draws of the data's own distribution score C2ST about 0.5 against a finite dataset
    bound with n above its size: the reference is its distinct rows. Drawn with replacement (2000
    from 1200 rows), rows repeat, the classifier learns the repeated points, and the same samples
    scored 0.66 (against 0.51)."""
    from fdrl.data.source import ArrayData
    from fdrl.evaluate.binding import bind_metric

    g = torch.Generator().manual_seed(0)
    mix = torch.randn(4, 4, generator=g)
    rows, fresh = torch.randn(1200, 4, generator=g) @ mix, torch.randn(1200, 4, generator=g) @ mix
    bound = bind_metric("c2st", ArrayData(rows), {"name": "rows"}, n=2000)
    assert bound.reference_n == 1200 and torch.unique(bound.reference, dim=0).shape[0] == 1200
    assert abs(bound(fresh) - 0.5) < 0.05
