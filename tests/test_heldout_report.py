"""The held-out report: uncertainties, small-set C2ST, the verdict, memorisation with duplicated
rows, per-column table scores, and the printed report (also of old metrics.json files)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from fdrl.cli import main
from fdrl.config import DataComponent, load_config
from fdrl.data.source import ArrayData
from fdrl.evaluate.heldout import evaluate_heldout, fresh_near_copy_share, heldout_report, memorisation
from fdrl.evaluate.metrics import c2st_accuracy, energy_distance
from fdrl.evaluate.tabular import column_shapes, ks_statistic, pair_trends
from fdrl.evaluate.uncertainty import energy_distance_se, wilson_interval
from fdrl.report_text import FAILED, report_lines, verdict


def _normal(n, d, seed, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


# uncertainty -------------------------------------------------------------------------------


def test_wilson_interval_matches_the_formula_and_stays_inside_0_1():
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = wilson_interval(0, 10)  # no successes: not the zero-width interval of the normal approximation
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0, 0)


def test_energy_se_is_the_two_sample_jackknife():
    x, y = _normal(20, 3, 0), _normal(17, 3, 1, shift=0.5)
    value, se = energy_distance_se(x, y)
    assert value == pytest.approx(energy_distance(x, y), abs=1e-10)

    def jackknife_variance(values):
        values = np.array(values)
        return (len(values) - 1) / len(values) * ((values - values.mean()) ** 2).sum()

    without_x = [energy_distance(torch.cat([x[:i], x[i + 1:]]), y) for i in range(20)]
    without_y = [energy_distance(x, torch.cat([y[:j], y[j + 1:]])) for j in range(17)]
    assert se == pytest.approx(math.sqrt(jackknife_variance(without_x) + jackknife_variance(without_y)), rel=1e-8)


def test_energy_interval_covers_zero_for_equal_distributions():
    covered = 0
    for seed in range(50):
        value, se = energy_distance_se(_normal(100, 2, 2 * seed), _normal(100, 2, 2 * seed + 1))
        covered += abs(value) <= 1.96 * se
    assert covered >= 45


def test_energy_se_matches_the_spread_over_seeds_and_shrinks_like_one_over_root_m():
    """For different distributions (a non-degenerate statistic): the standard error is the
    spread of the estimate over repeated samples, and four times the points halve it."""
    def spread_and_se(m):
        runs = [energy_distance_se(_normal(m, 2, 2 * s), _normal(m, 2, 2 * s + 1, shift=0.7)) for s in range(30)]
        return np.std([v for v, _ in runs]), np.mean([se for _, se in runs])

    spread, se = spread_and_se(100)
    assert 0.7 < se / spread < 1.5
    _, se_large = spread_and_se(400)
    assert 0.4 < se_large / se < 0.6


# C2ST on small sets --------------------------------------------------------------------------


def test_c2st_tells_20_separated_points_from_20_others_and_not_equal_ones():
    assert c2st_accuracy(_normal(20, 2, 0), _normal(20, 2, 1, shift=3.0)) > 0.8
    equal = [c2st_accuracy(_normal(20, 2, 2 * s), _normal(20, 2, 2 * s + 1), seed=s) for s in range(10)]
    assert abs(np.mean(equal) - 0.5) < 0.08


# the verdict -----------------------------------------------------------------------------------


def test_a_36_row_holdout_says_it_cannot_tell_models_apart():
    report = heldout_report(_normal(36, 3, 0), _normal(400, 3, 1), _normal(36, 3, 2), _normal(36, 3, 3),
                            heldout_rows=36)
    assert report["n"] == 36
    lo, hi = report["c2st_accuracy_ci"]
    assert hi - lo > 0.2  # 72 scored points
    too_few = [line for line in report["verdict"] if "too few to tell these models apart" in line]
    assert len(too_few) == 1 and too_few[0].startswith("the held-out part has 36 rows")
    assert "data.test_fraction" in too_few[0] and "data.params.test_path" in too_few[0]
    for scores in [report, report["floor"], *report["baselines"].values()]:
        assert scores["energy_distance_se"] > 0 and len(scores["c2st_accuracy_ci"]) == 2
    # fewer scored samples than held-out rows: the advice is to score more
    fewer = heldout_report(_normal(36, 3, 0), _normal(400, 3, 1), _normal(36, 3, 2), _normal(36, 3, 3),
                           heldout_rows=5000)
    assert any(line.startswith("only 36 samples were scored") and "train.eval_n" in line for line in fewer["verdict"])


def test_samples_worse_than_the_prior_get_the_failure_line_first():
    train, heldout, prior = _normal(600, 3, 1), _normal(200, 3, 2), _normal(200, 3, 3)
    diverged = heldout_report(_normal(200, 3, 0) * 5 + 20, train, heldout, prior, heldout_rows=200)
    assert diverged["verdict"][0].startswith(FAILED)
    assert "train.steps" in diverged["verdict"][0] and "flow.eta" in diverged["verdict"][0]
    good = heldout_report(_normal(200, 3, 0), train, heldout, prior * 3 + 1, heldout_rows=200)
    assert not any(line.startswith(FAILED) for line in good["verdict"])


# memorisation ----------------------------------------------------------------------------------


def _tripled(rows=400, d=3, seed=0):
    """Every row present three times, split 80/20 after shuffling (as a file's split is)."""
    data = _normal(rows, d, seed).repeat(3, 1)
    data = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))]
    cut = int(0.8 * len(data))
    return data[:cut], data[cut:]


