"""Deterministic random streams derived from (seed, purpose, step, rank).

Every random draw of training (data batch, prior sample, flow noise) comes from a generator
seeded by these four numbers, so a step's randomness does not depend on what ran before it:
resuming from a checkpoint, or splitting a batch across ranks, replays it exactly.
"""

from __future__ import annotations

import numpy as np
import torch

STREAMS = {"data": 0, "prior": 1, "flow": 2, "eval": 3, "init": 4, "epoch": 5, "augment": 6, "subset": 7, "smooth": 8, "decode": 9, "marginals": 10}


def derived_seed(seed: int, stream: str, step: int = 0, rank: int = 0) -> int:
    """A 63-bit seed mixing the four numbers through numpy's SeedSequence."""
    state = np.random.SeedSequence([int(seed), STREAMS[stream], int(step), int(rank)]).generate_state(2)
    return int((int(state[0]) << 31 ^ int(state[1])) & ((1 << 63) - 1))


def generator(
    seed: int, stream: str, step: int = 0, rank: int = 0, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A torch.Generator on ``device`` seeded by :func:`derived_seed`."""
    return torch.Generator(device=device).manual_seed(derived_seed(seed, stream, step, rank))
