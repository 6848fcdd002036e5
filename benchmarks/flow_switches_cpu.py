"""The effect of each layout/precision switch of the flow on one ResNet's flow step on this
machine: seconds per step (forward + input gradient + update of Eq. 9, ``common.fast_flow``) in
the plain layout, in channels_last, and with bf16 autocast of the estimator; prints JSON. The
measured effect behind the CPU column of ``fdrl.flow.DEVICE_DEFAULTS``.

    python benchmarks/flow_switches_cpu.py --arch resnet32 --width 0.25 --batch 16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fast_flow, timed  # noqa: E402

from fdrl.flow import FlowOptions, prepare_estimator  # noqa: E402
from fdrl.nets import build_estimator  # noqa: E402
from fdrl.nets.resnet import ARCHITECTURES  # noqa: E402
from fdrl.objectives import get_objective  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet32", choices=list(ARCHITECTURES))
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3, help="flow steps per timing")
    ap.add_argument("--repeat", type=int, default=3, help="timings per switch (the best is kept)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    side = ARCHITECTURES[args.arch].image_size
    torch.manual_seed(0)
    net = build_estimator(args.arch, (3, side, side), width=args.width, spectral_norm=True)
    x = torch.randn(args.batch, 3, side, side)
    objective = get_objective("lsif-chi2")
    seconds = {}
    for name, options in (("plain", FlowOptions()), ("channels_last", FlowOptions(channels_last=True)),
                          ("autocast_bf16", FlowOptions(autocast_bf16=True))):
        prepare_estimator(net, options)
        seconds[name] = timed(lambda: fast_flow(net, objective, x, args.steps, 0.01, 0.01, options=options),
                              args.repeat) / args.steps
        net.to(memory_format=torch.contiguous_format)
    result = {"benchmark": "flow_switches_cpu", **vars(args), "seconds_per_step": seconds,
              "speedup_vs_plain": {name: seconds["plain"] / s for name, s in seconds.items()}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
