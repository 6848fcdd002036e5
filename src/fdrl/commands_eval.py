"""The ``fdrl evaluate`` and ``fdrl ablate-steps`` subcommands; ``register`` adds them to a parser.

``fdrl evaluate RUN_DIR --fid | --metric NAME`` scores ``n`` samples of a trained run against
its training data and writes ``RUN_DIR/eval/metrics.json`` (one entry per metric: value, n,
flow steps, checkpoint, seed, feature extractor, reference) and ``RUN_DIR/eval/samples.png``.
``fdrl ablate-steps RUN_DIR --steps 60,80,100 --metric NAME`` writes the Fig. 5 table and plot.
``--metric classifier_fd --classifier DIR`` is the Frechet distance in the penultimate features
of a digit classifier trained by ``fdrl train-classifier`` (:mod:`fdrl.classifier`).

FID's reference is every training image of a finite dataset (App. F: "against the training
set"), or ``n`` fresh draws of an infinite source; its Inception statistics are cached (see
``fdrl.evaluate.fid.fid_reference_stats``). The classifier Frechet distance uses the same
reference, with statistics cached under the classifier's weights hash. Handlers return 0, and raise ValueError or
FileNotFoundError with a one-line message on bad input.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from torch import Tensor

from fdrl.evaluate.frechet import file_sha256

#: Samples per FID evaluation by default (App. F: 50000 generated images).
FID_DEFAULT_N = 50_000


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, metavar="RUN_DIR", help="a training run directory")
    p.add_argument("--n", type=int, help=f"samples to score (default: {FID_DEFAULT_N} for FID, else train.eval_n)")
    p.add_argument("--batch", type=int, metavar="B", help="samples per sampling / feature batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, metavar="PATH", help="a specific checkpoint file (default: the newest)")
    p.add_argument("--inception-weights", type=Path, metavar="PATH",
                   help="FID Inception weights file (or $FDRL_INCEPTION_WEIGHTS)")
    p.add_argument("--stats-cache", type=Path, metavar="DIR",
                   help="reference statistics cache (default $FDRL_CACHE_DIR/stats or ~/.cache/fdrl/stats)")
    p.add_argument("--classifier", type=Path, metavar="DIR",
                   help="a classifier from `fdrl train-classifier` (for --metric classifier_fd)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto (default), cpu, cuda, cuda:N or mps")


def register(subparsers: Any) -> None:
    """Add ``evaluate`` and ``ablate-steps`` to ``subparsers`` (from ``add_subparsers``)."""
    from fdrl.evaluate import METRICS

    names = ", ".join(METRICS)
    p = subparsers.add_parser("evaluate", help="score samples of a trained run (FID or another metric)")
    _add_common(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--fid", action="store_true", help="FID (Inception pool3) against the training images")
    which.add_argument("--metric", metavar="NAME", help=f"metric name: {names}")
    p.add_argument("--steps", type=int, metavar="S", help="total flow steps (default K + kappa)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("ablate-steps", help="a metric against total flow length (Fig. 5)")
    _add_common(p)
    p.add_argument("--steps", required=True, metavar="S1,S2,...",
                   help="comma-separated total flow lengths, e.g. 60,80,100,120")
    p.add_argument("--metric", default="energy", metavar="NAME", help=f"metric name: {names} (default energy)")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default RUN_DIR/eval/ablate_steps_METRIC)")
    p.set_defaults(func=cmd_ablate_steps)


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be a positive integer, got {value}")


def _parse_steps(text: str) -> list[int]:
    try:
        steps = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--steps must be comma-separated integers, e.g. 60,80,100; got '{text}'") from None
    if not steps or min(steps) < 0:
        raise ValueError(f"--steps must list flow lengths >= 0, e.g. 60,80,100; got '{text}'")
    return steps


def _dataset_identity(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The data config, plus the SHA-256 of every data file it names (``path`` options), so
    cached reference statistics go stale when a file's content changes."""
    identity: dict[str, Any] = {"name": name, "params": params}
    files = {k: Path(v) for k, v in params.items() if isinstance(v, str) and Path(v).is_file()}
    if files:
        identity["sha256"] = {k: file_sha256(path) for k, path in files.items()}
    return identity


def _reference_batches(data: Any, n: int, seed: int, batch: int) -> Iterator[Tensor]:
    """Every sample of a finite dataset, else ``n`` draws; read only when iterated."""
    if hasattr(data, "iter_batches"):
        yield from data.iter_batches(batch)
    else:
        yield data.draw(n, seed)


