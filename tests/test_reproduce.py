"""The paper's toy studies at full size (slow: run in CI, skipped with -m "not slow")."""

import json
import math

import pytest

from fdrl.cli import main
from fdrl_studies.chasm import ChasmSettings, run_chasm_study

pytestmark = pytest.mark.slow


def test_chasm_study(tmp_path):
    """Section 3.1: FDRL crosses the chasm for every seed with its one step size. The stale
    estimator crosses the easy gap at its best eta; across the chasm it lands farther from p than
    FDRL at every eta of the sweep, and is within 0.5 of p only inside a narrow eta window (what
    this implementation measured: see docs/studies/chasm.md)."""
    metrics = run_chasm_study(tmp_path, ChasmSettings(), progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["summary"] == metrics["summary"]
    target_std = math.sqrt(0.1)
    for seed, entry in metrics["fdrl_hard"]["seeds"].items():
        assert entry["mean_distance"] <= 0.3, (seed, entry)
        assert all(0.3 * target_std <= s <= 2 * target_std for s in entry["std"]), (seed, entry)
    fdrl_worst = max(e["mean_distance"] for e in metrics["fdrl_hard"]["seeds"].values())
    stale = {float(eta): entry["mean_distance_avg"] for eta, entry in metrics["stale_hard"]["etas"].items()}
    assert all(distance > fdrl_worst for distance in stale.values()), stale
    close = [eta for eta, distance in stale.items() if distance < 0.5]
    assert not close or max(close) / min(close) < 3.2, stale  # at most a half-decade window
    assert metrics["stale_easy"]["best_mean_distance_avg"] <= 0.3
    for name in ("fig2a_stale_easy.png", "fig2b_stale_hard_sweep.png", "fig3_fdrl_training.png", "fig3_mean_path.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize("objective", ["lsif-chi2", "lr-kl", "lr-js", "lr-logd"])
def test_swissroll_preset_with_each_pairing(objective, tmp_path):
    """App. B / Fig. 10: 5000 samples are at least 50x closer to the data than the prior is (energy
    distance) and a cross-validated classifier barely tells them from fresh data (measured
    0.517-0.532 with the preset, where a 10-component Gaussian mixture scores 0.539)."""
    run = tmp_path / objective
    assert main(["train", "swissroll", f"objective={objective}", "train.eval_n=5000",
                 "--out", str(run), "--quiet", "--device", "cpu"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == 5000
    assert metrics["energy_distance"] <= 0.02 * metrics["energy_distance_prior"], metrics
    assert metrics["c2st_accuracy"] <= 0.56, metrics
    assert main(["figure", "swissroll", str(run), "--out", str(tmp_path / "fig.png")]) == 0
