"""(a) The swiss-roll training iteration (Algorithm 1: K-step flow + one update), fast path vs
the naive reference, in one process. Prints JSON.

    python benchmarks/swissroll_iteration.py [--steps-k 200] [--batch 1024] [--width 64]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import naive_flow, timed  # noqa: E402

from fdrl.flow import FlowOptions  # noqa: E402
from fdrl.nets import MLP  # noqa: E402
from fdrl.objectives import get_objective  # noqa: E402
from fdrl.train import training_step  # noqa: E402


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
    naive = timed(naive_iteration, args.repeat)
    fast = timed(lambda: fast_iteration(FlowOptions.for_device("cpu")), args.repeat)
    result.update(naive_s=naive, fast_s=fast, speedup=naive / fast)
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
