"""Bregman density-ratio objectives paired with f-divergences (paper App. C, D; Table 2).

The estimator network outputs one scalar per sample. For the LSIF objective that scalar *is*
the ratio r(x) = q(x)/p(x); for the LR objective it is log r(x) (App. C), so the loss (Eq. 21)
and the f' of KL, JS and logD (Eq. 22-24) are computed with log-sigmoid and never exponentiate.

An :class:`Objective` knows three things about network outputs ``out``:

* ``loss(out_data, out_particles)``: the Bregman loss of Eq. 11 (Eq. 18 for LSIF, Eq. 21 for
  LR), with data ``x_p ~ p`` and flowed particles ``x_K ~ q~``; minimised at r = q/p.
* ``f_prime(out)``: f'(r(x)), the potential whose input-gradient drives the flow of Eq. 9.
* ``log_ratio(out)`` / ``f_prime_of_log_ratio(log_r)``: the same in log-ratio space, used to
  compose the estimator with other density ratios (class guidance, Eq. 29-31).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fdrl.pairings import CURVATURE, ETA_SCALINGS, PAIRINGS, check_pairing, scaled_step_size  # noqa: F401

LOG2 = math.log(2.0)


def _lsif_loss(out_data: Tensor, out_particles: Tensor) -> Tensor:
    """Eq. 18: 1/2 E_p[r^2] - E_q[r], with r the raw network output."""
    return 0.5 * out_data.square().mean() - out_particles.mean()


def _lr_loss(out_data: Tensor, out_particles: Tensor) -> Tensor:
    """Eq. 21: -E_p[LS(-NN)] - E_q[LS(NN)], with NN = log r the network output."""
    return -F.logsigmoid(-out_data).mean() - F.logsigmoid(out_particles).mean()


def _chi2_f_prime(ratio: Tensor) -> Tensor:
    """Pearson-chi2 (Table 2): f'(r) = 2 (r - 1)."""
    return 2.0 * (ratio - 1.0)


def _kl_f_prime(log_ratio: Tensor) -> Tensor:
    """KL, Eq. 22: f'(r) = log r + 1."""
    return log_ratio + 1.0


def _js_f_prime(log_ratio: Tensor) -> Tensor:
    """JS, Eq. 23: f'(r) = log(2r / (1 + r)) = log 2 + LS(log r)."""
    return LOG2 + F.logsigmoid(log_ratio)


def _logd_f_prime(log_ratio: Tensor) -> Tensor:
    """logD, Eq. 24: f'(r) = log(1 + r) + 1 = -LS(-log r) + 1."""
    return 1.0 - F.logsigmoid(-log_ratio)


#: f' of each divergence, taking log r (the common currency for composition).
_F_PRIME_OF_LOG_RATIO = {
    "chi2": lambda log_r: _chi2_f_prime(torch.exp(log_r)),
    "kl": _kl_f_prime,
    "js": _js_f_prime,
    "logd": _logd_f_prime,
}


@dataclass(frozen=True)
class Objective:
    """A Bregman objective (``"lsif"`` or ``"lr"``) paired with an f-divergence.

    ``outputs_log_ratio`` is True for LR: the network then estimates log r (App. C).
    """

    name: str
    bregman: str
    divergence: str

    @property
    def outputs_log_ratio(self) -> bool:
        return self.bregman == "lr"

    def loss(self, out_data: Tensor, out_particles: Tensor) -> Tensor:
        """The Bregman loss of Eq. 11 on network outputs for data and for flowed particles."""
        if self.bregman == "lsif":
            return _lsif_loss(out_data, out_particles)
        return _lr_loss(out_data, out_particles)

    def ratio(self, out: Tensor) -> Tensor:
        """r(x) from network outputs (for logging; the flow never needs it for LR)."""
        return torch.exp(out) if self.outputs_log_ratio else out

    def log_ratio(self, out: Tensor) -> Tensor:
        """log r(x) from network outputs. For LSIF, outputs are clamped at a tiny positive value."""
        if self.outputs_log_ratio:
            return out
        return torch.log(out.clamp_min(torch.finfo(out.dtype).tiny))

    def f_prime(self, out: Tensor) -> Tensor:
        """f'(r(x)) from network outputs, in the stable forms of Eq. 22-24."""
        if self.divergence == "chi2" and not self.outputs_log_ratio:
            return _chi2_f_prime(out)
        return _F_PRIME_OF_LOG_RATIO[self.divergence](self.log_ratio(out))

    @property
    def curvature(self) -> float:
        """d f'(r) / d log r at r = 1 (Table 2): 2 for Pearson-chi2, 1 for KL, 1/2 for JS and logD.

        Near convergence (r ~ 1) the flow's step is eta * curvature * grad log r, so pairings
        with the same eta move at different speeds; :func:`scaled_step_size` evens this out."""
        return CURVATURE[self.divergence]

    def f_prime_of_log_ratio(self, log_r: Tensor) -> Tensor:
        """f'(r) for a given log r (used when composing ratios, Eq. 29)."""
        return _F_PRIME_OF_LOG_RATIO[self.divergence](log_r)


#: The four pairings used in the paper (App. C): LSIF with Pearson-chi2, LR with KL, JS, logD.
OBJECTIVES: dict[str, Objective] = {name: Objective(name, *parts) for name, parts in PAIRINGS.items()}


def get_objective(name: str) -> Objective:
    """Look up a pairing by name, e.g. ``"lsif-chi2"``; refuse anything the paper rules out."""
    return OBJECTIVES[check_pairing(name)]
