"""Every benchmark script runs in a tiny configuration and prints valid JSON."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script,args,key", [
    ("swissroll_iteration.py", ["--steps-k", "3", "--batch", "16", "--rounds", "1", "--routes", "main"],
     "speedup_default"),
    ("estimator_flow_step.py", ["--width", "0.0625", "--full-width", "", "--archs", "resnet64_shallow",
                                "--batch", "2", "--steps", "1", "--repeat", "1"], "estimators"),
    ("memory_vs_k.py", ["--ks", "1,3", "--arch", "resnet64_shallow", "--width", "0.0625", "--batch", "2"],
     "flat_within_10pct"),
    ("gpu_check.py", ["--cpu-smoke"], "agreement"),
    ("flow_switches_cpu.py", ["--width", "0.0625", "--batch", "2", "--steps", "1", "--repeat", "1"],
     "speedup_vs_plain"),
    ("cpu_kernel_shapes.py", ["--shapes", "2,16,2,8,2", "--rounds", "1"], "rows"),
    ("lowrank_prior_memory.py", ["--n", "12", "--rank", "4", "--sample", "2", "--threads", "1"], "variance_kept"),
    ("table_read.py", ["--rows", "50", "--cols", "3", "--readers", "pandas,read_array"], "ratios_to_pandas"),
    ("images_cpu.py", ["images:train.steps=2,flow.steps=2,flow.refine_steps=1,train.eval_n=20,train.sample_n=4",
                       "--only", "digits", "--images", "60", "--sets", "1"], "runs"),
])
def test_benchmark_prints_json(script, args, key):
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=120, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert key in result


def test_time_to_quality_curve_of_a_folder(tmp_path):
    """The folder mode trains the preset once per length and scores each run beside the Gaussian."""
    subprocess.run([sys.executable, str(BENCH / "images_cpu.py"), "--folders", str(tmp_path), "--only", "digits",
                    "--images", "60", "images:train.steps=1,flow.steps=1,flow.refine_steps=1,train.eval_n=12"],
                   capture_output=True, text=True, timeout=120, check=True)
    done = subprocess.run([sys.executable, str(BENCH / "time_to_quality.py"), "images", "--folder",
                           str(tmp_path / "digits"), "--lengths", "2,3", "--sets", "1", "flow.steps=1",
                           "flow.refine_steps=1", "train.eval_n=12", "train.lr_decay_at=[]"],
                          capture_output=True, text=True, timeout=120, check=True)
    curve = json.loads(done.stdout.strip().splitlines()[-1])["curve"]
    assert [run["candidate"].split(",")[0] for run in curve] == ["images:train.steps=2", "images:train.steps=3"]
    assert all(0 <= run["c2st_mean"] <= 1 and math.isfinite(run["gaussian_energy_mean"]) for run in curve)


@pytest.mark.slow
def test_tabular_peers_quick_scores_finite(tmp_path):
    """fdrl, the Gaussian mixture and the training rows on one small numeric table: every row has finite CPU
    seconds and metrics in their ranges, and the mixture (0.56 measured) is told from held-out
    moons well below always (a wrong encoding or decoding is told apart)."""
    out = tmp_path / "peers.json"
    subprocess.run([sys.executable, str(BENCH / "tabular_peers.py"), "--quick", "--tables", "moons",
                    "--methods", "fdrl,gmm,rows", "--out", str(out)], capture_output=True, text=True, timeout=300,
                   check=True)
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["fdrl", "gmm", "rows"]
    for r in rows:
        assert "error" not in r, r
        assert all(math.isfinite(r[key]) for key in ("cpu_s", "c2st", "energy", "near_copies", "dcr_share"))
        assert 0 <= r["near_copies"] <= 1 and 0 <= r["dcr_share"] <= 1 and 0 <= r["c2st"] <= 1
    assert rows[1]["c2st"] < 0.75
    assert rows[2]["near_copies"] == 1.0 and rows[2]["dcr_share"] > 0.55  # the training rows: a copier
