"""(b) One flow step (forward + input gradient + update) of each Table-3 estimator at batch 64:
time, images/s, achieved GFLOP/s (torch.utils.flop_counter) for the official-style reference
(common.official_style_flow) and the fast path, and the machine's measured matmul GFLOP/s in the same run. Prints JSON.

    python benchmarks/estimator_flow_step.py [--batch 64] [--width 0.25] [--full-width resnet32]
    python benchmarks/estimator_flow_step.py --device cuda --width 1   # the GPU check (see gpu_check.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fast_flow, flow_step_flops, matmul_gflops, official_style_flow, timed  # noqa: E402

from fdrl.flow import FlowOptions, prepare_estimator  # noqa: E402
from fdrl.nets import build_estimator  # noqa: E402
from fdrl.nets.resnet import ARCHITECTURES  # noqa: E402
from fdrl.objectives import get_objective  # noqa: E402


def run(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=float, default=0.25, help="channel multiplier of every estimator ...")
    ap.add_argument("--full-width", default="resnet32", help="... except these (comma list) at width 1")
    ap.add_argument("--archs", default=",".join(ARCHITECTURES))
    ap.add_argument("--steps", type=int, default=2, help="flow steps per timing")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="force torch.compile in the fast path")
    ap.add_argument("--spectral-norm", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    objective = get_objective("lsif-chi2")
    full = set(filter(None, args.full_width.split(",")))
    result = {"benchmark": "estimator_flow_step", "device": device, "batch": args.batch,
              "matmul_fp32_gflops": matmul_gflops(device), "estimators": {}}
    if device.startswith("cuda"):
        result["matmul_bf16_gflops"] = matmul_gflops(device, 4096, torch.bfloat16)
    for arch in filter(None, args.archs.split(",")):
        width = 1.0 if arch in full else args.width
        options = FlowOptions.for_device(device, compile=True if args.compile else None, estimator=arch)
        size = ARCHITECTURES[arch].image_size
        torch.manual_seed(0)
        net = build_estimator(arch, (3, size, size), width=width, spectral_norm=args.spectral_norm).to(device)
        x = torch.randn(args.batch, 3, size, size, device=device)
        flops = flow_step_flops(net, objective, x)
        net.train()
        official = timed(lambda: official_style_flow(net, objective, x, args.steps, 0.01, 0.01),
                         args.repeat) / args.steps
        prepare_estimator(net, options)
        fast = timed(lambda: fast_flow(net, objective, x, args.steps, 0.01, 0.01, options=options),
                     args.repeat) / args.steps
        net.to(memory_format=torch.contiguous_format)
        result["estimators"][arch] = {
            "width": width, "fast_options": options.__dict__, "params": sum(p.numel() for p in net.parameters()),
            "gflop_per_step": flops / 1e9,
            "official_style_s": official, "fast_s": fast, "speedup": official / fast,
            "official_style_images_per_s": args.batch / official, "fast_images_per_s": args.batch / fast,
            "official_style_gflops": flops / official / 1e9, "fast_gflops": flops / fast / 1e9,
            "fast_fraction_of_matmul_peak": flops / fast / 1e9 / result["matmul_fp32_gflops"],
        }
    return result


def main(argv=None) -> dict:
    result = run(argv)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
