"""The ``fdrl evaluate`` and ``fdrl ablate-steps`` subcommands; ``register`` adds them to a parser.

``fdrl evaluate RUN_DIR`` (no metric) scores samples against the run's held-out data beside a
Gaussian, a Gaussian mixture and the floor (:mod:`fdrl.evaluate.heldout`; written to
``RUN_DIR/eval/heldout.json``). ``fdrl evaluate RUN_DIR --fid | --metric NAME`` scores ``n`` samples of a trained run against
its training data and writes ``RUN_DIR/eval/metrics.json`` (one entry per metric: value, n,
flow steps, checkpoint, seed, feature extractor, reference) and ``RUN_DIR/eval/samples.png``.
``fdrl ablate-steps RUN_DIR --steps 60,80,100 --metric NAME`` writes the Fig. 5 table and plot.
``fdrl evaluate RUN_DIR --translate-from A_TEST --against B_TEST`` is Table 4's translation
protocol (:mod:`fdrl.evaluate.translation`; ``RUN_DIR/eval/translation.json``).
``--metric classifier_fd --classifier DIR`` is the Frechet distance in the penultimate features
of a digit classifier trained by ``fdrl train-classifier`` (:mod:`fdrl.classifier`).

References and their cached statistics: :mod:`fdrl.evaluate.binding`. Under ``torchrun``,
``evaluate`` deals the sample batches over the ranks (:func:`fdrl.distributed.sample_sharded`:
the same samples as one process) and rank 0 scores and writes; ``ablate-steps`` runs on rank 0.
Handlers return 0, and raise ValueError or FileNotFoundError with a one-line message on bad input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fdrl import distributed
from fdrl.checkpoint import list_checkpoints
from fdrl.cli.common import out_dir, out_file, seed
from fdrl.cli.train import heldout_summary
from fdrl.config import METRIC_NAMES, load_config
from fdrl.data import build_data
from fdrl.evaluate import ablate_steps, get_metric
from fdrl.evaluate.binding import bind_metric, dataset_identity
from fdrl.evaluate.heldout import evaluate_heldout
from fdrl.evaluate.translation import FEATURE_BATCH, TRANSLATION_PRIORS, translation_extractor, translation_report
from fdrl.model import FDRL, resolve_device
from fdrl.plots import save_samples_figure
from fdrl.rundir import run_config
from fdrl.sample_files import load_input_images


#: Samples per FID evaluation by default (App. F: 50000 generated images).
FID_DEFAULT_N = 50_000
#: Samples flowed together by default (``--batch`` overrides; it also sets the seeding of batches)
SAMPLE_BATCH = 500


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, metavar="RUN_DIR", help="a training run directory")
    p.add_argument("--n", "--num-samples", dest="n", type=int,
                   help=f"samples to score (default: {FID_DEFAULT_N} for FID, else train.eval_n); "
                        "under torchrun write --num-samples (torchrun takes --n for its own options)")
    p.add_argument("--batch", type=int, metavar="B", help="samples per sampling / feature batch")
    p.add_argument("--seed", type=seed, default=0)
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
    names = ", ".join(METRIC_NAMES)
    p = subparsers.add_parser("evaluate", help="score samples on held-out data beside baselines, or with FID / another metric")
    _add_common(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--fid", action="store_true", help="FID (Inception pool3) against the training images")
    which.add_argument("--metric", metavar="NAME", help=f"metric name: {names}")
    p.add_argument("--steps", type=int, metavar="S", help="total flow steps (default K + kappa)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--translate-from", type=Path, metavar="A_TEST",
                   help="Table 4: flow these domain-A test images (a folder, an image or a tensor file, as "
                        "`fdrl translate --input`) and score them against --against (with --inception-weights "
                        "or --classifier)")
    p.add_argument("--against", type=Path, metavar="B_TEST", help="the domain-B test images for --translate-from")
    p.add_argument("--out", type=out_file, metavar="FILE",
                   help="the --translate-from report (JSON; default RUN_DIR/eval/translation.json)")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("ablate-steps", help="a metric against total flow length (Fig. 5)")
    _add_common(p)
    p.add_argument("--steps", required=True, metavar="S1,S2,...",
                   help="comma-separated total flow lengths, e.g. 60,80,100,120")
    p.add_argument("--metric", default="energy", metavar="NAME", help=f"metric name: {names} (default energy)")
    p.add_argument("--out", type=out_dir, metavar="DIR", help="output folder (default RUN_DIR/eval/ablate_steps_METRIC)")
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


def _run_config(run: Path, checkpoint: Path | None) -> Any:
    """The validated config of the training run ``run`` (from its checkpoints if its
    ``config.yaml`` is damaged); ``checkpoint``, if given, must exist, else the run needs one."""
    if not run.is_dir() or not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"'{run}' is not a training run directory (no config.yaml)")
    if checkpoint is not None and not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint '{checkpoint}' does not exist")
    if checkpoint is None and not list_checkpoints(run):
        raise FileNotFoundError(f"run directory '{run}' has no checkpoint yet; train it first")
    return load_config(run_config(run))


class _Evaluation:
    """What both commands share: the run's model, data and (on rank 0) the metric bound to
    its reference. Under torchrun every rank loads the model and generates its share of the
    samples; only rank 0 binds the metric, scores and writes."""

    def __init__(self, args: argparse.Namespace, metric: str):
        run = Path(args.run)
        _positive(args.n, "--n")
        _positive(args.batch, "--batch")
        get_metric(metric)  # an unknown name raises, listing the valid ones, before any loading
        self.run, self.seed = run, args.seed
        config = _run_config(run, args.checkpoint)
        device = resolve_device(args.device)
        self.dist = distributed.setup("auto", device.type)
        if self.dist.active and device.type == "cuda":
            import torch

            device = torch.device("cuda", self.dist.local_rank)
        self.model = FDRL.load(run, device=device, checkpoint=args.checkpoint)
        self.checkpoint = self.model.checkpoint
        data = build_data(config.data.spec)
        self.n = args.n or (FID_DEFAULT_N if metric == "fid" else config.train.eval_n)
        self.sample_batch = args.batch or min(self.n, SAMPLE_BATCH)
        self.metric_name = metric
        self.metric, error = None, None
        if self.dist.is_main:
            try:
                self.metric = bind_metric(metric, data, dataset_identity(config.data.name, config.data.params),
                                          self.n, self.seed, args.batch, getattr(args, "classifier", None),
                                          args.inception_weights, args.stats_cache, self.model.device)
            except (ValueError, FileNotFoundError) as err:
                error = err
        # the other ranks must not start sampling for a rank 0 that will never gather
        (failed,) = distributed.any_flag(self.dist, error is not None, device=self.model.device)
        if error is not None:
            raise error
        if failed:
            raise ValueError("rank 0 could not set up the metric (its error says why)")

    def samples(self, steps: int, progress: bool = False) -> Any:
        """``n`` samples after ``steps`` flow steps (on rank 0; None on the others)."""
        # in the model's units, those of the reference rows the metric is bound to
        return distributed.sample_sharded(self.model, self.n, self.dist, steps, self.seed, self.sample_batch,
                                          progress, standardized=True)

    def record(self, **fields: Any) -> dict[str, Any]:
        m = self.metric
        return {
            "metric": self.metric_name, **fields, "n": self.n, "seed": self.seed, "checkpoint": str(self.checkpoint),
            "extractor": m.extractor, "reference": m.dataset, "reference_n": m.reference_n,
            "sample_batch": self.sample_batch, "ranks": self.dist.world,
        }


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``fdrl evaluate``: the held-out report, or one metric of ``--n`` samples merged into
    RUN_DIR/eval/metrics.json."""
    if args.translate_from is not None or args.against is not None:
        return _evaluate_translation(args)
    if args.out is not None:
        raise ValueError("--out goes with --translate-from; the other reports are written under RUN_DIR/eval")
    if not args.fid and args.metric is None:
        return _evaluate_heldout(args)
    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    ev = _Evaluation(args, "fid" if args.fid else args.metric)
    steps = ev.model.total_steps(args.steps)
    samples = ev.samples(steps, progress=not args.quiet)
    if samples is None:  # a rank other than 0: its share is with rank 0
        return 0
    record = ev.record(value=ev.metric(samples), steps=steps)
    out = ev.run / "eval"
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "metrics.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results[ev.metric_name] = record
    results_path.write_text(json.dumps(results, indent=2))
    save_samples_figure(samples, out / "samples.png", ev.metric.reference, title=f"{steps} flow steps")
    print(json.dumps({"metric": ev.metric_name, "value": record["value"], "n": ev.n, "steps": steps}))
    print(f"wrote {results_path}")
    return 0


