"""Marginal calibration of a table's samples: the map takes the sampler's marginals onto the
training rows', keeps every sample's rank, is stored in the run and applied to the sampler it was
fitted to only."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import fdrl
from fdrl import FDRL
from fdrl.data.columns import TableCodec
from fdrl.data.marginals import MARGINALS_FILE, TABLE_GAP, MarginalMap


def test_the_map_takes_one_marginal_onto_the_other_and_keeps_ranks():
    g = torch.Generator().manual_seed(0)
    particles = torch.randn(20000, 2, generator=g)
    rows = torch.stack([torch.empty(20000).exponential_(1.0, generator=g), torch.randn(20000, generator=g)], 1)
    marginals = MarginalMap.fit(particles, rows, features=[0], steps=60)
    fresh = torch.randn(20000, 2, generator=g)
    mapped = marginals(fresh)
    exponential = np.sort(mapped[:, 0].numpy())
    empirical = (np.arange(20000) + 0.5) / 20000
    assert np.abs(empirical - (1 - np.exp(-exponential))).max() < 0.02  # Kolmogorov-Smirnov: exponential
    order = torch.argsort(fresh[:, 0])
    assert bool((mapped[order, 0].diff() >= 0).all())  # monotone: every sample keeps its rank
    halfway = marginals.weakened(0.5)(fresh)
    torch.testing.assert_close(halfway[:, 0], (fresh[:, 0] + mapped[:, 0]) / 2)
    assert torch.equal(mapped[:, 1], fresh[:, 1])  # features not listed are left alone
    assert float(mapped[:, 0].min()) >= float(rows[:, 0].min())  # nothing beyond the rows' range


def test_a_few_rows_map_an_exact_sampler_onto_their_own_spread_not_a_narrower_one():
    """128 rows and a sampler that already draws their distribution: the map must leave its
    spread alone. Matching the sampler's extremes over 4000 particles to the rows' extremes
    squeezed the tails (standard deviation 0.93 of the population's)."""
    g = torch.Generator().manual_seed(0)
    mapped, rows_sd = [], []
    for _ in range(40):
        rows = torch.randn(128, 1, generator=g)
        marginals = MarginalMap.fit(torch.randn(4000, 1, generator=g), rows, [0], steps=60)
        mapped.append(float(marginals(torch.randn(20000, 1, generator=g)).std()))
        rows_sd.append(float(rows.std()))
    assert abs(np.mean(mapped) - np.mean(rows_sd)) < 0.015 and abs(np.mean(mapped) - 1) < 0.02


def test_a_zero_inflated_integer_column_gets_its_share_of_zeros_back():
    rng = np.random.default_rng(0)
    rows = np.where(rng.random(5000) < 0.9, 0, rng.integers(1, 6, 5000)).astype(np.float32)[:, None]
    # a sampler that blurs the point mass: the rows plus noise, as a flow with errors leaves them
    particles = torch.as_tensor(rows + rng.normal(0, 0.8, rows.shape).astype(np.float32))
    marginals = MarginalMap.fit(particles, torch.as_tensor(rows), [0], steps=60)
    fresh = torch.as_tensor(rows + rng.normal(0, 0.8, rows.shape).astype(np.float32))
    blurred_zeros = float((fresh.round().clamp(0, 5) == 0).float().mean())
    mapped_zeros = float((marginals(fresh).round() == 0).float().mean())
    assert blurred_zeros < 0.7 and abs(mapped_zeros - 0.9) < 0.02


def test_a_table_column_is_mapped_only_when_its_sampled_marginal_is_off_by_more_than_noise():
    """The gate on a table's columns: a sampler that already draws a column's distribution should
    mostly leave it unmapped (mapping it adds the noise of a few hundred rows' quantiles); one 1.3
    times too wide, or one that blurs a point mass, is mapped every time."""
    g = torch.Generator().manual_seed(0)
    kept = np.zeros(3)
    for n in [160, 400] * 20:
        rows, particles = torch.randn(n, 3, generator=g), torch.randn(4000, 3, generator=g)
        particles[:, 1] *= 1.3
        rows[:, 2], particles[:, 2] = (rows[:, 2] > 0.3).float(), (particles[:, 2] > 0.3).float()
        particles[:, 2] += 0.2 * torch.randn(4000, generator=g)
        marginals = MarginalMap.fit(particles, rows, [0, 1, 2], steps=60, min_gap=TABLE_GAP)
        kept[marginals.features] += 1
        assert marginals.source.shape[0] == len(marginals.features)
    assert kept[0] <= 12 and kept[1] >= 39 and kept[2] == 40, kept
    everything = MarginalMap.fit(particles, rows, [0, 1, 2], steps=60)
    assert everything.features == [0, 1, 2]


def test_saved_and_loaded_it_maps_the_same_and_a_damaged_file_is_named(tmp_path):
    g = torch.Generator().manual_seed(1)
    marginals = MarginalMap.fit(torch.randn(500, 3, generator=g), torch.rand(500, 3, generator=g), [0, 2], steps=12)
    marginals.save(tmp_path)
    loaded = MarginalMap.load(tmp_path)
    x = torch.randn(100, 3, generator=g)
    assert loaded.steps == 12 and loaded.features == [0, 2] and torch.equal(loaded(x), marginals(x))
    assert MarginalMap.load(tmp_path / "nowhere") is None
    marginals.weakened(0.25).save(tmp_path)
    assert MarginalMap.load(tmp_path).strength == 0.25
    with pytest.raises(ValueError, match="strength"):
        marginals.weakened(0.0)
    (tmp_path / MARGINALS_FILE).write_bytes((tmp_path / MARGINALS_FILE).read_bytes()[:-7])
    with pytest.raises(ValueError, match="marginals.safetensors' is damaged"):
        MarginalMap.load(tmp_path)
    mismatched = MarginalMap([0], torch.zeros(1, 2), torch.zeros(1, 2), steps=1)
    mismatched.target = torch.zeros(1, 3)
    mismatched.save(tmp_path)
    with pytest.raises(ValueError, match="damaged.*shape"):
        MarginalMap.load(tmp_path)


def test_the_numeric_features_of_a_codec():
    frame = pd.DataFrame({"x": np.linspace(0.1, 2.0, 20), "label": ["a", "b", "c", "a"] * 5,
                          "n": list(range(20)), "k": [1.0] * 20})
    codec = TableCodec.fit(frame)
    # x continuous (feature 0), label one-hot (features 1-3), n integer (feature 4), k constant (none)
    assert codec.numeric_features == [0, 4]


def test_a_table_run_calibrates_its_sampler_and_only_that_one(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    table = pd.DataFrame({"count": np.where(rng.random(n) < 0.8, 0, rng.integers(1, 30, n)),  # 30 levels: integer
                          "value": rng.gamma(2.0, 1.0, n), "group": rng.choice(["u", "v"], n)})
    options = {"train.steps": 150, "data.test_fraction": 0, "train.eval_n": 200}
    model = fdrl.fit(table, out=tmp_path / "run", progress=False, **options)
    samples = model.sample(2000, seed=1)
    assert abs(float((samples["count"] == 0).mean()) - float((table["count"] == 0).mean())) < 0.03
    assert abs(float(samples["value"].median()) - float(table["value"].median())) < 0.15
    loaded = FDRL.load(tmp_path / "run")
    assert loaded.marginals is not None and loaded.marginals.steps == loaded.sampling_steps
    assert loaded.sample(300, seed=2).equals(model.sample(300, seed=2))
    # another number of flow steps is another sampler: left unmapped
    unmapped = FDRL.load(tmp_path / "run")
    unmapped.marginals = None
    assert loaded.sample(300, seed=2, steps=5).equals(unmapped.sample(300, seed=2, steps=5))
    assert not loaded.sample(300, seed=2).equals(unmapped.sample(300, seed=2))
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (event,) = [e for e in events if e.get("event") == "marginals"]
    assert event["features"] + event["features_within_noise"] == 2
    assert event["strength"] > 0 and event["near_copies"] <= 0.05
    assert loaded.codec.numeric_features[0] in loaded.marginals.features  # the zero-inflated count is mapped

    fdrl.fit(table, out=tmp_path / "off", progress=False, **options, **{"train.calibrate_marginals": False})
    assert not (tmp_path / "off" / MARGINALS_FILE).exists() and FDRL.load(tmp_path / "off").marginals is None


def test_near_copies_are_judged_by_the_reports_rule():
    from fdrl.smoothing import near_copy_share

    g = torch.Generator().manual_seed(0)
    rows = torch.randn(400, 3, generator=g)
    assert near_copy_share(rows[:200] + 1e-4, rows, g) > 0.7  # the rows themselves (not when in the held-out fifth)
    assert near_copy_share(torch.randn(2000, 3, generator=g), rows, g) < 0.04  # fresh draws: about 1%
    assert near_copy_share(torch.randn(10, 3), rows[:1].repeat(5, 1), g) == 0.0  # one distinct row: no rule


def test_an_image_run_gets_its_backgrounds_back(tmp_path):
    """Pixels of digits are a point mass at the background (-1) in most images; a briefly trained
    flow leaves them blurred around it, and the map puts them back on the training images' share."""
    from fdrl.config import load_config, load_raw
    from fdrl.data import build_image_data
    from fdrl.train import Trainer

    config = load_config(load_raw("digits"), ["train.steps=150", "train.calibrate_marginals=true", "device=cpu"])
    model = Trainer(config, tmp_path / "run", progress=False).fit()
    train = torch.cat(list(build_image_data("digits", split="train").iter_batches(2000)))
    background = float((train == -1).float().mean())
    samples = model.sample(2000, seed=1)
    assert samples.shape == (2000, 1, 8, 8) and model.marginals.features == list(range(64))
    assert abs(float((samples == -1).float().mean()) - background) < 0.03
    plain = FDRL.load(tmp_path / "run")
    plain.marginals = None
    assert float((plain.sample(2000, seed=1) == -1).float().mean()) < background - 0.2
    assert torch.equal(FDRL.load(tmp_path / "run").sample(50, seed=3), model.sample(50, seed=3))