class _Evaluation:
    """What both commands share: the run's model and data, and a metric bound to its reference."""

    def __init__(self, args: argparse.Namespace, metric: str):
        from fdrl.checkpoint import list_checkpoints
        from fdrl.config import load_config
        from fdrl.data import build_data
        from fdrl.evaluate import get_metric
        from fdrl.model import FDRL

        run = Path(args.run)
        if not (run / "config.yaml").is_file():
            raise FileNotFoundError(f"'{run}' is not a training run directory (no config.yaml)")
        _positive(args.n, "--n")
        _positive(args.batch, "--batch")
        get_metric(metric)  # an unknown name raises, listing the valid ones
        self.metric = metric
        if metric == "classifier_fd" and getattr(args, "classifier", None) is None:
            raise ValueError("classifier_fd needs a feature extractor: pass --classifier DIR "
                             "(train one with: fdrl train-classifier digits --out DIR)")
        self.run, self.seed = run, args.seed
        config = load_config(str(run / "config.yaml"))
        self.checkpoint = args.checkpoint
        if self.checkpoint is None:
            found = list_checkpoints(run)
            if not found:
                raise FileNotFoundError(f"run directory '{run}' has no checkpoint yet; train it first")
            self.checkpoint = found[-1]
        elif not self.checkpoint.is_file():
            raise FileNotFoundError(f"checkpoint '{self.checkpoint}' does not exist")
        self.model = FDRL.load(run, device=args.device, checkpoint=self.checkpoint)
        self.data = build_data(config.data.name, **config.data.params)
        self.n = args.n or (FID_DEFAULT_N if metric == "fid" else config.train.eval_n)
        self.batch = args.batch
        self.dataset = _dataset_identity(config.data.name, config.data.params)
        self.reference: Tensor | None = None
        self.reference_n = 0
        self.extractor: dict[str, str] | None = None
        self.score = self._bind(args)

    def _bind(self, args: argparse.Namespace) -> Callable[[Tensor], float]:
        from fdrl.evaluate import METRICS, fid_from_samples, fid_reference_stats

        if self.metric == "classifier_fd":
            return self._bind_classifier(args)
        if self.metric != "fid":
            self.reference = self.data.draw(self.n, self.seed)
            self.reference_n = self.n
            self.dataset["subset"] = f"draw n={self.n} seed={self.seed}"
            metric = METRICS[self.metric]
            return lambda samples: metric(samples, self.reference)
        if len(self.data.shape) != 3:
            raise ValueError(
                f"FID needs image data (C, H, W); this run's samples have shape {tuple(self.data.shape)}: "
                "use --metric energy, mmd, sliced_wasserstein or c2st"
            )
        batch = self.batch or 50
        finite = hasattr(self.data, "iter_batches")
        self.dataset["subset"] = "all" if finite else f"draw n={self.n} seed={self.seed}"
        stats = fid_reference_stats(
            _reference_batches(self.data, self.n, self.seed, batch), self.dataset, cache_dir=args.stats_cache,
            batch_size=batch, inception_weights=args.inception_weights, device=self.model.device,
        )
        self.extractor, self.reference_n = stats.key["extractor"], stats.n
        return lambda samples: fid_from_samples(
            samples, stats, batch_size=batch, inception_weights=args.inception_weights, device=self.model.device
        )

    def _bind_classifier(self, args: argparse.Namespace) -> Callable[[Tensor], float]:
        """The classifier Frechet distance against every training image of a finite dataset
        (else ``n`` draws), reference statistics cached under the classifier's identity."""
        from fdrl.classifier import PenultimateFeatures, load_classifier
        from fdrl.evaluate.frechet import cached_stats, default_cache_dir, feature_stats, frechet_feature_distance

        classifier = load_classifier(args.classifier, device=self.model.device)
        if tuple(self.data.shape) != classifier.in_shape:
            raise ValueError(f"classifier '{args.classifier}' takes images of shape {classifier.in_shape}, "
                             f"but this run's samples have shape {tuple(self.data.shape)}")
        extractor = PenultimateFeatures(classifier)
        batch = self.batch or 256
        finite = hasattr(self.data, "iter_batches")
        self.dataset["subset"] = "all" if finite else f"draw n={self.n} seed={self.seed}"
        key = {"dataset": self.dataset, "extractor": extractor.identity}
        stats = cached_stats(
            args.stats_cache or default_cache_dir(), key,
            lambda: feature_stats(_reference_batches(self.data, self.n, self.seed, batch), extractor, batch),
        )
        self.extractor = {**extractor.identity, "path": str(args.classifier)}
        self.reference_n = stats.n
        return lambda samples: frechet_feature_distance(samples, stats, extractor, batch)

    def record(self, **fields: Any) -> dict[str, Any]:
        return {
            "metric": self.metric, **fields, "n": self.n, "seed": self.seed, "checkpoint": str(self.checkpoint),
            "extractor": self.extractor, "reference": self.dataset, "reference_n": self.reference_n,
        }


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``fdrl evaluate``: one metric of ``--n`` samples; merged into RUN_DIR/eval/metrics.json."""
    from fdrl.plots import save_samples_figure

    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    ev = _Evaluation(args, "fid" if args.fid else args.metric)
    steps = ev.model.steps + ev.model.refine_steps if args.steps is None else args.steps
    samples = ev.model.sample(ev.n, steps=steps, seed=ev.seed, batch_size=ev.batch, progress=not args.quiet)
    record = ev.record(value=ev.score(samples), steps=steps)
    out = ev.run / "eval"
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "metrics.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results[ev.metric] = record
    results_path.write_text(json.dumps(results, indent=2))
    save_samples_figure(samples, out / "samples.png", ev.reference, title=f"{steps} flow steps")
    print(json.dumps({"metric": ev.metric, "value": record["value"], "n": ev.n, "steps": steps}))
    print(f"wrote {results_path}")
    return 0


def cmd_ablate_steps(args: argparse.Namespace) -> int:
    """``fdrl ablate-steps``: the metric at each of ``--steps``; table and plot in ``--out``."""
    from fdrl.evaluate import ablate_steps

    steps = _parse_steps(args.steps)
    ev = _Evaluation(args, args.metric)
    out = args.out or ev.run / "eval" / f"ablate_steps_{ev.metric}"
    result = ablate_steps(ev.model, steps, ev.score, ev.n, ev.seed, out, ev.metric, ev.batch, info=ev.record())
    for row in result["rows"]:
        print(f"{row['steps']:>6}  {row[ev.metric]:.6g}")
    print(f"table and plot in {out}")
    return 0
