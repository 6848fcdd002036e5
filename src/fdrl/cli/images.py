"""The image subcommands; ``register`` adds them to a parser (from ``add_subparsers``).

* ``fdrl train-classifier digits|mnist [--out DIR] [--seed N] [--arch cnn|mlp] [--epochs N]
  [--width W] [--device D] [--adversarial-eps E --pgd-steps S --pgd-step-size A]``: train a digit
  classifier (:mod:`fdrl_studies.classifier_training`), print its held-out accuracy, write it to DIR (default ``runs/classifier-DATASET-ARCH-seedN``).
* ``fdrl classifier-fd --classifier DIR A B [--n N] [--steps S] [--seed N]``: the Frechet
  distance between image sets A and B in the classifier's penultimate features. A set is a
  sample file (``.pt`` / ``.safetensors`` holding ``samples``, as ``fdrl sample`` writes, or
  ``.npy``), a run or saved-model directory (``--n`` samples are drawn), or a dataset
  ``NAME[:SPLIT]`` (every image of it; e.g. ``digits:test``).
* ``fdrl image-figure KIND RUN --out FILE.png [options]`` with KIND one of ``samples`` (Fig. 4),
  ``flow`` (Fig. 8), ``interpolate`` (Fig. 9), ``neighbours`` (App. G), ``prior`` (Fig. 11);
  see :mod:`fdrl_studies.image_figures`.

The commands that train a classifier or draw a figure reach :mod:`fdrl_studies` inside the
handler (the library never imports the experiments). Handlers return 0, and raise ValueError or FileNotFoundError with a one-line message on bad
input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fdrl.classifier import ARCHITECTURES, PenultimateFeatures, load_classifier
from fdrl.cli.common import out_dir, out_file, seed
from fdrl.data import IMAGE_DATASETS, ImageData, build_data, build_image_data
from fdrl.evaluate.classifier_report import classifier_frechet_distance, classifier_report
from fdrl.model import FDRL, resolve_device
from fdrl.rundir import run_config
from fdrl.sample_files import read_samples

FIGURE_KINDS = ("samples", "flow", "interpolate", "neighbours", "prior")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'")
    return values


def register(subparsers: Any) -> None:
    """Add ``train-classifier``, ``classifier-fd`` and ``image-figure`` to ``subparsers``."""
    from fdrl_studies.classifier_training import LABELLED_DATASETS

    p = subparsers.add_parser("train-classifier", help="train a digit classifier (for guidance and classifier_fd)")
    p.add_argument("dataset", choices=LABELLED_DATASETS, help="labelled dataset (its train split)")
    p.add_argument("--out", type=out_dir, metavar="DIR", help="output folder (default runs/classifier-DATASET-ARCH-seedN)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--arch", choices=ARCHITECTURES, default="cnn", help="architecture (default cnn)")
    p.add_argument("--epochs", type=int, metavar="N", help="training epochs (default: 30 digits, 15 mnist)")
    p.add_argument("--width", type=int, default=32, metavar="W", help="base width (default 32)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--adversarial-eps", type=float, default=0.0, metavar="E",
                   help="PGD-L2 adversarial training of radius E in the [-1, 1] pixel scale (default 0: off)")
    p.add_argument("--pgd-steps", type=int, default=7, metavar="S", help="PGD steps per batch (default 7)")
    p.add_argument("--pgd-step-size", type=float, metavar="A", help="PGD step size (default 2.5 E / S)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train_classifier)

    p = subparsers.add_parser("classifier-fd", help="Frechet distance of two image sets in a classifier's features")
    p.add_argument("--classifier", type=Path, required=True, metavar="DIR", help="from `fdrl train-classifier`")
    p.add_argument("a", metavar="A", help="sample file (.pt, .safetensors, .npy), run directory, or NAME[:SPLIT]")
    p.add_argument("b", metavar="B", help="the same kinds as A")
    p.add_argument("--n", type=int, default=1000, help="samples drawn from a run directory (default 1000)")
    p.add_argument("--steps", type=int, metavar="S", help="flow steps for runs (default K + kappa)")
    p.add_argument("--seed", type=seed, default=0, help="sampling seed for runs")
    p.add_argument("--batch", type=int, default=256, metavar="B", help="batch size for sampling and features")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto (default), cpu, cuda, cuda:N or mps")
    p.set_defaults(func=cmd_classifier_fd)

    p = subparsers.add_parser("classifier-report", help="score a digits/mnist run with a classifier; writes RUN/metrics.json")
    p.add_argument("run", type=Path, metavar="RUN_DIR")
    p.add_argument("--classifier", type=Path, required=True, metavar="DIR", help="from `fdrl train-classifier`")
    p.add_argument("--n", type=int, default=1000, help="samples and prior draws (default 1000)")
    p.add_argument("--steps", type=int, metavar="S", help="flow steps (default K + kappa)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="auto", metavar="DEVICE")
    p.set_defaults(func=cmd_classifier_report)

    p = subparsers.add_parser("image-figure", help="image figures from a run: samples, flow, interpolate, ...")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    helps = {
        "samples": "a grid of samples (Fig. 4)",
        "flow": "rows of samples at chosen flow steps, prior to final (Fig. 8)",
        "interpolate": "interpolation between prior draws, shared flow noise (Fig. 9)",
        "neighbours": "samples and their nearest training images (App. G)",
        "prior": "draws from the prior (Fig. 11)",
    }
    defaults_n = {"samples": 64, "flow": 8, "interpolate": 4, "neighbours": 8, "prior": 64}
    for kind in FIGURE_KINDS:
        q = kinds.add_parser(kind, help=helps[kind])
        q.add_argument("run", type=Path, metavar="RUN", help="run directory or saved model directory")
        q.add_argument("--out", type=out_file, required=True, metavar="FILE.png")
        q.add_argument("--n", type=int, default=defaults_n[kind],
                       help=f"images (rows for flow, interpolate, neighbours; default {defaults_n[kind]})")
        q.add_argument("--seed", type=seed, default=0)
        q.add_argument("--scale", type=int, help="integer upscaling of each image (default: cells >= 32 px)")
        q.add_argument("--checkpoint", type=Path, metavar="PATH", help="a specific checkpoint (default: newest)")
        q.add_argument("--device", default="auto", metavar="DEVICE", help="auto (default), cpu, cuda, cuda:N or mps")
        if kind in ("samples", "interpolate", "neighbours"):
            q.add_argument("--steps", type=int, metavar="S", help="total flow steps (default K + kappa)")
        if kind in ("samples", "prior"):
            q.add_argument("--nrow", type=int, help="images per row (default about sqrt(n))")
        if kind == "flow":
            q.add_argument("--show", type=_int_list, metavar="S1,S2,...",
                           help="flow steps shown as columns (default: --columns steps from 0 to K + kappa)")
            q.add_argument("--columns", type=int, default=8, help="columns when --show is not given (default 8)")
        if kind == "interpolate":
            q.add_argument("--points", type=int, default=8, help="interpolants per row, endpoints included")
            q.add_argument("--mode", choices=("slerp", "linear"),
                           help="latent interpolation (default slerp for Gaussian priors, else linear)")
        if kind == "neighbours":
            q.add_argument("--k", type=int, default=10, help="neighbours per sample (default 10)")
            q.add_argument("--classifier", type=Path, metavar="DIR",
                           help="measure distance in this classifier's penultimate features (default: pixels)")
            q.add_argument("--data", metavar="NAME[:SPLIT]",
                           help="the training set to search (default: the run's data config)")
        q.set_defaults(func=cmd_image_figure)


def _device(name: str) -> torch.device:
    return resolve_device(name)


# -- train-classifier ---------------------------------------------------------------------------

def cmd_train_classifier(args: argparse.Namespace) -> int:
    from fdrl_studies.classifier_training import train_classifier

    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs must be a positive integer, got {args.epochs}")
    if args.width < 1:
        raise ValueError(f"--width must be a positive integer, got {args.width}")
    out = args.out or Path("runs") / f"classifier-{args.dataset}-{args.arch}-seed{args.seed}"
    eps = getattr(args, "adversarial_eps", 0.0) or 0.0
    _, metrics = train_classifier(args.dataset, out, seed=args.seed, arch=args.arch, epochs=args.epochs,
                                  width=args.width, device=_device(args.device), progress=not args.quiet,
                                  adversarial_eps=eps, pgd_steps=getattr(args, "pgd_steps", 7),
                                  pgd_step_size=getattr(args, "pgd_step_size", None))
    print(json.dumps({k: metrics[k] for k in ("dataset", "arch", "seed", "epochs", "train_accuracy",
                                                "test_accuracy", "test_robust_accuracy", "test_n", "seconds")
                      if k in metrics}))
    print(f"classifier written to {out}")
    return 0


# -- classifier-fd ------------------------------------------------------------------------------

def load_image_set(spec: str, n: int = 1000, seed: int = 0, steps: int | None = None, batch: int = 256,
                   device: str | torch.device = "cpu") -> Tensor:
    """An image set named on the command line: a sample file, a run / saved-model directory
    (``n`` samples, Algorithm 2), or a dataset ``NAME[:SPLIT]`` (all its clean images)."""
    path = Path(spec)
    if path.is_file():
        return read_samples(path)
    if path.is_dir():
        if not ((path / "config.yaml").is_file() or (path / "fdrl.json").is_file()):
            raise FileNotFoundError(f"'{spec}' is a folder but neither a run directory nor a saved model")
        if n < 1:
            raise ValueError(f"--n must be a positive integer, got {n}")
        return FDRL.load(path, device=device).sample(n, steps=steps, seed=seed, batch_size=batch)
    name, _, split = spec.partition(":")
    if name not in IMAGE_DATASETS:
        raise FileNotFoundError(f"'{spec}' is neither a sample file, a run directory nor a dataset "
                                f"NAME[:SPLIT] (datasets: {', '.join(IMAGE_DATASETS)})")
    data = build_image_data(name, **({"split": split} if split else {}))
    return torch.cat(list(data.iter_batches(1024)))


def _as_images(x: Tensor, shape: tuple[int, ...], label: str) -> Tensor:
    """``x`` as (n, *shape); (n, H, W) of 1-channel images and flattened (n, C*H*W) rows are
    reshaped; any other shape is an error."""
    if tuple(x.shape[1:]) == shape:
        return x
    if x.ndim in (2, 3) and x[0].numel() == int(np.prod(shape)) and (x.ndim == 2 or shape[0] == 1):
        return x.reshape(x.shape[0], *shape)
    raise ValueError(f"{label} holds images of shape {tuple(x.shape[1:])}, but the classifier takes {shape}")


def cmd_classifier_fd(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise ValueError(f"--batch must be a positive integer, got {args.batch}")
    device = _device(args.device)
    classifier = load_classifier(args.classifier, device=device)
    sets = []
    for spec in (args.a, args.b):
        x = load_image_set(spec, args.n, args.seed, args.steps, args.batch, device)
        sets.append(_as_images(x, classifier.in_shape, f"'{spec}'"))
    value = classifier_frechet_distance(sets[0], sets[1], classifier, args.batch)
    print(json.dumps({"classifier_fd": value, "a": args.a, "n_a": len(sets[0]), "b": args.b, "n_b": len(sets[1]),
                      "classifier": str(args.classifier)}))
    return 0


def cmd_classifier_report(args: argparse.Namespace) -> int:
    if args.n < 2:
        raise ValueError(f"--n must be at least 2, got {args.n}")
    if not (args.run / "config.yaml").is_file():
        raise FileNotFoundError(f"'{args.run}' is not a run directory (no config.yaml)")
    data_config = run_config(args.run)["data"]
    device = _device(args.device)
    classifier = load_classifier(args.classifier, device=device)
    model = FDRL.load(args.run, device=device)
    samples = model.sample(args.n, steps=args.steps, seed=args.seed, batch_size=256)
    prior = model.decode(model.prior.sample(args.n, torch.Generator().manual_seed(args.seed)),
                         torch.Generator().manual_seed(args.seed))
    images = {split: load_image_set(f"{data_config['name']}:{split}") for split in ("train", "test")}
    report = classifier_report(*(_as_images(x, classifier.in_shape, label) for x, label in (
        (samples, "samples"), (prior, "prior"), (images["train"], "train"), (images["test"], "test"))), classifier,
        seed=args.seed)
    report.update(classifier=str(args.classifier), seed=args.seed,
                  steps=model.total_steps(args.steps or None))
    metrics_path = args.run / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["classifier_report"] = report
    metrics_path.write_text(json.dumps(metrics, indent=2))
    print(json.dumps({k: report[k] for k in ("classifier_fd", "classifier_fd_prior", "classifier_fd_floor",
                                             "classifier_fd_to_floor", "classifier_fd_ratio")} | {"confidence": report["samples"]["confidence"],
                                             "class_entropy": report["samples"]["class_entropy"]}))
    return 0


# -- image-figure -------------------------------------------------------------------------------

def _training_data(args: argparse.Namespace) -> Any:
    """The data searched for neighbours: ``--data NAME[:SPLIT]``, else the run's data config."""
    if args.data:
        name, _, split = args.data.partition(":")
        data = build_data(name, **({"split": split} if split else {}))
    else:
        if not (args.run / "config.yaml").is_file():
            raise FileNotFoundError(f"'{args.run}' has no config.yaml naming its training data; "
                                    "pass --data NAME[:SPLIT]")
        config = run_config(args.run)
        data = build_data(config["data"]["name"], **config["data"].get("params", {}))
    if not isinstance(data, ImageData):
        raise ValueError("nearest neighbours need an image dataset")
    return data


