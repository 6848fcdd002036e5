"""The ``fdrl`` command. Thin: parse arguments, build library objects, call them.

One module per command group (:data:`COMMANDS` says which holds which); only the module of
the command being run is imported, so ``fdrl --help``, ``presets``, ``config`` and ``info``
start without PyTorch, scikit-learn or matplotlib.

Every user error (bad config, missing run, invalid pairing, ...) is one line on stderr,
``fdrl: error: ...``, and exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from fdrl import __version__
from fdrl.cli.common import UsageError, _Parser

#: command -> (module of fdrl.cli that registers it, one-line help for `fdrl --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model (Algorithm 1) on a data file, an image folder, a preset or a YAML config"),
    "config": ("train", "print the resolved config of a preset, YAML file or data path, without training"),
    "presets": ("train", "list the built-in presets"),
    "info": ("info", "a run's config, step, latest metrics and checkpoints"),
    "sample": ("sample", "draw samples from a trained run (Algorithm 2: K + kappa steps)"),
    "evaluate": ("evaluate", "score samples on held-out data beside baselines, or with FID / another metric"),
    "ablate-steps": ("evaluate", "a metric against total flow length (Fig. 5)"),
    "chasm": ("studies", "the density-chasm study of Section 3.1 (Fig. 2 and 3)"),
    "figure": ("studies", "figures from trained runs (Fig. 10)"),
    "train-classifier": ("images", "train a digit classifier (for guidance and classifier_fd)"),
    "classifier-fd": ("images", "Frechet distance of two image sets in a classifier's features"),
    "classifier-report": ("images", "score a digits/mnist run with a classifier; writes RUN/metrics.json"),
    "image-figure": ("images", "image figures: samples, flow, interpolate, neighbours, prior (Fig. 4, 8, 9, 11)"),
    "sample-conditional": ("compose", "class-conditional samples: a run composed with a classifier (Eq. 12)"),
    "translate": ("compose", "unpaired image-to-image translation with a source-domain-prior run (Sec. 6.5)"),
    "refine": ("compose", "refine another generator's samples with a run trained on them as prior (DGflow)"),
}


def _chosen_command(argv: list[str]) -> str | None:
    """The first argument that names a command (options before it are the top level's)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with full options for the commands of ``command``'s module and a one-line
    entry for every other command (only the chosen command's module is imported)."""
    parser = _Parser(prog="fdrl", description="Flow-Guided Density Ratio Learning. "
                     "Start with: fdrl train TABLE.csv|ARRAY.npy|IMAGE_DIR, or fdrl train swissroll")
    parser.add_argument("--version", action="version", version=f"fdrl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [COMMANDS[command][0]] if command in COMMANDS else []
    registered: set[str] = set()
    for module in modules:
        importlib.import_module(f"fdrl.cli.{module}").register(sub)
        registered |= {name for name, (m, _) in COMMANDS.items() if m == module}
    for name, (_, helptext) in COMMANDS.items():
        if name not in registered:
            sub.add_parser(name, help=helptext, add_help=False)
    return parser


#: Errors that are the user's to fix: shown as one line, exit code 2.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError, FileNotFoundError, ValueError, NotADirectoryError, ModuleNotFoundError, IsADirectoryError,
    PermissionError,
)


def _user_errors() -> tuple[type[BaseException], ...]:
    """:data:`_USER_ERRORS` plus the library's own, from the modules already imported (the
    command's module imports what it raises; nothing is imported here for this)."""
    extra = []
    for module, name in (("fdrl.checkpoint", "CheckpointError"), ("fdrl.guard", "TrainingError")):
        if module in sys.modules:
            extra.append(getattr(sys.modules[module], name))
    return _USER_ERRORS + tuple(extra)


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """A warning as the command shows it: ``fdrl: warning: ...`` on one line, no source location."""
    return f"fdrl: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    warnings.filterwarnings("ignore", message=".*TensorFlow installation not found.*")
    warnings.formatwarning = _one_line_warning
    try:
        command = _chosen_command(argv)
        parser = build_parser(command)
        args, extra = parser.parse_known_args(argv)
        if extra and args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]  # key=value overrides given after an option
        elif extra:
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see: fdrl {args.command or ''} --help)")
        if args.command is None:
            parser.print_help()
            return 2
        return args.func(args)
    except KeyboardInterrupt:
        print("fdrl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `fdrl presets | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except Exception as err:  # noqa: BLE001 - only the user's errors are caught; others re-raise
        if not isinstance(err, _user_errors()):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"fdrl: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
