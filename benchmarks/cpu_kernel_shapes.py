"""(g) The fused C++ MLP flow (``fdrl.native``) against the torch route it replaces (the
closed-form gradient compiled 10 steps per call, ``flow.cpu_kernel=false``) per flow step, for a
range of MLP shapes, one thread, interleaved rounds, medians; and, for the native build, the route
the default (``flow.cpu_kernel: null``) takes for each shape on this machine, decided afresh by
its short measurement (:mod:`fdrl.native.route`), with that decision's wall time (which includes
compiling the torch route once). Prints JSON.

    python benchmarks/cpu_kernel_shapes.py [--march native x86-64-v3] [--rounds 5] [--shapes F,W,D,B,K ...]

``--march`` builds the kernel once per value with ``-march=VALUE`` (``x86-64-v3``: AVX2 + FMA,
to see on an AVX-512 machine what a CPU without AVX-512 would get from its build).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="fdrl-inductor-"))

import torch  # noqa: E402

from fdrl import native  # noqa: E402
from fdrl.flow import FlowOptions, flow, flow_route, frozen, ratio_potential  # noqa: E402
from fdrl.native import route  # noqa: E402
from fdrl.nets import MLP  # noqa: E402
from fdrl.objectives import get_objective  # noqa: E402

#: (input features, width, depth, batch, K): the swiss-roll benchmark's net and the preset's,
#: wider toy nets, the digits preset's shape (8x8 inputs, width 256), 784-D MNIST's
SHAPES = [(2, 64, 4, 1024, 200), (2, 64, 3, 256, 100), (8, 32, 3, 512, 100), (2, 128, 3, 512, 50),
          (16, 128, 3, 256, 50), (2, 256, 3, 256, 30), (64, 256, 3, 128, 50), (784, 256, 3, 128, 20)]


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 5 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not five positive integers F,W,D,B,K")
    return shape


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--march", nargs="+", default=["native"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shapes", nargs="+", type=_shape, default=SHAPES,
                    help="input features,width,depth,batch,K of each MLP (default: SHAPES)")
    args = ap.parse_args(argv)
    shapes = args.shapes
    torch.set_num_threads(1)
    if native.library() is None:
        sys.exit("the kernel does not build here")
    routes = {"kernel": FlowOptions(cpu_kernel=True), "torch_compiled": FlowOptions.for_device("cpu", cpu_kernel=False)}
    rows = []
    os.environ.pop(route.FORCE_ENV, None)
    route.decisions_file = lambda: None  # decide afresh: what a first flow of the shape costs
    for march in args.march:
        lib = native.build_private(march)
        native.library = lambda lib=lib: lib  # every flow below uses this build
        for features, width, depth, batch, steps in shapes:
            torch.manual_seed(0)
            net = MLP((features,), width=width, depth=depth)
            x0 = torch.randn(batch, features)
            potential = ratio_potential(net, get_objective("lsif-chi2"))
            times: dict[str, list[float]] = {name: [] for name in routes}
            with frozen(net):
                default = None
                if march == "native":
                    start = time.perf_counter()
                    default = flow_route(potential, x0, FlowOptions.for_device("cpu"))
                    decided_s = time.perf_counter() - start
                for options in routes.values():  # warm-up: compile, first touch
                    flow(x0, potential, steps, 0.05, 0.01, torch.Generator().manual_seed(0), options=options)
                for _ in range(args.rounds):
                    for name, options in routes.items():
                        start = time.perf_counter()
                        flow(x0, potential, steps, 0.05, 0.01, torch.Generator().manual_seed(0), options=options)
                        times[name].append((time.perf_counter() - start) / steps * 1e6)
            us = {name: statistics.median(t) for name, t in times.items()}
            rows.append({"march": march, "vector_bytes": lib.fdrl_vector_bytes(), "features": features,
                         "width": width, "depth": depth, "batch": batch, "K": steps,
                         "us_per_step": us, "speedup": us["torch_compiled"] / us["kernel"]})
            if default is not None:
                rows[-1].update(default_route=default, decision_s=round(decided_s, 3))
            print(json.dumps(rows[-1]), file=sys.stderr)
    result = {"benchmark": "cpu_kernel_shapes", "rounds": args.rounds, "rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
