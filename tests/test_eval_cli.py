"""The ``evaluate`` and ``ablate-steps`` subcommands, on a tiny swiss-roll run."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from fdrl.cli.evaluate import register
from fdrl.config import load_config
from fdrl.train import Trainer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "swissroll"
    overrides = ["train.steps=5", "train.batch_size=32", "flow.steps=3", "flow.refine_steps=1",
                 "model.params.width=16", "model.params.depth=1", "train.sample_n=50", "train.eval_n=120",
                 "device=cpu"]
    Trainer(load_config("swissroll", overrides), run, progress=False).fit()
    return run


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fdrl")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def test_evaluate_writes_metrics_json_and_grid(run_dir, capsys):
    args = parse("evaluate", str(run_dir), "--metric", "energy", "--device", "cpu", "--seed", "2")
    assert args.func(args) == 0
    results = json.loads((run_dir / "eval" / "metrics.json").read_text())
    energy = results["energy"]
    assert energy["n"] == 120 and energy["steps"] == 4 and energy["seed"] == 2  # train.eval_n, K + kappa
    assert energy["checkpoint"].endswith("ckpt_000000005.pt") and energy["extractor"] is None
    assert energy["reference"]["name"] == "swissroll" and energy["value"] > 0
    assert (run_dir / "eval" / "samples.png").stat().st_size > 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["metric"] == "energy"

    # a second metric is merged into the same file
    args = parse("evaluate", str(run_dir), "--metric", "mmd", "--n", "50", "--steps", "2", "--batch", "16",
                 "--device", "cpu")
    assert args.func(args) == 0
    results = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert set(results) == {"energy", "mmd"} and results["mmd"]["steps"] == 2 and results["mmd"]["n"] == 50


def test_ablate_steps_command(run_dir, tmp_path, capsys):
    out = tmp_path / "ablation"
    args = parse("ablate-steps", str(run_dir), "--steps", "0,2,4", "--metric", "sliced_wasserstein",
                 "--n", "60", "--device", "cpu", "--out", str(out))
    assert args.func(args) == 0
    record = json.loads((out / "ablate_steps.json").read_text())
    assert [row["steps"] for row in record["rows"]] == [0, 2, 4]
    assert record["metric"] == "sliced_wasserstein" and record["checkpoint"].endswith(".pt")
    assert (out / "ablate_steps.csv").exists() and (out / "ablate_steps.png").exists()
    assert "table and plot in" in capsys.readouterr().out

    args = parse("ablate-steps", str(run_dir), "--steps", "1", "--n", "20", "--device", "cpu")
    assert args.func(args) == 0
    assert (run_dir / "eval" / "ablate_steps_energy" / "ablate_steps.csv").exists()


@pytest.mark.parametrize(
    ("argv", "error", "message"),
    [
        (["evaluate", "{run}", "--metric", "nope"], ValueError, "unknown metric 'nope'"),
        (["evaluate", "{run}", "--fid"], ValueError, "FID needs image data"),
        (["evaluate", "{run}", "--metric", "classifier_fd"], ValueError, "feature extractor"),
        (["evaluate", "{run}", "--metric", "energy", "--n", "0"], ValueError, "--n must be a positive"),
        (["evaluate", "{run}", "--metric", "energy", "--steps", "-1"], ValueError, "--steps must be >= 0"),
        (["evaluate", "{run}", "--metric", "energy", "--checkpoint", "{run}/none.pt"], FileNotFoundError,
         "does not exist"),
        (["evaluate", "{missing}", "--metric", "energy"], FileNotFoundError, "not a training run directory"),
        (["ablate-steps", "{run}", "--steps", "a,b"], ValueError, "comma-separated integers"),
        (["ablate-steps", "{run}", "--steps", "-3"], ValueError, "flow lengths >= 0"),
    ],
)
def test_bad_input_is_one_line_error(run_dir, tmp_path, argv, error, message):
    args = parse(*(a.format(run=run_dir, missing=tmp_path / "missing") for a in argv), "--device", "cpu")
    with pytest.raises(error, match=message) as raised:
        args.func(args)
    assert "\n" not in str(raised.value)


def test_run_without_checkpoint(tmp_path):
    (tmp_path / "config.yaml").write_text("objective: lsif-chi2\n")
    args = parse("evaluate", str(tmp_path), "--metric", "energy", "--device", "cpu")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        args.func(args)
