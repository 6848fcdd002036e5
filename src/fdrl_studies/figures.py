"""Figures drawn from trained runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from fdrl.data import build_data
from fdrl.model import FDRL
from fdrl.plots import scatter_panels
from fdrl.rundir import run_config


def pairings_figure(runs: Sequence[str | Path], out: str | Path, n: int = 2000, seed: int = 0) -> Path:
    """Fig. 10: one panel of ``n`` samples per run (e.g. one run per pairing), over the data."""
    panels = []
    reference = None
    for run in runs:
        model = FDRL.load(run)
        samples = model.sample(n, seed=seed)
        if samples.ndim != 2:
            raise ValueError(f"run '{run}' holds images; this figure draws 2-D samples")
        panels.append((model.objective.name.upper(), samples))
        if reference is None:
            config = run_config(run)
            reference = build_data(config["data"]["name"], **config["data"]["params"]).draw(n, seed)
    both = torch.cat([p for _, p in panels] + [reference])
    lo, hi = float(both.quantile(0.001)), float(both.quantile(0.999))
    return scatter_panels(panels, out, reference=reference, limits=(lo - 0.2, hi + 0.2))
