"""(a) The swiss-roll training iteration (Algorithm 1: K-step flow + one update), fast path vs
the naive reference, in one process. Prints JSON.

    python benchmarks/swissroll_iteration.py [--steps-k 200] [--batch 1024] [--width 64]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import flow_step_flops, naive_flow, timed  # noqa: E402

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from fdrl.flow import FlowOptions  # noqa: E402
from fdrl.nets import MLP  # noqa: E402
from fdrl.objectives import get_objective  # noqa: E402
from fdrl.train import training_step  # noqa: E402

flow_module = importlib.import_module("fdrl.flow")  # the module (``fdrl.flow`` is also the function)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps-k", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile'd fast path")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    objective = get_objective("lsif-chi2")
    torch.manual_seed(0)
    net = MLP((2,), width=args.width, depth=args.depth)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x_data, x_prior = torch.randn(args.batch, 2), torch.randn(args.batch, 2)
    K, eta, nu = args.steps_k, 0.05, 0.01

    def naive_iteration():
        x_k = naive_flow(net, objective, x_prior, K, eta, nu, torch.Generator().manual_seed(0))
        out = net(torch.cat([x_data, x_k]))
        loss = objective.loss(out[: args.batch], out[args.batch:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def fast_iteration(options):
        training_step(net, objective, opt, x_data, x_prior, K, eta, nu, torch.Generator().manual_seed(0),
                      options=options)

    result = {"benchmark": "swissroll_iteration", "batch": args.batch, "K": K, "mlp": [args.width] * args.depth,
              "threads": args.threads}
    options = FlowOptions.for_device("cpu")
    naive = timed(naive_iteration, args.repeat)
    fast = timed(lambda: fast_iteration(options), args.repeat)
    result.update(naive_s=naive, fast_s=fast, speedup=naive / fast)
    narrow, flow_module.NARROW_INPUT_FEATURES = flow_module.NARROW_INPUT_FEATURES, 0
    row_major = timed(lambda: fast_iteration(options), args.repeat)
    flow_module.NARROW_INPUT_FEATURES = narrow
    result.update(fast_row_major_s=row_major, speedup_layout=row_major / fast)
    # FLOPs: the naive iteration counted whole; the fast one is the same update with K flow
    # steps that skip the parameter gradients (the counter cannot run inside autograd.grad, so
    # the fast step is counted by flow_step_flops). naive/fast is the compute bound of the
    # speed-up when both run at the same FLOP rate.
    with FlopCounterMode(display=False) as counter:
        naive_iteration()
    with FlopCounterMode(display=False) as step_counter:
        naive_flow(net, objective, x_prior, 1, eta, nu)
    naive_flops = counter.get_total_flops()
    fast_flops = naive_flops - K * (step_counter.get_total_flops() - flow_step_flops(net, objective, x_prior))
    result.update(naive_gflop=naive_flops / 1e9, fast_gflop=fast_flops / 1e9, flop_ratio=naive_flops / fast_flops)
    if args.compile:
        opts = FlowOptions.for_device("cpu", compile=True)
        import time
        start = time.perf_counter()
        fast_iteration(opts)
        result["compile_first_iteration_s"] = time.perf_counter() - start
        compiled = timed(lambda: fast_iteration(opts), args.repeat)
        result.update(fast_compiled_s=compiled, speedup_compiled=naive / compiled)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
