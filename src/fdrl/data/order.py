"""The order in which a finite dataset is visited: one helper shared by every finite source."""

from __future__ import annotations

import torch
from torch import Tensor

from fdrl import seeding


class SampleOrder:
    """Which samples of a finite dataset of ``size`` items a batch holds; shared by every
    finite source (:class:`ArrayData`, the image datasets of :mod:`fdrl.data.images`).

    Training: global sample positions ``(step * world + rank) * n + i`` index a concatenation
    of per-epoch permutations (epoch e permuted by a generator seeded from (seed, e)), so a
    batch depends only on (step, n, seed, rank, world), every sample is seen once per epoch,
    and ``world`` ranks with per-rank batch n see what one process with batch ``world * n``
    would. Evaluation: :meth:`draw_indices` picks uniformly with replacement from a stream
    disjoint from training.
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"a finite dataset needs at least one sample, got {size}")
        self.size = int(size)
        self._perms: dict[tuple[int, int], Tensor] = {}

    def permutation(self, epoch: int, seed: int) -> Tensor:
        """The order of epoch ``epoch`` (a few recent epochs are cached)."""
        key = (int(epoch), int(seed))
        if key not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            g = seeding.generator(seed, "epoch", epoch)
            self._perms[key] = torch.randperm(self.size, generator=g)
        return self._perms[key]

    @staticmethod
    def positions(step: int, n: int, rank: int = 0, world: int = 1) -> Tensor:
        """Global positions of the batch of ``rank`` at ``step``: unique over a whole run and
        the same however a global batch is split over ranks (used to key augmentation)."""
        start = (step * world + rank) * n
        return torch.arange(start, start + n)

    def indices(self, step: int, n: int, seed: int, rank: int = 0, world: int = 1) -> Tensor:
        """Dataset indices of the batch of ``rank`` at ``step`` (shape (n,))."""
        positions = self.positions(step, n, rank, world)
        epochs, offsets = positions // self.size, positions % self.size
        out = torch.empty(n, dtype=torch.long)
        for epoch in epochs.unique().tolist():
            mask = epochs == epoch
            out[mask] = self.permutation(epoch, seed)[offsets[mask]]
        return out

    def draw_indices(self, n: int, seed: int) -> Tensor:
        """``n`` indices drawn with replacement from the evaluation stream of ``seed``."""
        return torch.randint(self.size, (n,), generator=seeding.generator(seed, "eval"))

    def subset_indices(self, n: int, seed: int) -> Tensor:
        """min(n, size) distinct indices from the evaluation stream of ``seed`` (every index, in
        order, when n >= size): held-out scoring needs no repeated samples."""
        if n >= self.size:
            return torch.arange(self.size)
        return torch.randperm(self.size, generator=seeding.generator(seed, "subset"))[:n]