def cmd_ablate_steps(args: argparse.Namespace) -> int:
    """``fdrl ablate-steps``: the metric at each of ``--steps``; table and plot in ``--out``."""
    steps = _parse_steps(args.steps)
    ev = _Evaluation(args, args.metric)
    if not ev.dist.is_main:  # the ablation runs on one process (rank 0)
        return 0
    out = args.out or ev.run / "eval" / f"ablate_steps_{ev.metric_name}"
    result = ablate_steps(ev.model, steps, ev.metric, ev.n, ev.seed, out, ev.metric_name, ev.sample_batch,
                          info=ev.record())
    for row in result["rows"]:
        print(f"{row['steps']:>6}  {row[ev.metric_name]:.6g}")
    print(f"table and plot in {out}")
    return 0


def _evaluate_heldout(args: argparse.Namespace) -> int:
    """``fdrl evaluate RUN_DIR``: :func:`fdrl.evaluate.heldout.evaluate_heldout` of the run's
    model (EMA weights of the newest or the given checkpoint), printed and written to
    RUN_DIR/eval/heldout.json."""
    run = Path(args.run)
    _positive(args.n, "--n")
    if args.steps is not None:
        raise ValueError("--steps goes with --metric or --fid; the held-out report uses the run's K + kappa")
    config = _run_config(run, args.checkpoint)
    model = FDRL.load(run, device=args.device, checkpoint=args.checkpoint)
    data = build_data(config.data.spec)
    config.train.seed = args.seed
    report = evaluate_heldout(model, config, data, args.n or config.train.eval_n)
    out = run / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / "heldout.json").write_text(json.dumps(report, indent=2))
    print(heldout_summary(report))
    print(f"wrote {out / 'heldout.json'}")
    return 0


