"""``fdrl sample``: Algorithm 2 from a trained run, written as a file, a figure or PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fdrl.cli.common import positive_int, run_dir, seed
from fdrl.cli.compose import add_guidance_arguments, guidance_from_args
from fdrl.model import FDRL
from fdrl.sample_files import check_output, is_folder_target, write_samples


def register(subparsers: Any) -> None:
    """Add ``sample`` to ``subparsers``."""
    p = subparsers.add_parser("sample", help="draw samples from a trained run (Algorithm 2: K + kappa steps)")
    p.add_argument("run", type=run_dir, help="run directory or saved model directory")
    p.add_argument("-n", "--n", dest="n", type=positive_int, default=1000, help="how many samples (default 1000)")
    p.add_argument("--steps", type=positive_int, help="total flow steps (default K + kappa)")
    p.add_argument("--batch", type=positive_int, help="samples per batch")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--checkpoint", type=Path, help="a specific checkpoint file (default: newest)")
    p.add_argument("--out", help="FILE.pt (a tensor: torch.load(FILE, weights_only=True)), .safetensors, .npy, "
                   ".csv (rows of the training table: its header, column types and decimals), .png (a grid of 64 images or a scatter), "
                   "or DIR/ (one PNG per image); default RUN/samples.pt. Samples are in the data's units.")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true")
    add_guidance_arguments(p)
    p.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    model = FDRL.load(args.run, device=args.device or "auto", checkpoint=args.checkpoint)
    out = Path(args.out) if args.out else args.run / "samples.pt"
    folder = is_folder_target(out, args.out)
    check_output(out, images=len(model.sample_shape) >= 2, folder=folder, codec=model.codec)  # before sampling
    samples = model.sample(args.n, steps=args.steps, seed=args.seed, batch_size=args.batch,
                           progress=not args.quiet, guidance=guidance_from_args(args, model, args.n))
    what = write_samples(samples, out, folder=folder, columns=model.columns, codec=model.codec)
    steps = model.total_steps(args.steps)
    print(f"wrote {what} ({steps} flow steps)")
    return 0
