"""Small and collinear tables: data-batch smoothing against copying, the particle-ratio guard
against runaway flows, and what the vectors preset turns on (docs/tables-quality.md)."""

import json
import math

import numpy as np
import pytest
import torch

import fdrl.train
from fdrl import Trainer, load_config
from fdrl.config import ConfigError
from fdrl.guard import DivergenceGuard, TrainingError
from fdrl.objectives import get_objective
from fdrl.evaluate.heldout import memorisation
from fdrl.smoothing import BatchSmoother

TINY = ["flow.steps=3", "flow.refine_steps=1", "train.batch_size=32", "model.params.width=16",
        "train.steps=4", "train.checkpoint_every=2", "train.sample_every=1000", "train.eval_n=100"]


def _events(run, name):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("event") == name]


# -- smoothing -----------------------------------------------------------------------------------
def test_the_jitter_keeps_each_features_mean_and_variance_and_moves_every_row():
    rows = torch.randn(300, 5, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 3, 0.1, 10, 1]) + 7
    smoother = BatchSmoother.fit(rows, 1.0)
    many = rows.repeat(200, 1)
    out = smoother(many, torch.Generator().manual_seed(1))
    assert torch.allclose(out.mean(0), rows.mean(0), atol=0.02 * rows.std(0).max())
    assert torch.allclose(out.std(0), rows.std(0, correction=0), rtol=0.02)
    assert (out - many).norm(dim=1).min() > 0  # no row passes through unchanged
    assert BatchSmoother.fit(rows, 0.0)(rows) is rows
    rows[:, 2] = 4.0  # a constant feature stays constant
    assert torch.equal(BatchSmoother.fit(rows, 1.0)(rows, torch.Generator().manual_seed(2))[:, 2], rows[:, 2])


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_the_jitter_keeps_the_share_of_each_correlation_it_is_told_to(weight):
    """The jitter's covariance is h^2 (w R + (1 - w) I) in z-scores, R the rows' correlation
    matrix: a correlation rho comes out as rho (1 + w h^2) / (1 + h^2); w = 1 keeps it exactly."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(400, 2, generator=g) @ torch.tensor([[1.0, 0.9], [0.0, 0.436]]) * torch.tensor([2.0, 0.5])
    smoother = BatchSmoother.fit(rows, 20.0, correlation=weight)
    h = smoother.bandwidth
    assert h > 0.5  # large enough to tell the three weights apart
    out = smoother(rows.repeat(500, 1), g)
    rho = float(torch.corrcoef(rows.T)[0, 1])
    assert float(torch.corrcoef(out.T)[0, 1]) == pytest.approx(rho * (1 + weight * h ** 2) / (1 + h ** 2), abs=0.01)
    assert torch.allclose(out.std(0), rows.std(0, correction=0), rtol=0.02)  # every variance kept


def _clusters(n, generator, dim=6, centres=5):
    means = torch.randn(centres, dim, generator=torch.Generator().manual_seed(7)) * 3
    return means[torch.randint(centres, (n,), generator=generator)] + torch.randn(n, dim, generator=generator)


def test_the_bandwidth_is_the_least_that_stops_the_smoothed_bootstrap_copying():
    """Judged on rows the calibration never saw, by the held-out report's own near-copy rule:
    the calibrated jitter copies about as often as it was set to (5%), half of it far more."""
    g = torch.Generator().manual_seed(0)
    rows, fresh = _clusters(300, g), _clusters(300, g)
    h = BatchSmoother.fit(rows, 1.0).bandwidth
    draws = rows[torch.randint(300, (3000,), generator=g)]

    def copies(bandwidth):
        smoother = BatchSmoother.fit(rows, 1.0)
        smoother.bandwidth = bandwidth
        return memorisation(smoother(draws, torch.Generator().manual_seed(1)), rows, fresh)["share_closer_than_heldout_1pct"]

    assert copies(h) < 0.12
    assert copies(h / 2) > 0.3
    assert BatchSmoother.fit(rows, 0.5).bandwidth == pytest.approx(h / 2)


def test_copies_judged_in_a_scaled_space_set_the_bandwidth_there():
    """A principal space's coefficients are judged in pixels, each by its standard deviation: the
    same scale on every feature changes nothing (distances and threshold scale alike); a scale on
    two of six features judges copies by those two, where rows are spaced more closely for the
    jitter's length (2-D against 6-D), so less jitter is needed; it still copies about as often
    as set (5%) by the report's rule on the scaled rows."""
    g = torch.Generator().manual_seed(0)
    rows, fresh = _clusters(300, g), _clusters(300, g)
    plain = BatchSmoother.fit(rows, 1.0)
    assert BatchSmoother.fit(rows, 1.0, copy_scale=torch.full((6,), 3.0)).bandwidth == pytest.approx(plain.bandwidth)
    scale = torch.tensor([10.0, 10.0, 0.1, 0.1, 0.1, 0.1])
    scaled = BatchSmoother.fit(rows, 1.0, copy_scale=scale)
    assert scaled.bandwidth < plain.bandwidth / 2
    draws = rows[torch.randint(300, (3000,), generator=g)]
    jittered = scaled(draws, torch.Generator().manual_seed(1))
    copies = memorisation(jittered * scale, rows * scale, fresh * scale)["share_closer_than_heldout_1pct"]
    assert copies < 0.12


