"""``fdrl chasm`` (Section 3.1) and ``fdrl figure swissroll`` (Fig. 10)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fdrl.cli.common import floats, out_dir, out_file, positive_int, run_dir, seed, seeds


def register(subparsers: Any) -> None:
    """Add ``chasm`` and ``figure`` to ``subparsers``."""
    p = subparsers.add_parser("chasm", help="the density-chasm study of Section 3.1 (Fig. 2 and 3)")
    p.add_argument("--out", type=out_dir, default="runs/chasm")
    p.add_argument("--seeds", type=seeds, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--etas", type=floats, default=None, help="step sizes for the stale-estimator sweep")
    p.add_argument("--objective", default="lsif-chi2")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_chasm)

    p = subparsers.add_parser("figure", help="figures from trained runs (Fig. 10)")
    fig_sub = p.add_subparsers(dest="figure", metavar="FIGURE", required=True)
    q = fig_sub.add_parser("swissroll", help="one panel per run, like Fig. 10 (one run per pairing)")
    q.add_argument("runs", nargs="+", type=run_dir)
    q.add_argument("--out", type=out_file, default="swissroll.png")
    q.add_argument("--n", type=positive_int, default=2000)
    q.add_argument("--seed", type=seed, default=0)
    q.set_defaults(func=cmd_figure)


def cmd_chasm(args: argparse.Namespace) -> int:
    from fdrl_studies.chasm import ChasmSettings, run_chasm_study

    settings = ChasmSettings(seeds=args.seeds, etas=args.etas, objective=args.objective)
    metrics = run_chasm_study(args.out, settings, progress=not args.quiet)
    print(json.dumps(metrics["summary"], indent=2))
    print(f"metrics and figures in {args.out}")
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from fdrl_studies.figures import pairings_figure

    path = pairings_figure(args.runs, args.out, n=args.n, seed=args.seed)
    print(f"wrote {path}")
    return 0
