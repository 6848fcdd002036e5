"""The ``fdrl`` command. Thin: parse arguments, build library objects, call them.

Every user error (bad config, missing run, invalid pairing, ...) is one line on stderr,
``fdrl: error: ...``, and exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path


from fdrl.checkpoint import CheckpointError
from fdrl.config import ConfigError, load_config, load_raw, preset_names


class UsageError(ValueError):
    """A command-line mistake; reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is a UsageError (one line, exit 2) rather than a usage dump."""

    def error(self, message: str):
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _run_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"run directory '{text}' does not exist")
    return path


# -- train -------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from fdrl.train import Trainer

    overrides = list(args.overrides)
    if args.resume is not None:
        if args.config is not None:
            overrides.insert(0, args.config)
        stored = args.resume / "config.yaml"
        if not stored.exists():
            raise UsageError(f"'{args.resume}' is not a run directory (no config.yaml); pass the run's --out folder")
        config_source, out = str(stored), args.resume
    else:
        if args.config is None:
            raise UsageError(f"name a preset or config file, e.g. fdrl train swissroll; presets: {', '.join(preset_names())}")
        config_source = args.config
        out = args.out or Path("runs") / Path(args.config).stem
    if args.device:
        overrides.append(f"device={args.device}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    config = load_config(config_source, overrides)
    trainer = Trainer(config, out, progress=not args.quiet)
    trainer.fit()
    if not trainer.dist.is_main:
        return 0
    if trainer.step >= config.train.steps and len(trainer.data.shape) == 1:
        metrics = trainer.evaluate()
        print(json.dumps({k: metrics[k] for k in ("energy_distance", "energy_distance_prior",
                                                  "energy_distance_ratio", "c2st_accuracy")}))
    print(f"run directory: {out}")
    return 0


# -- sample ------------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    from fdrl.model import FDRL
    from fdrl.plots import save_samples_figure

    model = FDRL.load(args.run, device=args.device or "auto", checkpoint=args.checkpoint)
    from fdrl.commands_compose import guidance_from_args

    samples = model.sample(args.n, steps=args.steps, seed=args.seed, batch_size=args.batch,
                           progress=not args.quiet, guidance=guidance_from_args(args, model, args.n))
    out = args.out or args.run / "samples.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        save_samples_figure(samples, out)
    elif out.suffix == ".npy":
        import numpy as np

        np.save(out, samples.numpy())
    elif out.suffix in (".pt", ".safetensors"):
        from safetensors.torch import save_file

        save_file({"samples": samples.contiguous()}, str(out))
    else:
        raise UsageError(f"--out must end in .png, .npy, .pt or .safetensors, got '{out.name}'")
    print(f"wrote {args.n} samples ({model.steps + model.refine_steps if args.steps is None else args.steps} flow steps) to {out}")
    return 0


# -- presets -----------------------------------------------------------------------------------
def cmd_presets(args: argparse.Namespace) -> int:
    from importlib import resources

    for name in preset_names():
        text = resources.files("fdrl.presets").joinpath(f"{name}.yaml").read_text()
        comment = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
        raw = load_raw(name)
        summary = comment or f"{raw.get('objective', 'lsif-chi2')} on {raw.get('data', {}).get('name', '?')}"
        print(f"{name:<26} {summary}")
    return 0


# -- chasm -------------------------------------------------------------------------------------
def cmd_chasm(args: argparse.Namespace) -> int:
    from fdrl.studies.chasm import ChasmSettings, run_chasm_study

    settings = ChasmSettings(seeds=args.seeds, etas=args.etas, objective=args.objective)
    metrics = run_chasm_study(args.out, settings, progress=not args.quiet)
    print(json.dumps(metrics["summary"], indent=2))
    print(f"metrics and figures in {args.out}")
    return 0


# -- figure ------------------------------------------------------------------------------------
def cmd_figure(args: argparse.Namespace) -> int:
    from fdrl.studies.figures import pairings_figure

    path = pairings_figure(args.runs, args.out, n=args.n, seed=args.seed)
    print(f"wrote {path}")
    return 0


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fdrl", description="Flow-Guided Density Ratio Learning")
    parser.add_argument("--version", action="version", version=f"fdrl {__import__('fdrl').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model (Algorithm 1) from a preset or YAML config")
    p.add_argument("config", nargs="?", help="preset name (see `fdrl presets`) or config .yaml")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.steps=500 flow.eta=0.1")
    p.add_argument("--out", type=Path, help="run directory (default runs/NAME); resumed if it has checkpoints")
    p.add_argument("--resume", type=_run_dir, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained run (Algorithm 2: K + kappa steps)")
    p.add_argument("run", type=_run_dir, help="run directory or saved model directory")
    p.add_argument("--n", type=_positive_int, default=1000)
    p.add_argument("--steps", type=_positive_int, help="total flow steps (default K + kappa)")
    p.add_argument("--batch", type=_positive_int, help="samples per batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, help="a specific checkpoint file (default: newest)")
    p.add_argument("--out", type=Path, help=".png (figure), .npy, .pt or .safetensors (default RUN/samples.pt)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true")
    from fdrl.commands_compose import add_guidance_arguments

    add_guidance_arguments(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("presets", help="list the built-in presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("chasm", help="the density-chasm study of Section 3.1 (Fig. 2 and 3)")
    p.add_argument("--out", type=Path, default=Path("runs/chasm"))
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--etas", type=_floats, default=None, help="step sizes for the stale-estimator sweep")
    p.add_argument("--objective", default="lsif-chi2")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_chasm)

    p = sub.add_parser("figure", help="figures from trained runs")
    fig_sub = p.add_subparsers(dest="figure", metavar="FIGURE", required=True)
    q = fig_sub.add_parser("swissroll", help="one panel per run, like Fig. 10 (one run per pairing)")
    q.add_argument("runs", nargs="+", type=_run_dir)
    q.add_argument("--out", type=Path, default=Path("swissroll.png"))
    q.add_argument("--n", type=_positive_int, default=2000)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_figure)

    from fdrl.commands_eval import register as register_evaluation
    from fdrl.commands_compose import register as register_compose
    from fdrl.commands_images import register as register_images

    register_evaluation(sub)
    register_images(sub)
    register_compose(sub)
    return parser


#: Errors that are the user's to fix: shown as one line, exit code 2.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError, ConfigError, CheckpointError, FileNotFoundError, ValueError, NotADirectoryError,
    ModuleNotFoundError,
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    from fdrl.train import TrainingError

    warnings.filterwarnings("ignore", message=".*TensorFlow installation not found.*")
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]  # key=value overrides given after an option
        elif extra:
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see: fdrl {args.command or ''} --help)")
        if args.command is None:
            parser.print_help()
            return 2
        return args.func(args)
    except _USER_ERRORS + (TrainingError,) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"fdrl: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fdrl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `fdrl presets | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
