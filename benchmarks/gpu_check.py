"""(d) The GPU check, one command, under 5 minutes on one GPU: benchmark (b) -- one flow step of
every Table-3 estimator at full width, batch 64 -- in fp32 eager (the naive reference) against
the fast path (channels_last, bf16 autocast, TF32, torch.compile), with model FLOP utilisation
against the measured fp32 and bf16 matmul rates. Prints JSON.

    python benchmarks/gpu_check.py              # on a CUDA machine
    python benchmarks/gpu_check.py --cpu-smoke  # tiny CPU run that checks the script works
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import estimator_flow_step  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny widths on the CPU, compile off")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    if args.cpu_smoke:
        inner = ["--device", "cpu", "--width", "0.0625", "--full-width", "", "--batch", "2", "--steps", "1",
                 "--repeat", "1", "--spectral-norm"]
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check.py needs a CUDA GPU; pass --cpu-smoke to check the script on the CPU")
        inner = ["--device", "cuda", "--width", "1", "--full-width", "", "--batch", "64", "--steps", "10",
                 "--repeat", "3", "--spectral-norm"]
    result = estimator_flow_step.run(inner)
    peak = result.get("matmul_bf16_gflops", result["matmul_fp32_gflops"])
    for est in result["estimators"].values():
        est["fast_mfu_vs_bf16_matmul"] = est["fast_gflops"] / peak
        est["naive_mfu_vs_fp32_matmul"] = est["naive_gflops"] / result["matmul_fp32_gflops"]
    result.update(benchmark="gpu_check", cpu_smoke=args.cpu_smoke,
                  gpu=torch.cuda.get_device_name() if torch.cuda.is_available() and not args.cpu_smoke else None,
                  wall_s=time.perf_counter() - start)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
