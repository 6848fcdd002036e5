"""Priors that draw from data: given samples (:class:`DatasetPrior`) or an image dataset with
its augmentation (:class:`DataSourcePrior`), e.g. the source domain of translation (Sec. 6.5)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fdrl.data import ImageData, build_data
from fdrl.priors.simple import Prior, _draw


class DatasetPrior(Prior):
    """Draws uniformly (with replacement) from given samples, e.g. a source image domain."""

    kind = "dataset"

    def __init__(self, samples: Tensor):
        if samples.ndim < 2 or samples.shape[0] == 0:
            raise ValueError("a dataset prior needs a non-empty batch of samples, shape (n, ...)")
        self.samples = samples.detach().float().cpu()
        self.shape = tuple(self.samples.shape[1:])

    def sample(self, n, generator=None, device=None):
        idx = _draw((n,), generator, None, lambda s, **kw: torch.randint(self.samples.shape[0], s, **kw))
        return self.samples[idx.cpu()].to(device or "cpu")

    def tensors(self):
        return {"samples": self.samples}


class DataSourcePrior(Prior):
    """Draws augmented images from a finite image dataset, e.g. the source domain of unpaired
    image-to-image translation (Sec. 6.5: q' is the cat domain, p the dog domain). Saved as the
    dataset's name and options, so nothing but its description is stored."""

    kind = "data_source"

    def __init__(self, name: str, params: dict[str, Any] | None = None):
        self.data_name, self.data_params = name, dict(params or {})
        self.data = build_data(name, **self.data_params)
        if not isinstance(self.data, ImageData):
            raise ValueError(f"a dataset prior with data= needs an image dataset, not '{name}'")
        self.shape = tuple(self.data.shape)

    def sample(self, n, generator=None, device=None):
        return self.data.sample(n, generator).to(device or "cpu")

    def params(self):
        return {**super().params(), "data": {"name": self.data_name, "params": self.data_params}}
