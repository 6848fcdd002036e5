"""``fdrl info RUN``: what a run directory holds, read from its files without PyTorch.

The config, the newest checkpoint's step (checkpoint names carry it), the last training
record of ``metrics.jsonl`` and the route its training flow took (:class:`fdrl.config.FlowPlan`,
which sampling follows), the held-out report of ``metrics.json`` (verdict, scores with
their uncertainty, memorisation; :func:`fdrl.report_text.report_lines`) and the checkpoints. A
damaged file is named in the output and skipped; nothing here loads a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from fdrl.cli.common import run_dir
from fdrl.config import FlowPlan, read_run_config
from fdrl.report_text import report_lines

_CHECKPOINT = re.compile(r"^ckpt_(\d{9})\.pt$")


def register(subparsers: Any) -> None:
    """Add ``info`` to ``subparsers``."""
    p = subparsers.add_parser("info", help="a run's config, step, latest metrics and checkpoints")
    p.add_argument("run", type=run_dir, metavar="RUN_DIR")
    p.set_defaults(func=cmd_info)


def _last_records(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None, int]:
    """The last record with a loss in ``metrics.jsonl``, the last flow plan and marginal
    calibration recorded there, and the number of unreadable lines (a run killed mid-write leaves
    a partial line)."""
    last, plan, marginals, bad = None, None, None, 0
    if not path.is_file():
        return None, None, None, 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(record, dict) and "loss" in record:
            last = record
        elif isinstance(record, dict) and record.get("event") == "flow_plan":
            plan = record
        elif isinstance(record, dict) and record.get("event") == "marginals":
            marginals = record
    return last, plan, marginals, bad


def _space_line(run: Path) -> str | None:
    """What a principal-space run flows (``space.json``), or None for a run in the data's space."""
    path = run / "space.json"
    if not path.is_file():
        return None
    try:
        k = int(json.loads(path.read_text())["k"])
    except (OSError, ValueError, KeyError, TypeError):
        return "space.json is unreadable"
    return f"the leading {k} principal coefficients of the images (samples decode to full images)"


def _marginals_line(event: dict[str, Any]) -> str:
    """The marginal calibration's record in words."""
    strength, features = event.get("strength"), event.get("features")
    copies, unmapped = event.get("near_copies"), event.get("features_within_noise")
    shown = f"{copies:.1%}" if isinstance(copies, (int, float)) else "?"
    left = f"; {unmapped} left as sampled (within the noise of the rows')" if unmapped else ""
    if not features:
        return f"not applied: every feature's sampled marginal is within the noise of the rows'"
    if not strength:
        return f"not applied: every strength made near-copies of training rows ({shown} at the weakest){left}"
    return (f"{features} features mapped onto the training data's marginals at strength {strength} "
            f"(near-copies {shown}){left}")


def _prior_line(run: Path, config: dict) -> str:
    """The prior's config name and, from the run's ``prior.json``, the fitted kind (and a
    mixture's components); read as JSON, without PyTorch."""
    name = (config.get("prior") or {}).get("name")
    try:
        fitted = json.loads((run / "prior.json").read_text())
    except FileNotFoundError:
        return f"{name} (not fitted yet)"
    except (OSError, ValueError):
        return f"{name} (prior.json is unreadable)"
    if not isinstance(fitted, dict):
        return f"{name} (prior.json is unreadable)"
    parts = [str(fitted.get("kind"))]
    if isinstance(fitted.get("components"), int):
        k = fitted["components"]
        parts.append(f"{k} component{'s' if k != 1 else ''}")
    return f"{name}: " + ", ".join(parts)


def cmd_info(args: argparse.Namespace) -> int:
    import yaml

    run: Path = args.run
    config = read_run_config(run)
    train = config["train"]
    checkpoints = sorted(p for p in (run / "checkpoints").glob("ckpt_*.pt") if _CHECKPOINT.match(p.name))
    step = int(_CHECKPOINT.match(checkpoints[-1].name).group(1)) if checkpoints else 0
    print(f"run       {run}")
    print(f"name      {config.get('name')}   objective {config.get('objective')}   "
          f"data {(config.get('data') or {}).get('name')}   model {(config.get('model') or {}).get('name')}")
    print(f"prior     {_prior_line(run, config)}")
    space = _space_line(run)
    if space is not None:
        print(f"space     {space}")
    print(f"step      {step} of {train.get('steps')}")
    record, plan, marginals, bad = _last_records(run / "metrics.jsonl")
    # the map's file (fdrl.data.marginals.MARGINALS_FILE, not imported: that module needs torch) is
    # removed when a run is trained on without calibration, while its old record stays in the log
    if marginals is not None and (not marginals.get("strength") or (run / "marginals.safetensors").is_file()):
        print(f"marginals {_marginals_line(marginals)}")
    if plan is not None:
        try:
            print(f"flow      {FlowPlan.from_mapping(plan).describe()}; samples follow it")
        except (ValueError, TypeError):
            print("flow      the recorded flow plan in metrics.jsonl is unreadable (skipped)")
    if record is not None:
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
        print(f"latest    {shown}")
    if bad:
        print(f"          ({bad} unreadable line(s) in metrics.jsonl skipped)")
    scores = run / "metrics.json"
    if scores.is_file():
        try:
            lines = report_lines(json.loads(scores.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            print(f"held-out  {scores} is unreadable (skipped); re-score with: fdrl evaluate {run}")
        else:
            print("held-out  (metrics.json)")
            print("\n".join(f"  {line}" for line in lines))
    best = run / "checkpoints" / "best.pt"
    names = [p.name for p in checkpoints] + (["best.pt"] if best.exists() else [])
    print(f"checkpoints  {', '.join(names) if names else 'none yet'}")
    print("config")
    print("  " + yaml.safe_dump(config, sort_keys=False).rstrip().replace("\n", "\n  "))
    return 0