def test_tripled_rows_give_finite_memorisation_and_the_right_verdicts():
    train, heldout = _tripled()
    g = torch.Generator().manual_seed(5)
    copier = train[torch.randint(len(train), (240,), generator=g)] + 1e-4 * torch.randn(240, 3, generator=g)
    fresh = _normal(240, 3, 7)
    for samples, copies in [(copier, True), (fresh, False)]:
        report = heldout_report(samples, train, heldout, _normal(240, 3, 9), heldout_rows=len(heldout))
        mem = report["memorisation"]
        assert mem["duplicated_training_rows"] > 500 and mem["heldout_rows_in_training"] > 200
        assert math.isfinite(mem["median_ratio"]) and 0 < mem["heldout_to_train_median"]
        assert (mem["share_closer_than_heldout_1pct"] > 0.9) == copies
        assert any(line.startswith("copies training rows") for line in report["verdict"]) == copies
        assert any(line.startswith("no sign of copying") for line in report["verdict"]) == (not copies)
        assert any("held-out rows also occur among the training rows" in line for line in report["verdict"])


def test_the_near_copy_share_of_fresh_data_is_the_stated_expectation_for_the_held_out_size():
    """With m held-out rows the 1% quantile sits near their smallest distance, so fresh rows
    score about 1 / (m + 1), not 1%: 4% on 30 rows. The report states that expectation and its
    99% bound, and does not call fresh samples a copier below that bound."""
    train = _normal(120, 3, 0)
    for m, n in ((10, 500), (30, 500), (300, 500), (30, 30)):
        shares = [memorisation(_normal(n, 3, 1000 + r), train, _normal(m, 3, 2000 + r)) for r in range(150)]
        measured = np.array([mem["share_closer_than_heldout_1pct"] for mem in shares])
        expected, bound = shares[0]["near_copy_share_fresh"], shares[0]["near_copy_share_fresh_q99"]
        assert (expected, bound) == fresh_near_copy_share(m, n)
        assert abs(measured.mean() - expected) < 0.25 * expected + 0.003, (m, n, measured.mean())
        assert (measured > bound).mean() < 0.04, (m, n)  # the 99% bound: 1 run in 100 above it
    assert fresh_near_copy_share(30, 30)[0] > 3 * fresh_near_copy_share(1000, 1000)[0]
    # a report on 30 held-out rows whose fresh samples happen to score 10-20% near-copies
    report = heldout_report(_normal(300, 3, 10), train, _normal(30, 3, 50), _normal(300, 3, 90), heldout_rows=30)
    assert any("4% expected for fresh data on 30 held-out rows, up to 20% by chance" in line
               for line in report["verdict"])
    unlucky = next(mem for mem in shares if 0.05 < mem["share_closer_than_heldout_1pct"] <= 0.2)
    words = verdict({**report, "memorisation": unlucky}, 30)
    assert not any(line.startswith("copies training rows") for line in words)
    assert any(line.startswith("copies training rows")
               for line in verdict({**report, "memorisation": {**unlucky, "share_closer_than_heldout_1pct": 0.3}}, 30))


def test_an_estimator_that_learnt_its_training_rows_is_named_in_the_verdict():
    """r = q~/p about 1 on every data row: no line; r low on the training rows themselves and
    high on every other row (held-out ones included): the verdict says so, with both means."""
    train, heldout = _normal(300, 3, 0), _normal(60, 3, 1)

    def remembering(x):
        on_a_training_row = torch.cdist(x, train, compute_mode="donot_use_mm_for_euclid_dist").min(1).values < 1e-6
        return torch.where(on_a_training_row, 0.5, 12.0)

    for ratio, learnt in ((lambda x: torch.ones(len(x)), False), (remembering, True)):
        report = heldout_report(_normal(60, 3, 2), train, heldout, _normal(60, 3, 3), heldout_rows=60, ratio=ratio)
        assert report["estimator_ratio"] == ({"train": 0.5, "heldout": 12.0} if learnt else {"train": 1.0, "heldout": 1.0})
        lines = [line for line in report["verdict"] if line.startswith("the estimator has learnt its training rows")]
        assert len(lines) == int(learnt)
        if learnt:
            assert "averages 12 on held-out rows against 0.5 on training rows" in lines[0]
        assert any(line.strip().startswith("estimator: mean r") for line in report_lines(report))


