"""(d) The GPU check, one command for one GPU, sized to finish within 8 minutes: the CIFAR10
preset's training iteration (Algorithm 1 with its resnet32, batch 64, K = 100, eta = 3) on
synthetic CIFAR-shaped data, four routes from the same weights and the same draws:

* ``official_style_fp32``: the authors' algorithm as released (:class:`common.OfficialStyleIteration`),
  strict fp32 (TF32 off);
* ``fdrl_default``: what ``fdrl train cifar10_lsif_chi2`` runs on CUDA
  (``FlowOptions.from_config``, table ``fdrl.flow.DEVICE_DEFAULTS``): fp32 particles and
  estimator, TF32 allowed, channels_last, torch.compile of the flow step;
* ``fdrl_fp32``: the same with TF32 off, which must agree with official_style to float rounding;
* ``fdrl_bf16_opt_in``: the defaults plus ``flow.autocast_bf16=true`` (opt-in).

Phases: (1) per route a warm-up iteration (compiles) and ``--iterations`` timed ones: step time,
achieved TFLOP/s and fraction of the measured matmul peak, peak memory; (2) per route a loss
curve of up to ``--curve-steps`` iterations from the same initial weights, step i drawing the
same data batch, prior batch and flow noise on every route, with the particles' and losses'
differences from official_style after ``--agreement-iterations`` and over the whole curve.
The curves share what the time budget (``--budget-s``, default 420 s, leaving a minute of the 8
for start-up) leaves after phase 1: each route gets an equal share divided by its measured step
time, at least ``--agreement-iterations`` steps; the JSON records the steps each route ran.
Nothing else scales with the GPU's speed. This script has never run on a GPU.

    python benchmarks/gpu_check.py              # on a CUDA machine
    python benchmarks/gpu_check.py --cpu-smoke  # tiny CPU run that checks the script works
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FdrlIteration, OfficialStyleIteration, flow_step_flops, matmul_gflops  # noqa: E402

from fdrl.config import load_config  # noqa: E402
from fdrl.flow import FlowOptions  # noqa: E402
from fdrl.nets import build_estimator  # noqa: E402
from fdrl.objectives import get_objective  # noqa: E402

#: synthetic images drawn once; each step takes a batch of them (CIFAR-shaped, in [-1, 1])
POOL = 2048


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny width, batch and K on the CPU, compile off")
    ap.add_argument("--preset", default="cifar10_lsif_chi2")
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations per route (after one warm-up)")
    ap.add_argument("--agreement-iterations", type=int, default=3, help="N: particle agreement after N iterations")
    ap.add_argument("--curve-steps", type=int, default=300, help="most loss-curve iterations per route")
    ap.add_argument("--budget-s", type=float, default=420.0, help="wall time the whole check may take")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    config = load_config(args.preset)
    if args.cpu_smoke:
        # one thread: tiny tensors, and two OpenMP threads busy-wait on a shared 2-core machine (a test
        # run of the smoke check once took over 120 s that way instead of 6 s)
        torch.set_num_threads(1)
        device, batch, K, width = "cpu", 4, 2, 0.0625
        fast = FlowOptions.for_device("cpu", compile=False, estimator=config.model.name)
        args.iterations, args.agreement_iterations, args.curve_steps = 1, 2, 3
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check.py needs a CUDA GPU; pass --cpu-smoke to check the script on the CPU")
        device, batch, K, width = "cuda", config.train.batch_size, config.flow.steps, 1.0
        fast = FlowOptions.from_config("cuda", config.flow, config.model.name)
    objective = get_objective(config.objective)
    eta, nu, lr = config.step_size(), config.flow.noise, config.train.lr
    params = dict(config.model.params)
    if width != 1.0:
        params["width"] = width
    torch.manual_seed(0)
    initial = build_estimator(config.model.name, (3, 32, 32), **params).to(device)
    pool = torch.rand(POOL, 3, 32, 32, device=device) * 2 - 1

    def draws(i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
        """Step i's data batch, prior batch and flow-noise generator: the same on every route."""
        g = torch.Generator(device=device).manual_seed(i)
        index = torch.randint(POOL, (batch,), generator=g, device=device)
        prior = torch.randn(batch, 3, 32, 32, generator=g, device=device) * 0.5
        return pool[index], prior, torch.Generator(device=device).manual_seed(10**6 + i)

    tf32_defaults = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32

    def global_tf32(allowed: bool) -> None:
        """TF32 outside the flow (the update's forward and backward) as each route runs it."""
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = (
            tf32_defaults if allowed else (False, False))

    options = {"fdrl_default": fast, "fdrl_fp32": dataclasses.replace(fast, tf32=False),
               "fdrl_bf16_opt_in": dataclasses.replace(fast, autocast_bf16=True)}
    tf32_allowed = {"official_style_fp32": False, **{name: o.tf32 for name, o in options.items()}}

    def fresh_routes() -> dict:
        official = copy.deepcopy(initial)
        return {"official_style_fp32": OfficialStyleIteration(
                    official, objective, torch.optim.Adam(official.parameters(), lr=lr), config.train.ema),
                **{name: FdrlIteration(copy.deepcopy(initial), objective, lr, config.train.ema, o)
                   for name, o in options.items()}}

    result: dict = {"benchmark": "gpu_check", "cpu_smoke": args.cpu_smoke, "preset": args.preset, "device": device,
                    "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "batch": batch, "K": K,
                    "estimator": config.model.name, "width": width, "budget_s": args.budget_s,
                    "options": {name: dataclasses.asdict(o) for name, o in options.items()}, "routes": {}}
    x_data, x_prior, _ = draws(0)
    flops_flow = flow_step_flops(initial, objective, x_prior)
    update = copy.deepcopy(initial)
    with FlopCounterMode(display=False) as counter:
        objective.loss(*update(torch.cat([x_data, x_prior])).split(batch)).backward()
    flops = K * flops_flow + counter.get_total_flops()
    global_tf32(False)
    result.update(gflop_per_iteration=flops / 1e9, matmul_fp32_gflops=matmul_gflops(device),
                  matmul_tf32_gflops=None, matmul_bf16_gflops=None)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        result["matmul_tf32_gflops"] = matmul_gflops(device, 8192)
        result["matmul_bf16_gflops"] = matmul_gflops(device, 8192, torch.bfloat16)
    global_tf32(True)

    # phase 1: time each route (the warm-up iteration compiles)
    routes = fresh_routes()
    for name, route in routes.items():
        global_tf32(tf32_allowed[name])
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        began = time.perf_counter()
        route(x_data, x_prior, K, eta, nu, draws(0)[2])
        _sync(device)
        first = time.perf_counter() - began
        times = []
        for i in range(args.iterations):
            began = time.perf_counter()
            route(*draws(i)[:2], K, eta, nu, draws(i)[2])
            _sync(device)
            times.append(time.perf_counter() - began)
        step_s = statistics.median(times)
        peak = {"fdrl_bf16_opt_in": result["matmul_bf16_gflops"],
                "fdrl_default": result["matmul_tf32_gflops"]}.get(name) or result["matmul_fp32_gflops"]
        result["routes"][name] = {
            "first_iteration_s": first, "step_s": step_s, "tflops": flops / step_s / 1e12,
            "fraction_of_matmul_peak": flops / step_s / 1e9 / peak,
            "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        }
    official = result["routes"]["official_style_fp32"]["step_s"]
    for name in routes:
        result["routes"][name]["speedup_vs_official_style"] = official / result["routes"][name]["step_s"]

    # phase 2: loss curves from the same initial weights and the same draws, in the time left
    routes = fresh_routes()  # compiled code is cached, the weights and Adam moments start afresh
    curves, finals = {}, {}
    for left, (name, route) in zip(range(len(routes), 0, -1), routes.items()):
        share = (args.budget_s - (time.perf_counter() - start)) / left
        steps = max(args.agreement_iterations,
                    min(args.curve_steps, int(share / result["routes"][name]["step_s"])))
        global_tf32(tf32_allowed[name])
        losses = []
        for i in range(steps):
            particles, loss = route(*draws(i)[:2], K, eta, nu, draws(i)[2])
            losses.append(float(loss))
            if i + 1 == args.agreement_iterations:
                finals[name] = particles.float().contiguous()
        curves[name] = losses
        result["routes"][name]["curve_steps"] = steps
    global_tf32(True)
    result["loss_curves"] = curves
    reference, ref_curve = finals["official_style_fp32"], curves["official_style_fp32"]
    result["agreement"] = {
        name: {"iterations": args.agreement_iterations,
               "max_abs_particle_diff": float((finals[name] - reference).abs().max()),
               "particle_scale": float(reference.abs().max()),
               "max_abs_loss_diff_first_n": max(abs(a - b) for a, b in
                                                zip(curves[name][:args.agreement_iterations], ref_curve)),
               "max_abs_loss_diff_curve": max(abs(a - b) for a, b in zip(curves[name], ref_curve)),
               "final_loss": curves[name][-1]}
        for name in curves if name != "official_style_fp32"}
    result["wall_s"] = time.perf_counter() - start
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