def _evaluate_translation(args: argparse.Namespace) -> int:
    """``fdrl evaluate RUN_DIR --translate-from A_TEST --against B_TEST``: Table 4's protocol
    (Sec. 6.5, App. F) by :func:`fdrl.evaluate.translation.translation_report`, printed and
    written to ``--out`` (default RUN_DIR/eval/translation.json)."""
    import warnings

    if args.translate_from is None or args.against is None:
        raise ValueError("--translate-from A_TEST and --against B_TEST go together (domain-A test images to "
                         "translate, domain-B test images to score them against)")
    if args.fid or args.metric is not None:
        raise ValueError("--translate-from is scored by FID with --inception-weights FILE or by the classifier "
                         "Frechet distance with --classifier DIR; drop --fid / --metric")
    if args.stats_cache is not None:
        raise ValueError("--stats-cache goes with --fid / --metric; the translation scores cache nothing")
    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    _positive(args.n, "--n")
    _positive(args.batch, "--batch")
    run = Path(args.run)
    config = _run_config(run, args.checkpoint)
    model = FDRL.load(run, device=args.device, checkpoint=args.checkpoint)
    model.require_pixels("--translate-from")
    shape = tuple(model.prior.shape)
    if len(shape) != 3:
        raise ValueError(f"'{run}' is not a run on images (samples of shape {shape}); --translate-from needs one")
    if model.prior.kind not in TRANSLATION_PRIORS:
        warnings.warn(f"'{run}' has a {model.prior.kind} prior, not a source domain (prior.name=dataset): its flow "
                      f"was not trained to start from --translate-from images", stacklevel=1)
    metric, extractor, identity = translation_extractor(shape, args.inception_weights, args.classifier,
                                                        model.device)
    source, _ = load_input_images(args.translate_from, shape)
    target, _ = load_input_images(args.against, shape)
    if args.n is not None:
        source, target = source[:args.n], target[:args.n]
    floor = build_data(config.data.spec).subset(len(source), args.seed)
    report = translation_report(model, source, target, floor, extractor, args.steps, args.seed,
                                args.batch or SAMPLE_BATCH, args.batch or FEATURE_BATCH[metric])
    record = {"metric": metric, **report, "translate_from": str(args.translate_from), "against": str(args.against),
              "floor_reference": dataset_identity(config.data.name, config.data.params), "extractor": identity,
              "prior": model.prior.kind, "checkpoint": str(model.checkpoint)}
    out = args.out or run / "eval" / "translation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"{metric} to {report['target_n']} test-B image(s), {report['n']} test-A image(s), "
          f"{report['steps']} flow steps:")
    for key, what in (("before", "test A, untranslated"), ("after", "test A, translated"),
                      ("floor", f"{report['floor_n']} B training images")):
        print(f"  {key:<7}{record[key]:>12.4g}  ({what})")
    print(f"wrote {out}")
    return 0
