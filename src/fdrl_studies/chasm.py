"""The density-chasm study of Section 3.1 (Fig. 2 and 3).

q = N(0, 0.1 I) and p = N(c 1, 0.1 I) in 2-D, with c = 6 (the hard case, a chasm) or c = 1
(the easy case).

(a) Stale estimator (DGflow's assumption, Eq. 5): an MLP trained on samples of q against p,
    then frozen, and particles from q flowed with it (400 steps in the hard case, 15 in the
    easy case). Its gradients depend strongly on the step size, so the whole eta sweep is
    reported, for every seed.
(b) FDRL (Algorithm 1) with q as the prior, T iterations, then sampled with K + kappa steps.

A stale estimator is Algorithm 1 with K = 0: it only ever sees prior samples. Both arms use
:func:`fdrl.train.training_step`, so they differ in nothing but the flow during training.

Which weights FDRL samples with: the raw trained network. With T = 1000 an EMA of rate 0.998
averages over about the last 500 iterations, half of the run, so it mixes in networks from
when the flowed particles were still inside the chasm; those carry the particles short of p.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fdrl import seeding
from fdrl.data import build_data
from fdrl.flow import flow, frozen, ratio_potential
from fdrl.nets import MLP
from fdrl.objectives import get_objective
from fdrl.plots import scatter_panels
from fdrl.priors import GaussianPrior
from fdrl.train import training_step

VARIANCE = 0.1


@dataclass
class ChasmSettings:
    """Everything the study depends on; written to ``metrics.json`` with the results."""

    objective: str = "lsif-chi2"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    hard_offset: float = 6.0
    easy_offset: float = 1.0
    width: int = 128
    depth: int = 3
    batch_size: int = 256
    lr: float = 1e-3
    # (a) stale estimator
    stale_iterations: int = 2000
    stale_steps_hard: int = 400
    stale_steps_easy: int = 15
    etas: list[float] | None = None
    # (b) FDRL
    fdrl_iterations: int = 1000
    fdrl_steps: int = 20
    fdrl_refine_steps: int = 5
    fdrl_eta: float = 0.01
    noise: float = 1e-2
    snapshots: list[int] = field(default_factory=lambda: [10, 40, 1000])
    sweep_n: int = 500
    eval_n: int = 2000

    def eta_sweep(self) -> list[float]:
        """Quarter decades from 1e-9 to 1e-3 (where the stale flows cross over from barely moving
        to exploding), then decades to 1."""
        return self.etas or [round(10 ** (k / 4), 12) for k in range(-36, -11)] + [1e-2, 1e-1, 1.0]


def particle_stats(x: Tensor, target_mean: Tensor) -> dict[str, Any]:
    """Distance from the particles' mean to p's mean and the per-axis standard deviation."""
    x = x.double()
    finite = torch.isfinite(x).all(1)
    mean = x.mean(0)
    distance = float(torch.linalg.norm(mean - target_mean.double()))
    return {
        "mean_distance": distance if math.isfinite(distance) else float("inf"),
        "std": [float(s) for s in x.std(0)],
        "mean": [float(m) for m in mean],
        "finite_fraction": float(finite.double().mean()),
    }


def _make_net(settings: ChasmSettings, seed: int) -> MLP:
    torch.manual_seed(seeding.derived_seed(seed, "init"))
    return MLP((2,), settings.width, settings.depth)


def train_estimator(
    settings: ChasmSettings, offset: float, seed: int, flow_steps: int, record: bool = False
) -> tuple[MLP, dict[str, Any]]:
    """Algorithm 1 on q = N(0, 0.1 I) -> p = N(offset 1, 0.1 I); ``flow_steps`` = 0 is the stale estimator.

    With ``record``, keeps the flowed particles at the snapshot iterations and the path of
    their mean (Fig. 3).
    """
    objective = get_objective(settings.objective)
    prior = GaussianPrior.isotropic([0.0, 0.0], VARIANCE)
    data = build_data("gaussian", mean=[offset, offset], variance=VARIANCE)
    net = _make_net(settings, seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    iterations = settings.fdrl_iterations if flow_steps else settings.stale_iterations
    history: dict[str, Any] = {"mean_path": [], "snapshots": {}, "loss": []}
    for step in range(iterations):
        x_p = data.batch(step, settings.batch_size, seed)
        x_0 = prior.sample(settings.batch_size, seeding.generator(seed, "prior", step))
        out = training_step(net, objective, optimizer, x_p, x_0, flow_steps, settings.fdrl_eta,
                            settings.noise, seeding.generator(seed, "flow", step))
        if record:
            history["mean_path"].append(out.particles.mean(0).tolist())
            if step + 1 in settings.snapshots or step + 1 == iterations:
                history["snapshots"][step + 1] = out.particles
        if (step + 1) % 100 == 0:
            history["loss"].append(float(out.loss))
    return net, history


def flow_from_prior(net: MLP, settings: ChasmSettings, steps: int, eta: float, seed: int, n: int) -> tuple[Tensor, Tensor]:
    """``n`` prior particles and the same particles after ``steps`` of Eq. 9 with the frozen ``net``."""
    objective = get_objective(settings.objective)
    x0 = GaussianPrior.isotropic([0.0, 0.0], VARIANCE).sample(n, seeding.generator(seed, "eval"))
    with frozen(net), np.errstate(all="ignore"):
        x = flow(x0, ratio_potential(net, objective), steps, eta, settings.noise, seeding.generator(seed, "eval", 1))
    return x0, x


def _stale_case(settings: ChasmSettings, offset: float, steps: int, progress) -> dict[str, Any]:
    target = torch.full((2,), offset)
    per_eta: dict[str, dict[str, Any]] = {f"{eta:g}": {"seeds": {}} for eta in settings.eta_sweep()}
    particles: dict[str, tuple[Tensor, Tensor]] = {}
    for seed in settings.seeds:
        net, history = train_estimator(settings, offset, seed, flow_steps=0)
        for eta in settings.eta_sweep():
            x0, x = flow_from_prior(net, settings, steps, eta, seed, settings.sweep_n)
            per_eta[f"{eta:g}"]["seeds"][str(seed)] = {**particle_stats(x, target), "final_loss": history["loss"][-1]}
            if seed == settings.seeds[0]:
                particles[f"{eta:g}"] = (x0, x)
        progress(f"stale estimator, offset {offset:g}, seed {seed}")
    for entry in per_eta.values():
        distances = [s["mean_distance"] for s in entry["seeds"].values()]
        entry["mean_distance_avg"] = float(np.mean(distances))
    best = min(per_eta, key=lambda k: per_eta[k]["mean_distance_avg"])
    return {"flow_steps": steps, "etas": per_eta, "best_eta": float(best),
            "best_mean_distance_avg": per_eta[best]["mean_distance_avg"], "_particles": particles}


def _fdrl_case(settings: ChasmSettings, offset: float, progress) -> dict[str, Any]:
    target = torch.full((2,), offset)
    seeds: dict[str, Any] = {}
    first: dict[str, Any] = {}
    for seed in settings.seeds:
        net, history = train_estimator(settings, offset, seed, settings.fdrl_steps, record=True)
        x0, x = flow_from_prior(net, settings, settings.fdrl_steps + settings.fdrl_refine_steps,
                                settings.fdrl_eta, seed, settings.eval_n)
        seeds[str(seed)] = {**particle_stats(x, target), "final_loss": history["loss"][-1]}
        if not first:
            first = {"history": history, "x0": x0, "x": x}
        progress(f"FDRL, offset {offset:g}, seed {seed}")
    distances = [s["mean_distance"] for s in seeds.values()]
    return {"sample_steps": settings.fdrl_steps + settings.fdrl_refine_steps, "seeds": seeds,
            "mean_distance_avg": float(np.mean(distances)), "mean_distance_max": float(np.max(distances)),
            "_first": first}


def _figures(out: Path, settings: ChasmSettings, results: dict[str, Any]) -> None:
    lim = (-1.5, settings.hard_offset + 1.5)
    target = GaussianPrior.isotropic([settings.hard_offset] * 2, VARIANCE).sample(500, torch.Generator().manual_seed(0))
    easy_target = GaussianPrior.isotropic([settings.easy_offset] * 2, VARIANCE).sample(500, torch.Generator().manual_seed(0))
    # Fig. 2: stale estimator, easy case at its best eta, hard case for every eta of the sweep
    easy = results["stale_easy"]
    x0, x = easy["_particles"][f"{easy['best_eta']:g}"]
    scatter_panels([("q (prior)", x0), (f"easy, stale, eta={easy['best_eta']:g}, K={easy['flow_steps']}", x)],
                   out / "fig2a_stale_easy.png", reference=easy_target, limits=(-1.5, settings.easy_offset + 1.5), point_size=2)
    hard = results["stale_hard"]
    panels = [(f"stale, eta={eta}, K={hard['flow_steps']}", xs[1]) for eta, xs in hard["_particles"].items()]
    scatter_panels(panels, out / "fig2b_stale_hard_sweep.png", reference=target, limits=lim, point_size=2, ncols=7)
    # Fig. 3: FDRL's flowed particles at three training iterations, and the path of their mean
    first = results["fdrl_hard"]["_first"]
    snaps = [(f"tau = {k}", v) for k, v in sorted(first["history"]["snapshots"].items())]
    scatter_panels(snaps + [(f"FDRL samples, {results['fdrl_hard']['sample_steps']} steps", first["x"])],
                   out / "fig3_fdrl_training.png", reference=target, limits=lim, point_size=2)
    path = torch.tensor(first["history"]["mean_path"])
    scatter_panels([("mean of flowed particles over training", path)], out / "fig3_mean_path.png",
                   reference=target, limits=lim, point_size=4)


def _public(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _public(v) for k, v in d.items() if not str(k).startswith("_")}
    return d


def run_chasm_study(out: str | Path, settings: ChasmSettings | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (a) and (b) for every seed, write ``metrics.json`` and the figures into ``out``."""
    settings = settings or ChasmSettings()
    get_objective(settings.objective)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def report(message: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - start:6.1f}s] {message}", flush=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2-D toys: one thread is fastest, and immune to busy-wait on a loaded CPU
    try:
        results = {
            "stale_hard": _stale_case(settings, settings.hard_offset, settings.stale_steps_hard, report),
            "stale_easy": _stale_case(settings, settings.easy_offset, settings.stale_steps_easy, report),
            "fdrl_hard": _fdrl_case(settings, settings.hard_offset, report),
            "fdrl_easy": _fdrl_case(settings, settings.easy_offset, report),
        }
    finally:
        torch.set_num_threads(threads)
    _figures(out, settings, results)
    summary = {
        "fdrl_hard_mean_distance_per_seed": {s: v["mean_distance"] for s, v in results["fdrl_hard"]["seeds"].items()},
        "fdrl_hard_std_per_seed": {s: v["std"] for s, v in results["fdrl_hard"]["seeds"].items()},
        "stale_hard_mean_distance_avg_per_eta": {e: v["mean_distance_avg"] for e, v in results["stale_hard"]["etas"].items()},
        "stale_easy_best_eta": results["stale_easy"]["best_eta"],
        "stale_easy_best_mean_distance_avg": results["stale_easy"]["best_mean_distance_avg"],
        "target_std": math.sqrt(VARIANCE),
        "sampled_with": "raw trained weights (no EMA), see fdrl_studies.chasm",
        "seconds": round(time.perf_counter() - start, 1),
    }
    metrics = {"settings": asdict(settings) | {"etas": settings.eta_sweep()}, "summary": summary, **_public(results)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
