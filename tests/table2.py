"""Table 2 of the paper, written out here as the tests' reference (not taken from the module
under test): each f-divergence's f(r) and its first derivative f'(r)."""

import math

import torch

TABLE_2 = {
    "chi2": (lambda r: (r - 1.0) ** 2, lambda r: 2.0 * (r - 1.0)),
    "kl": (lambda r: r * torch.log(r), lambda r: torch.log(r) + 1.0),
    "js": (lambda r: r * torch.log(r) - (r + 1.0) * torch.log((r + 1.0) / 2.0), lambda r: torch.log(2.0 * r / (r + 1.0))),
    "logd": (lambda r: (r + 1.0) * torch.log(r + 1.0) - 2.0 * math.log(2.0), lambda r: torch.log(r + 1.0) + 1.0),
}


def f_prime(divergence: str, r: torch.Tensor) -> torch.Tensor:
    """Table 2's f'(r) of ``divergence``."""
    return TABLE_2[divergence][1](r)
