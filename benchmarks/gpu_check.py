"""(d) The GPU check, one command for one GPU (sized for under 8 minutes): the CIFAR10 preset's
training iteration (Algorithm 1 with its resnet32, batch 64, K = 100, eta = 3) on synthetic
CIFAR-shaped data, official-style in strict fp32 (:class:`common.OfficialStyleIteration`, TF32
off) against what ``fdrl train cifar10_lsif_chi2`` runs by default on CUDA
(``FlowOptions.from_config``: channels_last, bf16 autocast of the estimator, TF32,
torch.compile). Prints JSON: step time, achieved TFLOP/s and its fraction of the measured fp32
and bf16 matmul rates, peak memory, and the particle and loss agreement after N iterations from
the same weights and draws (also for the fast path with bf16 and TF32 off, which must agree to
float rounding).

    python benchmarks/gpu_check.py              # on a CUDA machine
    python benchmarks/gpu_check.py --cpu-smoke  # tiny CPU run that checks the script works
"""

from __future__ import annotations

import argparse
import copy
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


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny width, batch and K on the CPU, compile off")
    ap.add_argument("--preset", default="cifar10_lsif_chi2")
    ap.add_argument("--iterations", type=int, default=5, help="timed iterations per route")
    ap.add_argument("--agreement-iterations", type=int, default=3, help="N: iterations from the same state")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    config = load_config(args.preset)
    if args.cpu_smoke:
        device, batch, K, width = "cpu", 4, 2, 0.0625
        fast = FlowOptions.for_device("cpu", compile=False)
        args.iterations, args.agreement_iterations = 1, 1
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check.py needs a CUDA GPU; pass --cpu-smoke to check the script on the CPU")
        device, batch, K, width = "cuda", config.train.batch_size, config.flow.steps, 1.0
        fast = FlowOptions.from_config("cuda", config.flow)
    objective = get_objective(config.objective)
    eta, nu, lr = config.step_size(), config.flow.noise, config.train.lr
    params = dict(config.model.params)
    if width != 1.0:
        params["width"] = width
    torch.manual_seed(0)
    initial = build_estimator(config.model.name, (3, 32, 32), **params).to(device)
    x_data = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1  # CIFAR-shaped, in [-1, 1]
    x_prior = torch.randn(batch, 3, 32, 32, device=device) * 0.5

    def generator() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(0)

    tf32_defaults = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32

    def strict_fp32(enabled: bool) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = (
            (False, False) if enabled else tf32_defaults)

    official_net = copy.deepcopy(initial)
    routes = {
        "official_style_fp32": OfficialStyleIteration(official_net, objective,
                                                      torch.optim.Adam(official_net.parameters(), lr=lr), config.train.ema),
        "fdrl_default": FdrlIteration(copy.deepcopy(initial), objective, lr, config.train.ema, fast),
        "fdrl_fp32": FdrlIteration(copy.deepcopy(initial), objective, lr, config.train.ema,
                                   FlowOptions(channels_last=fast.channels_last, compile=fast.compile)),
    }
    result: dict = {"benchmark": "gpu_check", "cpu_smoke": args.cpu_smoke, "preset": args.preset, "device": device,
                    "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "batch": batch, "K": K,
                    "estimator": config.model.name, "width": width, "fast_options": fast.__dict__, "routes": {}}
    flops_flow = flow_step_flops(initial, objective, x_prior)
    update = copy.deepcopy(initial)
    with FlopCounterMode(display=False) as counter:
        objective.loss(*update(torch.cat([x_data, x_prior])).split(batch)).backward()
    flops = K * flops_flow + counter.get_total_flops()
    result.update(gflop_per_iteration=flops / 1e9, matmul_fp32_gflops=None, matmul_bf16_gflops=None)
    strict_fp32(True)
    result["matmul_fp32_gflops"] = matmul_gflops(device)
    strict_fp32(False)
    if device == "cuda":
        result["matmul_bf16_gflops"] = matmul_gflops(device, 8192, torch.bfloat16)
        result["matmul_tf32_gflops"] = matmul_gflops(device, 8192)
    for name, route in routes.items():
        strict_fp32(name != "fdrl_default")
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        began = time.perf_counter()
        route(x_data, x_prior, K, eta, nu, generator())  # warm-up (and compile)
        _sync(device)
        first = time.perf_counter() - began
        times = []
        for _ in range(args.iterations):
            began = time.perf_counter()
            route(x_data, x_prior, K, eta, nu, generator())
            _sync(device)
            times.append(time.perf_counter() - began)
        step_s = statistics.median(times)
        peak = result["matmul_bf16_gflops"] if name == "fdrl_default" and fast.autocast_bf16 else result["matmul_fp32_gflops"]
        result["routes"][name] = {
            "first_iteration_s": first, "step_s": step_s, "tflops": flops / step_s / 1e12,
            "fraction_of_matmul_peak": flops / step_s / 1e9 / peak if peak else None,
            "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        }
    official = result["routes"]["official_style_fp32"]["step_s"]
    for name in routes:
        result["routes"][name]["speedup_vs_official_style"] = official / result["routes"][name]["step_s"]
    # agreement: N iterations of each route from the same weights and the same draws
    state = copy.deepcopy(initial.state_dict())
    finals = {}
    for name, route in routes.items():
        strict_fp32(name != "fdrl_default")
        route.net.load_state_dict(state)
        route.optimizer.state.clear()  # Adam's moments: every route starts its N iterations equal
        losses = []
        for i in range(args.agreement_iterations):
            particles, loss = route(x_data, x_prior, K, eta, nu, torch.Generator(device=device).manual_seed(i))
            losses.append(float(loss))
        finals[name] = (particles.float(), losses)
    strict_fp32(False)
    ref_particles, ref_losses = finals["official_style_fp32"]
    result["agreement"] = {
        name: {"iterations": args.agreement_iterations,
               "max_abs_particle_diff": float((p - ref_particles).abs().max()),
               "particle_scale": float(ref_particles.abs().max()),
               "max_abs_loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses))}
        for name, (p, losses) in finals.items() if name != "official_style_fp32"}
    result["wall_s"] = time.perf_counter() - start
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
