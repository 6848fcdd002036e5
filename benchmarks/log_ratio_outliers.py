"""What ``FDRL.log_ratio`` says after training, far from and near the data: docs/tables-quality.md.

Fits the vectors preset to 5000 draws of a 2-D standard Gaussian, then prints log r along +x
(0 to 30 standard deviations) and the AUROC of three outlier scores, inliers (fresh draws)
against points 3-6 standard deviations out in random directions: -log r (the learned ratio
alone), log q'(x) (the data Gaussian prior's log density alone) and log q'(x) - log r(x)
(the prior corrected by the ratio, which is log p(x) if the flowed density q~ were the prior's).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/log_ratio_outliers.py [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import torch


def auroc(inliers: np.ndarray, outliers: np.ndarray) -> float:
    """P(score of an inlier > score of an outlier), ties counted half (higher = more data-like)."""
    diff = inliers[:, None] - outliers[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def main() -> None:
    import fdrl

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 2)).astype(np.float32)
    model = fdrl.fit(x, out=tempfile.mkdtemp(prefix="log-ratio-"), progress=False, **overrides)
    model.numpy_output = False
    along = torch.tensor([[s, 0.0] for s in (0, 1, 2, 4, 6, 10, 30)])
    print("log r along +x at 0/1/2/4/6/10/30 sd:", " / ".join(f"{v:.3g}" for v in model.log_ratio(along).tolist()))
    inliers = torch.from_numpy(rng.normal(size=(2000, 2)).astype(np.float32))
    angle, radius = rng.uniform(0, 2 * np.pi, 2000), rng.uniform(3, 6, 2000)
    outliers = torch.from_numpy(np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1).astype(np.float32))
    prior = model.prior
    gaussian = torch.distributions.MultivariateNormal(prior.mean, scale_tril=prior.scale_tril)

    def scores(points: torch.Tensor) -> dict[str, np.ndarray]:
        z = model.scaler.forward(points)  # the prior and the estimator live in standardised units
        log_r = model.log_ratio(z, standardized=True).detach()
        log_q = gaussian.log_prob(z)
        return {"-log r": (-log_r).numpy(), "log q'": log_q.numpy(), "log q' - log r": (log_q - log_r).numpy()}

    inside, outside = scores(inliers), scores(outliers)
    for name in inside:
        print(f"AUROC inliers vs 3-6 sd, {name}: {auroc(inside[name], outside[name]):.3f}")


if __name__ == "__main__":
    main()
