"""The divergence guard of training: notice a step that went wrong, roll back, slow down.

A step with a non-finite loss or gradient, a ratio estimate |r| above
``train.guard_max_ratio``, or a mean ratio on the flowed particles above
``train.guard_particle_ratio``, rolls training back to the newest checkpoint and multiplies the
learning rate by ``train.guard_lr_factor``; the cut is kept in later checkpoints (the guard's
:meth:`~DivergenceGuard.state_dict`), so a resumed run goes on with it. After
``train.guard_retries`` rollbacks the run stops with :class:`TrainingError`; its checkpoints stay
and can be sampled.

The particle bound is the one the objective makes meaningful: r estimates q~/p, so its mean over
the flowed particles estimates E_q~[q~/p] = 1 + chi2(q~ || p), the Pearson divergence of the
particles from the data. After the K flow steps of Eq. 9 the particles are near the data, and
that stays small (about 1 on a healthy run); a mean in the hundreds means the flow throws the
particles away from the data and the estimator chases them there -- the runaway seen on
collinear tables, where the ratio on particles grew from 1 to 1e5 in 100 steps and the samples
reached 70 standard deviations long before any |r| reached ``guard_max_ratio``. On a few hundred
images trained past about 1000 steps the bound also fires on an estimator that has learnt its
training images (r below 1 on them and 10-25 on held-out images;
``benchmarks/estimator_memory.py``): fewer steps, not a lower learning rate, avoid that.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fdrl.config import TrainConfig
from fdrl.objectives import Objective


class TrainingError(RuntimeError):
    """Training cannot go on (it kept diverging); the message says what to do."""


class DivergenceGuard:
    """The guard's settings (read from ``train`` at each use: a resume may change them) and
    state: ``lr_scale`` (the product of its learning-rate cuts) and ``rollbacks``."""

    def __init__(self, train: TrainConfig, checkpoints: Path):
        self.train = train
        self.checkpoints = checkpoints
        self.lr_scale = 1.0
        self.rollbacks = 0

    def state_dict(self) -> dict[str, Any]:
        return {"lr_scale": self.lr_scale, "rollbacks": self.rollbacks}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict`; None (checkpoints written before the guard) is a fresh guard."""
        state = state or {"lr_scale": 1.0, "rollbacks": 0}
        self.lr_scale, self.rollbacks = state["lr_scale"], state["rollbacks"]

    def problem(self, loss: Tensor, outputs: Tensor, net: nn.Module, objective: Objective,
                out_particles: Tensor | None = None) -> str | None:
        """What went wrong in a step with this ``loss`` and net ``outputs`` (non-finite loss or
        gradient of ``net``, a ratio estimate past ``train.guard_max_ratio``, the mean ratio on
        the particles' outputs ``out_particles`` past ``train.guard_particle_ratio``), or None."""
        if not torch.isfinite(loss):
            return f"the loss is {float(loss)}"
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        if grads and not torch.stack([g.isfinite().all() for g in grads]).all():
            return "a gradient is not finite"
        bound = self.train.guard_max_ratio
        peak = float(objective.ratio(outputs).abs().max())
        if not peak <= bound:
            return f"a ratio estimate is {peak:.3g} > train.guard_max_ratio={bound:g}"
        bound = self.train.guard_particle_ratio
        if bound > 0 and out_particles is not None:
            mean = float(objective.ratio(out_particles).mean())
            if not mean <= bound:
                return (f"the mean ratio on the flowed particles is {mean:.3g} > train.guard_particle_ratio={bound:g} "
                        "(the flow runs away from the data)")
        return None

    def roll_back(self, problem: str, step: int, restore: Callable[[], dict[str, Any]],
                  optimizer: torch.optim.Optimizer, log: Callable[[dict[str, Any]], None]) -> None:
        """Back to the newest checkpoint (``restore()``, which loads it, guard state included,
        and says where it went) with the learning rate times ``guard_lr_factor``; logged. Once
        ``guard_retries`` rollbacks are used up: logged, and TrainingError."""
        if self.rollbacks >= self.train.guard_retries:
            log({"event": "diverged", "step": step, "problem": problem, "rollbacks": self.rollbacks})
            raise TrainingError(
                f"{problem} at step {step}, after {self.rollbacks} rollback(s); the last good checkpoint is in "
                f"{self.checkpoints} (`fdrl sample {self.checkpoints.parent}` samples it): resume with a larger "
                "train.guard_retries, or start a new run with fewer train.steps or a lower train.lr or flow.eta"
            )
        scale, rollbacks = self.lr_scale * self.train.guard_lr_factor, self.rollbacks + 1
        where = restore()  # the checkpoint's learning rate and guard state
        for group in optimizer.param_groups:
            group["lr"] *= scale / self.lr_scale
        self.lr_scale, self.rollbacks = scale, rollbacks
        log({"event": "rollback", "step": step, "problem": problem, **where, "lr_scale": scale,
             "rollbacks": rollbacks})
