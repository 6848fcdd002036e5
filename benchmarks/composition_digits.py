#!/usr/bin/env python
"""The composition must-shows of the issue, end to end (long runs: not part of the test suite).

1. Class-conditional digits: >= 90% of each class's guided samples judged as that class by a
   separately trained classifier (another architecture and seed than the guide):

       fdrl train digits --out runs/digits objective=lr-kl flow.eta_scaling=curvature
       python benchmarks/composition_digits.py conditional --run runs/digits --out runs/cond \
           [--phi auto|0.1] [--phis 0.1,0.3,1,3,10] [--n-per-class 200] [--adversarial-eps 2.0] \
           [--guide DIR] [--judge DIR] [--validator DIR] [--seed 1]

   phi auto: the smallest of --phis at which a validation classifier (CNN, seed 2) assigns
   >= 95% of every class's guided samples (seed - 1) to their class; then seed's samples are
   judged (MLP, seed 1).

2. MNIST 3 -> 8 unpaired translation: >= 80% of the translated held-out 3s judged as 8s
   (trains the run unless --run is given; the prior is the train 3s, the data the train 8s):

       python benchmarks/composition_digits.py translate --out runs/3to8 [--dataset mnist] \
           [--source 3 --target 8] [--run RUN] [key=value ... training overrides]

3. scikit-learn digits -> MNIST at 8 x 8 (no bar): class preservation and the Frechet distance
   to the target domain, before and after (a classifier trained on MNIST-8x8 judges):

       python benchmarks/composition_digits.py domains --out runs/digits2mnist [--run RUN] [key=value ...]

4. Refinement (DGflow as FDRL with a fixed generator as the prior): blurred + noised digits are
   the "generator"; the run learns to flow them to the data; the digit-classifier Frechet
   distance of the refined held-out set must fall below the degraded one's:

       python benchmarks/composition_digits.py refine --out runs/refine [--blur-sigma 1 --noise 0.2] [key=value ...]

Each prints the metrics as JSON (also in OUT/metrics.json, with a figure) and exits 0 when the
target is met, 1 otherwise (``domains`` has no target: 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fdrl_studies.composition import conditional_study, domain_translation_study, refinement_study, translation_study


def _study(sub, name: str, seed: int = 0, run_required: bool = False, overrides: str | None = None):
    """A subcommand with the options every study takes."""
    p = sub.add_parser(name)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--run", type=Path, required=run_required)
    p.add_argument("--steps", type=int)
    p.add_argument("--classifier-epochs", type=int)
    p.add_argument("--seed", type=int, default=seed)
    p.add_argument("--device", default="cpu")
    if overrides:
        p.add_argument("overrides", nargs="*", help=overrides)
    return p


def _phi(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"phi must be a number or 'auto', got '{text}'") from None


def _phis(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"--phis must be comma-separated numbers, e.g. 0.1,1,3; got '{text}'")
    return values


def run_study(args: argparse.Namespace) -> dict:
    if args.study == "conditional":
        return conditional_study(args.run, args.out, args.guide, args.judge, args.n_per_class, args.phi, args.steps,
                                 args.seed, dataset=args.dataset, adversarial_eps=args.adversarial_eps,
                                 classifier_epochs=args.classifier_epochs, device=args.device,
                                 threshold=args.threshold, validator=args.validator, phis=args.phis)
    if args.study == "translate":
        return translation_study(args.out, args.run, args.dataset, args.source, args.target, args.judge,
                                 args.overrides, args.steps, args.seed, args.classifier_epochs, args.device,
                                 args.threshold)
    if args.study == "domains":
        return domain_translation_study(args.out, args.run, args.source, args.target, args.judge, args.overrides,
                                        args.steps, args.seed, args.classifier_epochs, args.device)
    return refinement_study(args.out, args.run, args.dataset, args.classifier, args.blur_sigma, args.noise,
                            args.overrides, args.steps, args.seed, args.classifier_epochs, args.device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="study", required=True)
    p = _study(sub, "conditional", seed=1, run_required=True)
    p.add_argument("--guide", type=Path)
    p.add_argument("--judge", type=Path)
    p.add_argument("--validator", type=Path)
    p.add_argument("--dataset", default="digits", choices=("digits", "mnist"))
    p.add_argument("--n-per-class", type=int, default=200)
    p.add_argument("--phi", type=_phi, default="auto", help="a number, or auto: chosen with the validator from --phis")
    p.add_argument("--phis", type=_phis, default=[0.1, 0.3, 1.0, 3.0, 10.0])
    p.add_argument("--adversarial-eps", type=float, default=2.0)
    p.add_argument("--threshold", type=float, default=0.9)
    q = _study(sub, "translate", overrides="training overrides, e.g. train.steps=3000")
    q.add_argument("--judge", type=Path)
    q.add_argument("--dataset", default="mnist", choices=("digits", "mnist"))
    q.add_argument("--source", type=int, default=3)
    q.add_argument("--target", type=int, default=8)
    q.add_argument("--threshold", type=float, default=0.8)
    d = _study(sub, "domains", overrides="training overrides of the digits preset")
    d.add_argument("--judge", type=Path)
    d.add_argument("--source", default="digits")
    d.add_argument("--target", default="mnist8")
    r = _study(sub, "refine", overrides="training overrides of the dataset's preset")
    r.add_argument("--classifier", type=Path)
    r.add_argument("--dataset", default="digits", choices=("digits", "mnist"))
    r.add_argument("--blur-sigma", type=float, default=1.0)
    r.add_argument("--noise", type=float, default=0.2)
    args = parser.parse_args(argv)
    try:
        metrics = run_study(args)
    except (ValueError, FileNotFoundError) as err:  # the library's one-line errors: exit code 2
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        parser.exit(2, f"{parser.prog}: error: {message}\n")
    print(json.dumps(metrics, indent=2))
    return 0 if metrics.get("passed", True) else 1  # domains has no bar


if __name__ == "__main__":
    sys.exit(main())