def test_the_bandwidth_shrinks_with_more_rows():
    g = torch.Generator().manual_seed(0)
    few, many = torch.randn(100, 2, generator=g), torch.randn(5000, 2, generator=g)
    # the rows' spacing in 2-D shrinks as n^(-1/2): 50x the rows, a bandwidth at least 3x smaller
    assert BatchSmoother.fit(many, 1.0).bandwidth < BatchSmoother.fit(few, 1.0).bandwidth / 3
    repeated = torch.cat([few, few[:50]])  # repeated rows do not shrink it to nothing
    assert BatchSmoother.fit(repeated, 1.0).bandwidth > 0.5 * BatchSmoother.fit(few, 1.0).bandwidth


def test_training_sees_jittered_rows_not_the_rows(tmp_path, monkeypatch):
    rows = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    np.save(tmp_path / "t.npy", rows)
    seen = []
    real = fdrl.train.training_step

    def spy(net, objective, optimizer, x_data, *args, **kwargs):
        seen.append(x_data.clone())
        return real(net, objective, optimizer, x_data, *args, **kwargs)

    monkeypatch.setattr(fdrl.train, "training_step", spy)
    trainer = Trainer(load_config(str(tmp_path / "t.npy"), [*TINY, "train.data_smoothing=1.0"]), tmp_path / "run",
                      progress=False)
    trainer.fit()
    train_rows = trainer.data.samples
    batch = torch.cat(seen)
    nearest = torch.cdist(batch, train_rows).min(1).values
    assert nearest.min() > 1e-3 and trainer.smoother.bandwidth > 0.05
    assert _events(tmp_path / "run", "data_smoothing") == [{"event": "data_smoothing",
                                                            "bandwidth": trainer.smoother.bandwidth}]


def test_smoothing_data_that_is_not_a_table_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^train.data_smoothing=1 needs a finite table of vectors.*"
                                          r"set train.data_smoothing=0$"):
        Trainer(load_config("swissroll", [*TINY, "train.data_smoothing=1"]), tmp_path / "run", progress=False)


# -- the particle-ratio guard ----------------------------------------------------------------------
def _guard(bound):
    return DivergenceGuard(load_config("swissroll", [f"train.guard_particle_ratio={bound}"]).train, None)


def test_the_guard_flags_a_runaway_mean_ratio_on_particles_far_below_guard_max_ratio():
    objective, net = get_objective("lsif-chi2"), torch.nn.Linear(1, 1)
    particles, data = torch.full((8, 1), 500.0), torch.ones(8, 1)
    outputs = torch.cat([data, particles])
    problem = _guard(100).problem(torch.tensor(-1.0), outputs, net, objective, particles)
    assert problem and "train.guard_particle_ratio=100" in problem and "500" in problem
    assert _guard(1000).problem(torch.tensor(-1.0), outputs, net, objective, particles) is None
    assert _guard(0).problem(torch.tensor(-1.0), outputs, net, objective, particles) is None  # 0: no bound


def test_a_run_whose_particle_ratio_runs_away_stops_with_the_reason(tmp_path):
    trainer = Trainer(load_config("swissroll", [*TINY, "train.guard_particle_ratio=100", "train.guard_retries=1"]),
                      tmp_path / "run", progress=False)
    trainer.net.register_forward_hook(lambda module, args, out: out + 1e3)  # r ~ 1000 everywhere
    with pytest.raises(TrainingError, match=r"flowed particles is 1e\+03 > train.guard_particle_ratio=100"):
        trainer.fit()
    assert [e["event"] for e in _events(tmp_path / "run", "rollback")] == ["rollback"]


# -- the vectors preset ------------------------------------------------------------------------------
def test_the_vectors_preset_smooths_small_tables_and_bounds_the_particle_ratio(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((10, 2), np.float32))
    train = load_config(str(tmp_path / "t.npy")).train
    assert train.data_smoothing > 0 and 0 < train.guard_particle_ratio < 1e4


@pytest.mark.slow
def test_a_collinear_table_trains_to_samples_inside_the_data(tmp_path):
    """160 rows of 3 factors mixed into 12 columns (+1e-3 noise), the vectors defaults: without
    the smoothing the ratio on particles ran away and samples reached 7000 standard deviations."""
    from fdrl import fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 12)) + 1e-3 * rng.normal(size=(200, 12))
    model = fit(x.astype(np.float32), out=tmp_path / "run", progress=False)
    z = (model.sample(1000, seed=1) - x.mean(0)) / x.std(0)
    assert np.abs(z).max() < 2 * np.abs((x - x.mean(0)) / x.std(0)).max()
    assert model.metrics["memorisation"]["share_closer_than_heldout_1pct"] < 0.05
