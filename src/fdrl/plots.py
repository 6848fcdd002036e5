"""Figures: particles against data for vectors, image grids for images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from fdrl.image_io import save_grid  # noqa: E402


def scatter_panels(
    panels: Sequence[tuple[str, Tensor]],
    path: str | Path,
    reference: Tensor | None = None,
    limits: tuple[float, float] | None = None,
    point_size: float = 1.0,
    ncols: int | None = None,
) -> Path:
    """One scatter panel per (title, points) pair, the first two coordinates, ``ncols`` panels
    a row; an optional ``reference`` set (the data) is drawn faintly behind every panel."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ncols = min(ncols or len(panels), len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, points) in zip(axes.flat, panels):
        if reference is not None:
            ax.scatter(reference[:, 0], reference[:, 1], s=point_size, c="0.8", label="data")
        pts = points.reshape(points.shape[0], -1)
        ax.scatter(pts[:, 0], pts[:, 1], s=point_size, c="tab:orange")
        ax.set_title(title, fontsize=9)
        if limits is not None:
            ax.set_xlim(*limits)
            ax.set_ylim(*limits)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def histogram(samples: Tensor, path: str | Path, reference: Tensor | None = None, title: str = "samples") -> Path:
    """One-feature samples as a density histogram, over the ``reference`` data's if given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = samples.reshape(-1).float()
    both = values if reference is None else torch.cat([values, reference.reshape(-1).float()])
    bins = torch.linspace(float(both.min()), float(both.max()) + 1e-6, 41).numpy()
    fig, ax = plt.subplots(figsize=(4.0, 3.2))
    if reference is not None:
        ax.hist(reference.reshape(-1).numpy(), bins=bins, density=True, color="0.8", label="data")
    ax.hist(values.numpy(), bins=bins, density=True, color="tab:orange", alpha=0.7, label="samples")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_samples_figure(samples: Tensor, path: str | Path, data: Tensor | None = None, title: str = "samples") -> Path:
    """Images -> a grid; one feature -> a histogram; vectors -> a scatter of the first two
    coordinates over the data."""
    if samples.ndim == 4:
        return save_grid(samples[:64], path)
    if samples.ndim == 3:
        return save_grid(samples[:64].unsqueeze(1), path)
    if samples.shape[1] == 1:
        return histogram(samples, path, data, title)
    both = samples if data is None else torch.cat([samples, data])
    lo, hi = float(both[:, :2].min()), float(both[:, :2].max())
    pad = 0.05 * (hi - lo + 1e-6)
    return scatter_panels([(title, samples)], path, reference=data, limits=(lo - pad, hi + pad))