def test_dcr_share_is_a_half_for_fresh_draws_and_near_one_for_a_copier():
    train, heldout = _normal(1000, 4, 0), _normal(1000, 4, 1)
    fresh = memorisation(_normal(1000, 4, 2), train, heldout)
    copier = memorisation(train + 1e-4 * _normal(1000, 4, 3), train, heldout)
    assert abs(fresh["dcr_share"] - 0.5) < 0.05 and fresh["dcr_share_ci"][0] < 0.5 < fresh["dcr_share_ci"][1]
    assert copier["dcr_share"] > 0.95 and copier["dcr_share_copier"] == 1.0
    # against four times as many training rows, a copier is diluted to 0.5 + 0.5 k / N
    many = _normal(4000, 4, 4)
    diluted = memorisation(many[:1000] + 1e-4 * _normal(1000, 4, 5), many, heldout)
    assert diluted["dcr_share_copier"] == pytest.approx(0.625)
    assert abs(diluted["dcr_share"] - 0.625) < 0.06


# per-column scores -----------------------------------------------------------------------------


REAL = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "c": ["a", "a", "b", None], "y": [1.0, 2.0, 3.0, 5.0]})
SYNTH = pd.DataFrame({"x": [1.0, 2.0, 2.5, np.nan], "c": ["a", "b", "b", "b"], "y": [3.0, 2.0, 1.0, 0.0]})
KINDS = {"x": "continuous", "c": "categorical", "y": "integer"}


def test_column_shapes_by_hand():
    shapes = column_shapes(REAL, SYNTH, KINDS)
    # x: NaN dropped; the distribution functions differ most at 2.5 (2/4 of the real values, 3/3 synthetic)
    # c: real a .5 b .25 missing .25, synthetic a .25 b .75: TVD (.25 + .5 + .25) / 2
    # y: the synthetic values are the real ones shifted one rank down: largest gap 1/4
    assert shapes["per_column"] == pytest.approx({"x": 0.5, "c": 0.5, "y": 0.75})
    assert shapes["score"] == pytest.approx(1.75 / 3)
    assert ks_statistic(np.array([1.0, 2.0]), np.array([np.nan])) == 1.0


def test_pair_trends_by_hand():
    trends = pair_trends(REAL, SYNTH, KINDS)
    corr_real = np.corrcoef([1, 2, 3, 4], [1, 2, 3, 5])[0, 1]
    corr_synth = np.corrcoef([1, 2, 2.5], [3, 2, 1])[0, 1]  # the row with a missing x left out
    # x / c: x in decile bins of the real x (1 -> bin 0, 2 -> 3, 3 -> 6, 4 -> 9, 2.5 -> 5); the
    # only joint cell both tables hold is (bin 0, a), a quarter each: TVD 3/4
    # c / y: the tables share no cell: TVD 1
    expected = {"x / c": 0.25, "x / y": 1 - abs(corr_real - corr_synth) / 2, "c / y": 0.0}
    assert trends["per_pair"] == pytest.approx(expected)
    assert trends["pairs_scored"] == trends["pairs_total"] == 3
    assert pair_trends(REAL, REAL, KINDS)["score"] == 1.0


def test_pair_trends_cap_wide_tables_with_a_fixed_subset():
    rng = np.random.default_rng(0)
    wide = pd.DataFrame(rng.normal(size=(50, 25)), columns=[f"f{i}" for i in range(25)])
    kinds = {c: "continuous" for c in wide.columns}
    first, again = pair_trends(wide, wide * 2, kinds), pair_trends(wide, wide * 2, kinds)
    assert (first["pairs_scored"], first["pairs_total"]) == (200, 300)
    assert first["per_pair"] == again["per_pair"] and first["score"] == 1.0  # scaling keeps correlations


def test_unknown_column_kinds_and_missing_columns_are_one_line_errors():
    with pytest.raises(ValueError, match="column 'x' has kind 'float'; choose one of"):
        column_shapes(REAL, SYNTH, {"x": "float"})
    with pytest.raises(ValueError, match="column 'z' is missing from the real table"):
        pair_trends(REAL, SYNTH, {"x": "continuous", "z": "integer"})


