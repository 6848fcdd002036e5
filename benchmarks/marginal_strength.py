"""What the marginal calibration does to a labelled-image run's samples: the classifier Frechet
distance of the same samples with the stored map applied at several strengths (0: the flow's own
samples), for several seeds. Prints JSON.

    python benchmarks/marginal_strength.py RUN --classifier CLF [--n 1000] [--seeds 0,1,2] [--strengths 0,0.5,0.75,1]

RUN: a digits or MNIST run trained with ``train.calibrate_marginals=true``; CLF: a classifier
from ``fdrl train-classifier``. The held-out images are the dataset's test split, as for
``fdrl classifier-report``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    import torch

    from fdrl.classifier import load_classifier
    from fdrl.cli.images import load_image_set
    from fdrl.rundir import run_config
    from fdrl.evaluate.classifier_report import classifier_frechet_distance
    from fdrl.model import FDRL

    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--classifier", type=Path, required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--strengths", default="0,0.5,0.75,1")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = FDRL.load(args.run)
    stored = model.marginals
    if stored is None:
        raise SystemExit(f"'{args.run}' has no marginal map: train it with train.calibrate_marginals=true")
    model.marginals = None
    classifier = load_classifier(args.classifier)
    test = load_image_set(f"{run_config(args.run)['data']['name']}:test")
    rows: dict[str, list[float]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        plain = model.sample(args.n, seed=seed, batch_size=256)
        for strength in (float(s) for s in args.strengths.split(",")):
            images = plain if strength == 0 else stored.weakened(strength)(plain)
            fd = classifier_frechet_distance(images.reshape(-1, *classifier.in_shape), test, classifier)
            rows.setdefault(str(strength), []).append(round(fd, 2))
    result = {"benchmark": "marginal_strength", "run": str(args.run), "stored_strength": stored.strength,
              "fd_by_strength": {k: {"seeds": v, "mean": round(sum(v) / len(v), 2)} for k, v in rows.items()}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
