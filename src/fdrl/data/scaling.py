"""Per-feature standardisation of vector data: the model trains on (x - mean) / scale and
gives samples back in the user's units.

Fitted on the training part only; a constant column gets scale 1 (it stays constant, and the
inverse puts its value back). Stored as ``scaler.json`` beside a run's prior, with the column
names of a CSV header, so that ``FDRL.load`` returns samples in the units and layout of the
file it was trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

SCALER_FILE = "scaler.json"


@dataclass
class Standardizer:
    """x -> (x - mean) / scale per feature (samples of any shape are flattened per row)."""

    mean: Tensor
    scale: Tensor
    columns: list[str] | None = None

    @classmethod
    def fit(cls, x: Tensor, columns: list[str] | None = None) -> "Standardizer":
        flat = x.reshape(x.shape[0], -1).double()
        mean, std = flat.mean(0), flat.std(0, correction=0)
        scale = torch.where(std > 1e-12 * mean.abs().clamp_min(1.0), std, torch.ones_like(std))
        return cls(mean.float().reshape(x.shape[1:]), scale.float().reshape(x.shape[1:]), columns)

    def forward(self, x: Tensor) -> Tensor:
        """User units -> model units."""
        return (x - self.mean.to(x.device)) / self.scale.to(x.device)

    def inverse(self, z: Tensor) -> Tensor:
        """Model units -> user units."""
        return z * self.scale.to(z.device) + self.mean.to(z.device)

    def save(self, directory: str | Path) -> None:
        record = {"mean": self.mean.flatten().tolist(), "scale": self.scale.flatten().tolist(),
                  "shape": list(self.mean.shape), "columns": self.columns}
        (Path(directory) / SCALER_FILE).write_text(json.dumps(record))

    @classmethod
    def load(cls, directory: str | Path) -> "Standardizer | None":
        """The scaler saved in ``directory``, or None if there is none (unscaled data)."""
        path = Path(directory) / SCALER_FILE
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            shape = tuple(record["shape"])
            mean = torch.tensor(record["mean"], dtype=torch.float32).reshape(shape)
            scale = torch.tensor(record["scale"], dtype=torch.float32).reshape(shape)
            columns = record.get("columns")
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"'{path}' is damaged ({type(err).__name__}: {err})") from None
        if not torch.isfinite(scale).all() or (scale <= 0).any() or not torch.isfinite(mean).all():
            raise ValueError(f"'{path}' is damaged (non-finite or non-positive scale)")
        return cls(mean, scale, columns)
