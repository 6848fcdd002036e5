"""(a) The swiss-roll training iteration (Algorithm 1: a K-step flow of Eq. 9 + one update + EMA)
of what ``fdrl train`` runs by default against the official-style reference (the authors'
algorithm as released: :class:`common.OfficialStyleIteration`), in one process, timed in
interleaved rounds. Prints JSON.

    python benchmarks/swissroll_iteration.py [--steps-k 200] [--batch 1024] [--width 64] [--depth 4]

Routes timed (each keeps its own copy of the same initial network, optimiser and EMA):

* ``official_style``: the reference.
* ``default``: ``training_step`` with ``FlowOptions.from_config("cpu", FlowConfig())``, the
  options ``fdrl train`` builds with no flags (the fused C++ MLP flow of ``fdrl.native``
  where it builds), plus fdrl's EMA.
* ``torch_compiled``: the torch route it replaced (``flow.cpu_kernel=false``): the closed-form
  MLP gradient compiled ``CPU_STEPS_PER_CALL`` steps per call by ``torch.compile``.
* ``eager``: torch alone, no compiled code (``cpu_kernel=false, compile=false``: the closed-form
  gradient in eager PyTorch).
* ``autograd_eager``: the fast path without the closed form and without compile (the default
  before issue 12); ``autograd_compiled``: the same compiled one step per call (the previous
  ``flow.compile=true``); ``closed_form_compiled_1``: the closed form compiled one step per call.

The inductor cache and fdrl's kernel cache start empty (fresh ``TORCHINDUCTOR_CACHE_DIR`` and
``FDRL_CACHE_DIR`` unless set), so ``first_iteration_s`` of the default includes building the C++
kernel and that of the first torch.compile route the cold compile. ``gemm_bound`` is
the official-style time over K times one flow step's FLOPs at the measured matmul rate: no route
whose GEMMs run at that rate can be faster than that. ``op_floor`` times each kernel of the
closed-form step alone (:func:`common.closed_form_op_floor`): the official-style time over K times
their sum is the most a route that runs them as separate kernels can gain.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="fdrl-inductor-"))
os.environ.setdefault("FDRL_CACHE_DIR", tempfile.mkdtemp(prefix="fdrl-kernels-"))

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (FdrlIteration, OfficialStyleIteration, closed_form_op_floor, flow_step_flops,  # noqa: E402
                    matmul_gflops)

from fdrl.config import FlowConfig  # noqa: E402
from fdrl.flow import CPU_STEPS_PER_CALL, FlowOptions, flow_route, frozen, ratio_potential  # noqa: E402
from fdrl.nets import MLP  # noqa: E402
from fdrl.objectives import get_objective  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps-k", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--objective", default="lsif-chi2")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (one iteration per route each)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--routes", default="all", help="'all' or 'main' (official_style, default, torch_compiled, eager)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    objective = get_objective(args.objective)
    K, eta, nu, lr = args.steps_k, 0.05, 0.01, 1e-4
    torch.manual_seed(0)
    initial = MLP((2,), width=args.width, depth=args.depth)
    x_data, x_prior = torch.randn(args.batch, 2), torch.randn(args.batch, 2)
    default = FlowOptions.from_config("cpu", FlowConfig())

    def fresh() -> torch.nn.Module:
        return copy.deepcopy(initial)

    official_net = fresh()
    routes = {
        "official_style": OfficialStyleIteration(official_net, objective, torch.optim.Adam(official_net.parameters(), lr=lr),
                                                 0.998),
        "default": FdrlIteration(fresh(), objective, lr, 0.998, default),
        "torch_compiled": FdrlIteration(fresh(), objective, lr, 0.998, FlowOptions.for_device("cpu", cpu_kernel=False)),
        "eager": FdrlIteration(fresh(), objective, lr, 0.998,
                               FlowOptions.for_device("cpu", compile=False, cpu_kernel=False)),
    }
    if args.routes == "all":
        routes.update({
            "autograd_eager": FdrlIteration(fresh(), objective, lr, 0.998,
                                            FlowOptions.for_device("cpu", compile=False, closed_form=False,
                                                                   cpu_kernel=False)),
            "autograd_compiled": FdrlIteration(fresh(), objective, lr, 0.998,
                                               FlowOptions.for_device("cpu", compile=True, closed_form=False,
                                                                      steps_per_call=1, cpu_kernel=False)),
            "closed_form_compiled_1": FdrlIteration(fresh(), objective, lr, 0.998,
                                                    FlowOptions.for_device("cpu", steps_per_call=1, cpu_kernel=False)),
        })

    def run(name: str) -> float:
        start = time.perf_counter()
        routes[name](x_data, x_prior, K, eta, nu, torch.Generator().manual_seed(0))
        return time.perf_counter() - start

    first = {name: run(name) for name in routes}  # includes each compiled route's compile
    times: dict[str, list[float]] = {name: [] for name in routes}
    for _ in range(args.rounds):
        for name in routes:
            times[name].append(run(name))
    median = {name: statistics.median(t) for name, t in times.items()}
    best = {name: min(t) for name, t in times.items()}

    # agreement: one more iteration of every route from the official route's current weights
    agreement = {}
    state = copy.deepcopy(routes["official_style"].net.state_dict())
    outputs = {}
    for name, route in routes.items():
        route.net.load_state_dict(state)
        outputs[name] = route(x_data, x_prior, K, eta, nu, torch.Generator().manual_seed(0))
    for name, (particles, loss) in outputs.items():
        ref_particles, ref_loss = outputs["official_style"]
        agreement[name] = {"max_abs_particle_diff": float((particles - ref_particles).abs().max()),
                           "loss_diff": float((loss - ref_loss).abs())}

    with frozen(initial):
        default_route = flow_route(ratio_potential(initial, objective), x_prior, default)
    flops = flow_step_flops(initial, objective, x_prior)
    gflops = matmul_gflops("cpu")
    gemm_bound = median["official_style"] / (K * flops / (gflops * 1e9))
    op_floor = closed_form_op_floor(initial, x_prior)
    result = {
        "benchmark": "swissroll_iteration", "batch": args.batch, "K": K, "mlp": [args.width] * args.depth,
        "objective": args.objective, "threads": args.threads, "rounds": args.rounds,
        "default_options": {**default.__dict__, "compile_resolved": "closed_form only" if default.compile is None
                            else default.compile},
        "default_route": default_route,
        "cpu_steps_per_call": CPU_STEPS_PER_CALL,
        "median_s": median, "best_s": best, "first_iteration_s": first,
        "speedup_default": median["official_style"] / median["default"],
        "speedup_eager": median["official_style"] / median["eager"],
        "speedup_torch_compiled": median["official_style"] / median["torch_compiled"],
        "speedup_default_best": best["official_style"] / best["default"],
        "speedups": {name: median["official_style"] / m for name, m in median.items()},
        "flow_step_gflop": flops / 1e9, "matmul_gflops": gflops, "gemm_bound_speedup": gemm_bound,
        # the default's flow FLOPs over its whole iteration time (update and EMA included): a lower
        # bound on the rate its products run at, to set beside MKL's matmul_gflops
        "default_gflops_at_least": K * flops / median["default"] / 1e9,
        "op_floor_step_us": {name: seconds * 1e6 for name, seconds in op_floor.items()},
        "op_floor_speedup": median["official_style"] / (K * op_floor["total"]),
        "agreement_vs_official_style": agreement,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
