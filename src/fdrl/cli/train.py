"""``fdrl train``, ``fdrl config`` and ``fdrl presets``: what a run is made of, and running it.

``config`` and ``presets`` read YAML only (no PyTorch); ``train`` imports the trainer when it
runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fdrl.cli.common import UsageError, run_dir, seed
from fdrl.config import load_config, load_raw, preset_names
from fdrl.report_text import report_lines

SOURCE_HELP = """\
SOURCE is one of:
  a table       FILE.csv | .tsv | .txt | .parquet | .xlsx (.gz, .bz2, .xz, .zip too) or FILE.npy: a row per
                sample; separator, decimal comma and header detected; each column typed (continuous,
                integer, categorical / text / boolean, constant; data.params.columns.NAME=KIND
                overrides; missing cells: data.params.missing=model|impute|drop); starts from the
                `vectors` preset: features standardised, 20% of rows held out
  an image dir  DIR/ of images (any sizes, mixed modes; searched recursively); starts from the
                `images` preset: resized to data.params.image_size (32), an MLP flow on the
                leading principal components (data.params.pca); images_resnet: pixels, ResNet
  a preset      see `fdrl presets` (a bare preset name wins over a same-named folder: write ./NAME)
  a YAML file   CONFIG.yaml (may `extends:` a preset or another file)

Overrides are key=value over the config sections (print them with `fdrl config SOURCE`):
  objective     lsif-chi2 | lr-kl | lr-js | lr-logd
  data.*        name, params.* (path, columns, missing, root, image_size, standardize, ...), test_fraction
  prior.*       name (data_gaussian | data_mixture | standard_normal | gaussian | uniform | dataset), params.*
  model.*       name (mlp | resnet | resnet32 | resnet64 | resnet64_shallow | resnet128), params.*
  flow.*        eta, noise, steps (K), refine_steps (kappa), eta_scaling, compile, ...
  train.*       steps, batch_size, lr, lr_decay_at, ema, seed, eval_n, threads, checkpoint_every, ...
e.g.  fdrl train moons.npy train.steps=2000 objective=lr-kl
      fdrl train photos/ data.params.image_size=64 --device cuda"""


def register(subparsers: Any) -> None:
    """Add ``train``, ``config`` and ``presets`` to ``subparsers``."""
    p = subparsers.add_parser("train", help="train a model (Algorithm 1) on a data file, an image folder, a preset or a YAML config",
                              description="Algorithm 1: train FDRL and write a run directory (checkpoints, samples, "
                              "metrics.json with held-out scores beside baselines).",
                              epilog=SOURCE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", metavar="SOURCE", help="data file, image folder, preset name or config .yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.steps=500 flow.eta=0.1")
    p.add_argument("--out", type=Path, help="run directory (default runs/NAME, NAME from the file, folder or preset); "
                   "resumed if it has checkpoints")
    p.add_argument("--resume", type=run_dir, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=seed)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("config", help="print the resolved config of a preset, YAML file or data path, without training",
                              epilog=SOURCE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="SOURCE", help="data file, image folder, preset name or config .yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, as for train")
    p.set_defaults(func=cmd_config)

    p = subparsers.add_parser("presets", help="list the built-in presets")
    p.set_defaults(func=cmd_presets)


def _resolve(args: argparse.Namespace) -> tuple[Any, Path]:
    """The validated config and run directory of ``fdrl train`` (or ``config``) arguments."""
    overrides = list(args.overrides)
    resume = getattr(args, "resume", None)
    source: str | dict[str, Any]
    if resume is not None:
        from fdrl.rundir import run_config  # torch: only a resumed config reads a checkpoint

        if args.config is not None:
            overrides.insert(0, args.config)
        if not (resume / "config.yaml").is_file():
            raise UsageError(f"'{resume}' is not a run directory (no config.yaml); pass the run's --out folder")
        source, out = run_config(resume), resume
    else:
        if args.config is None:
            raise UsageError("name a data file, image folder, preset or config file, e.g. fdrl train data.csv or "
                             f"fdrl train swissroll; presets: {', '.join(preset_names())}")
        source, out = args.config, getattr(args, "out", None)
    if getattr(args, "device", None):
        overrides.append(f"device={args.device}")
    if getattr(args, "seed", None) is not None:
        overrides.append(f"train.seed={args.seed}")
    config = load_config(source, overrides)
    return config, out or Path("runs") / config.name


def cmd_train(args: argparse.Namespace) -> int:
    from fdrl.fitting import train_and_score  # torch: not for config and presets, which share this module

    config, out = _resolve(args)
    trainer, metrics = train_and_score(config, out, progress=not args.quiet)
    if not trainer.dist.is_main:
        return 0
    if metrics is not None:
        print(heldout_summary(metrics))
    print(f"run directory: {out}")
    return 0


def heldout_summary(metrics: dict[str, Any]) -> str:
    """The held-out report as printed text: verdict, scores with their uncertainty, memorisation
    and per-column scores (:func:`fdrl.report_text.report_lines`; all of it is in metrics.json)."""
    return "\n".join(report_lines(metrics))


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    config, _ = _resolve(args)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip())
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from importlib import resources

    import shutil
    import textwrap

    width = shutil.get_terminal_size((100, 24)).columns
    for name in preset_names():
        text = resources.files("fdrl.presets").joinpath(f"{name}.yaml").read_text()
        raw = load_raw(name)
        summary = _description(text) or f"{raw.get('objective', 'lsif-chi2')} on {raw.get('data', {}).get('name', '?')}"
        print(textwrap.fill(summary, width=max(60, width), initial_indent=f"{name:<26} ", subsequent_indent=" " * 27))
    return 0


def _description(yaml_text: str) -> str:
    """A preset's leading comment block as one paragraph."""
    lines = []
    for line in yaml_text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)