def cmd_image_figure(args: argparse.Namespace) -> int:
    from fdrl_studies import image_figures as figs

    for flag in ("n", "scale", "nrow", "columns", "points", "k", "steps"):
        value = getattr(args, flag, None)
        if value is not None and value < (0 if flag == "steps" else 1):
            raise ValueError(f"--{flag} must be {'>= 0' if flag == 'steps' else 'a positive integer'}, got {value}")
    if args.out.suffix.lower() != ".png":
        raise ValueError(f"--out must end in .png, got '{args.out.name}'")
    model = figs.load_image_run(args.run, device=_device(args.device), checkpoint=args.checkpoint)
    kind, detail = args.kind, ""
    if kind == "samples":
        path = figs.samples_figure(model, args.out, args.n, args.seed, args.steps, args.nrow, args.scale)
    elif kind == "prior":
        path = figs.prior_figure(model, args.out, args.n, args.seed, args.nrow, args.scale)
    elif kind == "flow":
        show = args.show or figs.default_flow_steps(model.sampling_steps, args.columns)
        path = figs.flow_figure(model, args.out, args.n, show, args.seed, scale=args.scale)
        detail = f" (columns at flow steps {','.join(map(str, show))})"
    elif kind == "interpolate":
        path = figs.interpolation_figure(model, args.out, args.n, args.points, args.seed, args.mode, args.steps,
                                         args.scale)
    else:
        extractor = None
        if args.classifier is not None:
            extractor = PenultimateFeatures(load_classifier(args.classifier, device=model.device))
        path = figs.neighbours_figure(model, _training_data(args), args.out, args.n, args.k, extractor, args.seed,
                                      args.steps, args.scale)
        detail = f" (L2 in {'classifier features' if extractor is not None else 'pixel space'})"
    print(f"wrote {path}{detail}")
    return 0