def _table_data(rows: int, seed: int) -> tuple[Any, Any]:
    """A table (a number and a yes/no label) typed by its codec, as ArrayData holds a CSV."""
    from fdrl.data.columns import TableCodec

    x = _normal(rows, 1, seed)[:, 0].numpy()
    return pd.DataFrame({"a": x, "b": np.where(x + np.random.default_rng(seed).normal(size=rows) > 0, "yes", "no")})


def test_evaluate_heldout_adds_column_scores_for_fdrl_and_the_mixture():
    from fdrl.data.columns import TableCodec

    train, held = _table_data(600, 0), _table_data(150, 1)
    codec = TableCodec.fit(train)
    data = ArrayData(torch.from_numpy(codec.encode(train)), heldout=torch.from_numpy(codec.encode(held)), codec=codec)
    fresh = torch.from_numpy(codec.encode(_table_data(150, 2)))
    model = SimpleNamespace(sample=lambda m, seed, batch_size, standardized: fresh[:m],
                            prior=SimpleNamespace(sample=lambda m, g: torch.randn(m, 3, generator=g)),
                            decode=lambda particles, g: particles, space=None, device="cpu",
                            estimator=lambda z: torch.ones(len(z)), objective=SimpleNamespace(ratio=lambda out: out))
    config = SimpleNamespace(train=SimpleNamespace(seed=0), data=DataComponent("array"))
    report = evaluate_heldout(model, config, data, 150)
    assert report["estimator_ratio"] == {"train": 1.0, "heldout": 1.0}
    for columns in (report["columns"], report["baselines"]["gmm"]["columns"]):
        assert set(columns["per_column"]) == {"a", "b"} and columns["pairs_scored"] == 1
        # fresh rows of the same table, 150 of them: 10 x 2 contingency cells are noisy
        assert 0.8 < columns["shapes"] <= 1.0 and 0.6 < columns["pair_trends"] <= 1.0
    printed = "\n".join(report_lines(report))
    assert "columns (1 = as the held-out table), fdrl / Gaussian mixture: shapes" in printed


# printing --------------------------------------------------------------------------------------


#: a metrics.json written before the uncertainties, the verdict and the duplicate counts
OLD_METRICS = {
    "reference": "held-out part (1000 samples, never trained on)", "units": "standardised features", "n": 1000,
    "energy_distance": -0.001105, "c2st_accuracy": 0.545, "energy_distance_prior": 0.02254,
    "energy_distance_floor": -0.002158, "c2st_accuracy_floor": 0.477,
    "baselines": {"gaussian": {"energy_distance": 0.02554, "c2st_accuracy": 0.839},
                  "prior": {"energy_distance": 0.02254, "c2st_accuracy": 0.843}},
    "floor": {"energy_distance": -0.002158, "c2st_accuracy": 0.477},
    "memorisation": {"median_ratio": 1.05, "share_closer_than_heldout_1pct": 0.014},
}


def test_the_report_prints_verdict_first_then_scores_with_uncertainty():
    report = heldout_report(_normal(200, 3, 0), _normal(800, 3, 1), _normal(200, 3, 2), _normal(200, 3, 3),
                            heldout_rows=200)
    lines = report_lines({"reference": "held-out part", "units": "standardised features", **report})
    assert lines[0] == "verdict:" and lines[1] == f"  - {report['verdict'][0]}"
    fdrl_row = next(line for line in lines if line.strip().startswith("fdrl samples"))
    lo, hi = report["c2st_accuracy_ci"]
    assert f"+- {report['energy_distance_se']:.2g}" in fdrl_row and f"[{lo:.3f}, {hi:.3f}]" in fdrl_row
    assert any("DCR share" in line for line in lines) and any(line.strip().startswith("duplicates:") for line in lines)


def test_fdrl_info_prints_an_old_metrics_json_and_a_new_one(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(load_config("swissroll").to_dict()))
    (run / "metrics.json").write_text(json.dumps(OLD_METRICS))
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "near-copies 1.4% (1% expected)" in out and "0.545" in out and "verdict" not in out
    new = heldout_report(_normal(36, 3, 0), _normal(400, 3, 1), _normal(36, 3, 2), _normal(36, 3, 3), heldout_rows=36)
    (run / "metrics.json").write_text(json.dumps({"reference": "held-out part", "units": "u", **new}))
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "verdict:" in out and "too few to tell these models apart" in out and "DCR share" in out
    (run / "metrics.json").write_text(json.dumps({"energy_distance": "x", "c2st_accuracy": None}))
    assert main(["info", str(run)]) == 0
    assert "is unreadable (skipped)" in capsys.readouterr().out
