"""The memory-bounded data prior at 3 x 128 x 128 (LSUN Church size): fit and sample within a
RAM budget. Prints JSON.

Writes ``--n`` stand-in 128 x 128 RGB PNGs (smooth random colour fields plus pixel noise, so
the spectrum decays as natural images' do) to a temporary folder, builds the ``folder``
dataset at 128 x 128 and fits the data-dependent prior of Eq. 8 with ``build_prior`` as the
``lsun_church128_lsif_chi2`` preset does (rank 256 + per-pixel diagonal, two streamed passes),
then draws ``--sample`` prior samples. Reports the peak resident memory of this process (RSS,
which includes PyTorch itself) after imports, after the fit and after sampling, the memory the
prior occupies, the share of the data's total variance its top directions keep, and timings.

    python benchmarks/lowrank_prior_memory.py [--n 2000] [--rank 256] [--sample 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fdrl.data import build_data
from fdrl.priors import build_prior

SIZE = 128


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_stand_ins(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` PNGs: a 8 x 8 random colour field upsampled bicubically to 128 x 128, plus noise."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((SIZE, SIZE), Image.BICUBIC), dtype=np.float32)
        noisy = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i:05d}.png")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="stand-in images")
    ap.add_argument("--rank", type=int, default=256)
    ap.add_argument("--sample", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict = {"benchmark": "lowrank_prior_memory", "shape": [3, SIZE, SIZE], "n": args.n, "rank": args.rank}
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        write_stand_ins(images, args.n)
        data = build_data("folder", root=str(images), image_size=SIZE, flip=False)
        result["rss_before_fit_mib"] = peak_rss_mib()
        start = time.perf_counter()
        prior = build_prior("data_gaussian", data, rank=args.rank, cache_dir=str(Path(tmp) / "cache"))
        result["fit_s"] = time.perf_counter() - start
        result["peak_rss_after_fit_mib"] = peak_rss_mib()
        start = time.perf_counter()
        x = prior.sample(args.sample, torch.Generator().manual_seed(0))
        result["sample_s"] = time.perf_counter() - start
        result["peak_rss_after_sampling_mib"] = peak_rss_mib()
    tensors = [prior.mean, prior.components, prior.eigenvalues, prior.residual]
    result.update(
        prior=type(prior).__name__,
        prior_mib=sum(t.numel() * t.element_size() for t in tensors) / 2**20,
        full_covariance_float32_mib=(3 * SIZE * SIZE) ** 2 * 4 / 2**20,
        variance_kept=float(prior.eigenvalues.sum()) / prior.total_variance,
        sample_range=[float(x.min()), float(x.max())],
        within_2gb=result["peak_rss_after_sampling_mib"] <= 2048,
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
