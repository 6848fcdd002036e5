"""(c) Flow memory against K: peak RSS of a fresh process per K on the CPU (resource.getrusage),
torch.cuda.max_memory_allocated on CUDA, for K = 1, 10, 100. Flat means no graph or
trajectory grows with K. Prints JSON with ``flat_within_10pct``.

    python benchmarks/memory_vs_k.py [--ks 1,10,100] [--arch resnet32 --width 0.25 --batch 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fast_flow  # noqa: E402


def child(args) -> dict:
    from fdrl.flow import FlowOptions, prepare_estimator
    from fdrl.nets import build_estimator
    from fdrl.nets.resnet import ARCHITECTURES
    from fdrl.objectives import get_objective

    torch.set_num_threads(1)
    size = ARCHITECTURES[args.arch].image_size
    torch.manual_seed(0)
    net = build_estimator(args.arch, (3, size, size), width=args.width, spectral_norm=True).to(args.device)
    options = FlowOptions.for_device(args.device, estimator=args.arch)
    prepare_estimator(net, options)
    x = torch.randn(args.batch, 3, size, size, device=args.device)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    fast_flow(net, get_objective("lsif-chi2"), x, args.k, 0.01, 0.01, options=options)
    out = {"K": args.k, "rss_before_mib": before,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    out["flow_peak_mib"] = out["peak_rss_mib"] - before
    if args.device.startswith("cuda"):
        out["flow_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ks", default="1,10,100")
    ap.add_argument("--arch", default="resnet32")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--k", type=int, default=None, help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args(argv)
    if args.k is not None:
        print(json.dumps(child(args)))
        return {}
    runs = []
    for k in [int(v) for v in args.ks.split(",")]:
        cmd = [sys.executable, __file__, "--k", str(k), "--arch", args.arch, "--width", str(args.width),
               "--batch", str(args.batch), "--device", args.device]
        runs.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
    peaks = [r["peak_rss_mib"] if args.device == "cpu" else r["flow_peak_mib"] for r in runs]
    result = {"benchmark": "memory_vs_k", "device": args.device, "arch": args.arch, "width": args.width,
              "batch": args.batch, "runs": runs, "measure": "peak_rss_mib" if args.device == "cpu" else "max_allocated_mib",
              "max_over_min": max(peaks) / min(peaks), "flat_within_10pct": max(peaks) <= 1.1 * min(peaks)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
