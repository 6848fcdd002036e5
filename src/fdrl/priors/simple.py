"""The prior interface (:class:`Prior`: sample, save as tensors plus JSON) and the priors that
need no data: N(0, I) and U[a, b]."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import save_file
from torch import Tensor


def _draw(shape: tuple[int, ...], generator: torch.Generator | None, device, fn) -> Tensor:
    """Draw with ``fn`` (torch.randn / torch.rand) on the generator's device, then move."""
    gen_device = generator.device if generator is not None else torch.device(device or "cpu")
    return fn(shape, generator=generator, device=gen_device).to(device or gen_device)


class Prior:
    """Base class: ``sample(n)`` returns a tensor of shape (n, *shape)."""

    kind: ClassVar[str]
    shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    def sample(
        self, n: int, generator: torch.Generator | None = None, device: str | torch.device | None = None
    ) -> Tensor:
        raise NotImplementedError

    def tensors(self) -> dict[str, Tensor]:
        return {}

    def params(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}

    def save(self, directory: str | Path, name: str = "prior") -> None:
        """Write ``name.json`` (kind and parameters) and ``name.safetensors`` (tensors)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{name}.json").write_text(json.dumps({"kind": self.kind, **self.params()}, indent=2))
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors().items()}
        save_file(tensors, str(directory / f"{name}.safetensors"))


class StandardNormalPrior(Prior):
    kind = "standard_normal"

    def __init__(self, shape: Iterable[int]):
        self.shape = tuple(int(s) for s in shape)

    def sample(self, n, generator=None, device=None):
        return _draw((n, *self.shape), generator, device, torch.randn)


class UniformPrior(Prior):
    """U[low, high] in every coordinate."""

    kind = "uniform"

    def __init__(self, shape: Iterable[int], low: float = -1.0, high: float = 1.0):
        if not high > low:
            raise ValueError(f"uniform prior needs high > low, got low={low}, high={high}")
        self.shape = tuple(int(s) for s in shape)
        self.low, self.high = float(low), float(high)

    def sample(self, n, generator=None, device=None):
        u = _draw((n, *self.shape), generator, device, torch.rand)
        return self.low + (self.high - self.low) * u

    def params(self):
        return {**super().params(), "low": self.low, "high": self.high}
