"""(e) Time to quality: training wall time of a preset (``fdrl train``'s own Trainer, its
default options) until the EMA samples reach a target, with the evaluations' own time left out
of the clock. Prints JSON.

    python benchmarks/time_to_quality.py swissroll [KEY=VALUE ...]
        # first evaluation with held-out C2ST accuracy <= 0.55 (eval_n EMA samples, K + kappa steps)
    python benchmarks/time_to_quality.py digits --metric classifier_fd --classifier DIR [KEY=VALUE ...]
        # classifier Frechet distance: the run goes to train.steps; reported is the first
        # evaluation within 1.2x of the last one

    python benchmarks/time_to_quality.py images --folder DIR [--lengths 400,700,1000,2000] [KEY=VALUE ...]
        # an image folder: the preset trained for each length on DIR, each run's training CPU
        # seconds beside its held-out energy and C2ST and the Gaussian's (--sets fresh sample
        # sets, averaged: benchmarks/images_cpu.py)

Evaluations run every ``--eval-every`` steps through the Trainer's periodic evaluation
(``train.eval_every``/``eval_metric``/``eval_n``). ``train_s`` is the wall time since training
started minus the time spent in evaluations (checkpoints and figures, which ``fdrl train`` also
writes, stay on the clock).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from fdrl.config import load_config
from fdrl.train import Trainer


class _Reached(Exception):
    """The target was met: stop training (nothing after it is measured)."""


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("preset")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides, as for fdrl train")
    ap.add_argument("--metric", default="c2st", help="c2st (stop at --target) or classifier_fd (run to the end)")
    ap.add_argument("--target", type=float, default=0.55, help="c2st: the accuracy to reach")
    ap.add_argument("--factor", type=float, default=1.2, help="classifier_fd: within this factor of the final value")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-n", type=int, default=5000)
    ap.add_argument("--classifier", default=None, help="classifier_fd: a digit classifier directory")
    ap.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    ap.add_argument("--folder", type=Path, default=None, help="an image folder: a curve over --lengths instead")
    ap.add_argument("--lengths", default="400,700,1000,2000", help="--folder: training steps of each run")
    ap.add_argument("--sets", type=int, default=5, help="--folder: fresh sample sets scored per run")
    args = ap.parse_intermixed_args(argv)  # overrides may follow the options
    if args.folder is not None:
        return folder_curve(args)
    overrides = [*args.overrides, f"train.eval_every={args.eval_every}", f"train.eval_metric={args.metric}",
                 f"train.eval_n={args.eval_n}"]
    if args.classifier:
        overrides.append(f"train.eval_classifier={args.classifier}")
    config = load_config(args.preset, overrides)
    run_dir = args.out or tempfile.mkdtemp(prefix="fdrl-ttq-")
    start = time.perf_counter()
    trainer = Trainer(config, run_dir, progress=False)
    setup_s = time.perf_counter() - start
    evals: list[dict] = []
    clock = {"start": time.perf_counter(), "paused": 0.0}
    score = trainer.eval_metric.score

    def timed_score(samples: torch.Tensor) -> float:
        value = score(samples)
        evals.append({"step": trainer.step, "train_s": None, "value": value})
        return value

    trainer.eval_metric.score = timed_score
    evaluate = trainer._evaluate_for_best

    def evaluate_off_the_clock() -> bool:
        began = time.perf_counter()
        train_s = began - clock["start"] - clock["paused"]
        improved = evaluate()
        clock["paused"] += time.perf_counter() - began
        evals[-1]["train_s"] = train_s
        if args.metric == "c2st" and evals[-1]["value"] <= args.target:
            raise _Reached
        return improved

    trainer._evaluate_for_best = evaluate_off_the_clock
    reached = False
    try:
        trainer.fit()
    except _Reached:
        reached = True
    wall_s = time.perf_counter() - clock["start"]
    result = {"benchmark": "time_to_quality", "preset": args.preset, "overrides": args.overrides,
              "metric": args.metric, "eval_every": args.eval_every, "eval_n": args.eval_n,
              "setup_s": setup_s, "wall_s_including_evals": wall_s, "evals": evals, "run_dir": str(run_dir)}
    if args.metric == "c2st":
        result.update(target=args.target, reached=reached,
                      time_to_target_s=evals[-1]["train_s"] if reached else None,
                      step_at_target=evals[-1]["step"] if reached else None)
    else:
        final = evals[-1]["value"]
        first = next(e for e in evals if e["value"] <= args.factor * final)
        result.update(final_value=final, factor=args.factor, time_to_factor_of_final_s=first["train_s"],
                      step_at_factor=first["step"], value_at_factor=first["value"],
                      total_train_s=evals[-1]["train_s"])
    print(json.dumps(result))
    return result


def folder_curve(args: argparse.Namespace) -> dict:
    """The preset trained on ``args.folder`` for each of ``args.lengths`` steps (one thread):
    training CPU seconds against held-out quality (:func:`images_cpu.run`)."""
    from images_cpu import run

    curve = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, steps in enumerate(int(x) for x in args.lengths.split(",")):
            candidate = f"{args.preset}:" + ",".join([f"train.steps={steps}", *args.overrides])
            curve.append(run(args.folder, candidate, Path(tmp) / f"run{i}", args.sets))
            print(json.dumps(curve[-1]), flush=True)
    result = {"benchmark": "time_to_quality", "preset": args.preset, "folder": str(args.folder), "curve": curve}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
