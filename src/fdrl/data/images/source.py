"""The interface every image dataset has (:class:`ImageData`) and the seeded held-out split.

An :class:`ImageData` is a finite set of images of one shape (C, H, W) in [-1, 1] with the
data-source interface the trainer uses (``shape``, ``batch``, ``draw``, ``iter_batches``,
``len``); a subclass (:mod:`fdrl.data.images.storage`) says how the raw pixels are loaded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fdrl import seeding
from fdrl.data.order import SampleOrder


class ImageData:
    """A finite set of images of shape (C, H, W) in [-1, 1]; subclasses say how to load them.

    ``flip`` and ``dequantize`` (sigma) are the augmentations of training batches.
    :meth:`fingerprint` describes the clean images (dataset, files, preprocessing), the key
    under which a fitted prior is cached; augmentation is not part of it, since priors are fitted
    to clean images, as in the authors' code.
    """

    value_range: tuple[float, float] = (-1.0, 1.0)

    def __init__(
        self,
        name: str,
        size: int,
        shape: tuple[int, int, int],
        flip: bool,
        dequantize: float,
        key: dict[str, Any],
        max_value: float = 255.0,
    ):
        if dequantize < 0:
            raise ValueError(f"data '{name}': dequantize (the noise sigma) must be >= 0, got {dequantize}")
        self.name, self.shape = name, tuple(int(s) for s in shape)
        self.flip, self.dequantize = bool(flip), float(dequantize)
        self.order = SampleOrder(size)
        self.max_value = float(max_value)
        self._key = {"dataset": name, "shape": list(self.shape), **key}

    def __len__(self) -> int:
        return self.order.size

    def load(self, indices: Sequence[int]) -> Tensor:
        """The raw images at ``indices`` as uint8, shape (len(indices), C, H, W)."""
        raise NotImplementedError

    def images(self, indices: Sequence[int] | Tensor) -> Tensor:
        """Clean images at ``indices``, scaled from [0, max_value] to [-1, 1] (App. F)."""
        raw = self.load([int(i) for i in indices])
        return raw.float() * (2.0 / self.max_value) - 1.0

    def augment(self, x: Tensor, generators: Sequence[torch.Generator | None]) -> Tensor:
        """App. F's augmentation of images ``x``, sample i drawing from ``generators[i]``:
        flip left-right with probability 1/2 (if ``flip``), then add ``dequantize`` * N(0, I)."""
        out = x.clone()
        for i, g in enumerate(generators):
            device = g.device if g is not None else torch.device("cpu")
            if self.flip and bool(torch.rand((), generator=g, device=device) < 0.5):
                out[i] = out[i].flip(-1)
            if self.dequantize:
                noise = torch.randn(self.shape, generator=g, device=device)
                out[i] += self.dequantize * noise.to(out.device)
        return out

    def batch(self, step: int, n: int, seed: int, rank: int = 0, world: int = 1) -> Tensor:
        """The augmented training batch of ``rank`` at ``step``; a function of its arguments."""
        indices = self.order.indices(step, n, seed, rank, world)
        positions = self.order.positions(step, n, rank, world)
        generators = [seeding.generator(seed, "augment", int(p)) for p in positions]
        return self.augment(self.images(indices), generators)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` augmented images drawn with replacement using ``generator`` (for a prior that
        is a dataset, e.g. the source domain of image-to-image translation, Sec. 6.5)."""
        device = generator.device if generator is not None else torch.device("cpu")
        indices = torch.randint(len(self), (n,), generator=generator, device=device).cpu()
        return self.augment(self.images(indices), [generator] * n)

    def draw(self, n: int, seed: int) -> Tensor:
        """``n`` clean images for evaluation, drawn with replacement from the eval stream."""
        return self.images(self.order.draw_indices(n, seed))

    def subset(self, n: int, seed: int) -> Tensor:
        """min(n, len) distinct clean images (all of them when n >= len)."""
        return self.images(self.order.subset_indices(n, seed))

    def iter_batches(self, batch_size: int) -> Iterator[Tensor]:
        """Every clean image once, in order, ``batch_size`` at a time (for fitting Eq. 8)."""
        for start in range(0, len(self), batch_size):
            yield self.images(range(start, min(start + batch_size, len(self))))

    def fingerprint(self) -> dict[str, Any]:
        """A JSON-able description of the clean images (the prior cache key)."""
        return dict(self._key)


def held_out_split(labels: np.ndarray, split: str, test_fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of ``split`` (train | test) of a labelled set: within each class, a permutation
    with a fixed ``seed`` puts the last ``round(test_fraction * class size)`` images in test
    (so a file sorted by class is shuffled before splitting); the result is in shuffled order."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got '{split}'")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(test_fraction * len(members)))
        chosen.append(members[len(members) - n_test:] if split == "test" else members[: len(members) - n_test])
    return rng.permutation(np.concatenate(chosen))
