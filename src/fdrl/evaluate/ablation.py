"""Sample quality against total flow length (Fig. 5: FID against the number of steps of Eq. 9).

:func:`ablate_steps` flows one set of particles once, scoring it each time it reaches one of
the requested lengths, so the whole curve costs as many flow steps as its longest point. The
particles scored at length s are exactly ``model.sample(n, steps=s, seed=seed,
batch_size=batch_size)``: the same prior draws and the same noise stream per batch.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from fdrl.model import FDRL  # noqa: E402

#: File names written by :func:`ablate_steps` into its ``out_dir``.
TABLE_CSV, TABLE_JSON, FIGURE = "ablate_steps.csv", "ablate_steps.json", "ablate_steps.png"


def _plot(steps: list[int], values: list[float], metric_name: str, model: FDRL, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(steps, values, marker="o", color="tab:blue")
    ax.axvline(model.steps, color="0.5", ls="--", lw=1, label=f"K = {model.steps} (training)")
    if model.refine_steps:
        total = model.sampling_steps
        ax.axvline(total, color="tab:orange", ls=":", lw=1, label=f"K + kappa = {total} (sampling)")
    ax.set_xlabel("total flow length (steps of Eq. 9)")
    ax.set_ylabel(metric_name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ablate_steps(
    model: FDRL,
    steps_list: Iterable[int],
    metric_fn: Callable[[Tensor], float],
    n: int,
    seed: int,
    out_dir: str | Path,
    metric_name: str = "metric",
    batch_size: int | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score ``n`` samples of ``model`` after each total flow length in ``steps_list``.

    ``metric_fn`` maps samples (n, ...) to a number, e.g. a metric of
    :data:`fdrl.evaluate.METRICS` with its reference bound. Writes ``ablate_steps.csv``
    (steps, metric), ``ablate_steps.json`` (the returned record) and ``ablate_steps.png``
    (the metric against flow length, with K and K + kappa marked) into ``out_dir``; ``info``
    (e.g. the checkpoint and reference) is stored in the JSON record too.
    """
    steps = sorted({int(s) for s in steps_list})
    if not steps or steps[0] < 0:
        raise ValueError(f"flow lengths must be a non-empty list of integers >= 0, got {list(steps_list)}")
    draws = list(model.prior_batches(n, seed, batch_size))
    particles = [x0.cpu() for _, x0, _ in draws]
    generators = [generator for _, _, generator in draws]
    values, done = [], 0
    for target in steps:
        particles = [model.flow(x, target - done, g).cpu() for x, g in zip(particles, generators)]
        done = target
        values.append(float(metric_fn(model.as_rows(torch.cat(particles)))))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / TABLE_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["steps", metric_name])
        writer.writerows(zip(steps, values))
    record = {
        **(info or {}),
        "metric": metric_name,
        "n": n,
        "seed": seed,
        "training_steps": model.steps,
        "refine_steps": model.refine_steps,
        "rows": [{"steps": s, metric_name: v} for s, v in zip(steps, values)],
    }
    (out / TABLE_JSON).write_text(json.dumps(record, indent=2))
    _plot(steps, values, metric_name, model, out / FIGURE)
    return record
