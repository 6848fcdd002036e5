"""Images in [-1, 1] as pixels: uint8 values, grids and PNG files, read and written.

Every image this project writes goes through :func:`to_uint8` (or :func:`unit_to_uint8` for a
grid already in [0, 1]): ``floor(255 (x + 1) / 2 + 0.5)`` after clamping to [-1, 1], the
arithmetic of ``torchvision.utils.save_image``, so a saved PNG, a sample grid and the FID's
input hold the same bytes for the same image. Grids have 1 pixel of black padding between
cells (``torchvision.utils.make_grid``); images can be scaled up by an integer factor (nearest
neighbour) so that small images stay visible. :func:`read_image_files` is the inverse for
files: pixels ``v`` become ``v / 127.5 - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def unit_to_uint8(images: Tensor) -> Tensor:
    """Values in [0, 1] (clamped) -> uint8, ``floor(255 x + 0.5)``."""
    return images.detach().float().cpu().mul(255).add(0.5).clamp(0, 255).to(torch.uint8)


def to_uint8(images: Tensor) -> Tensor:
    """Images in [-1, 1] (clamped) -> the uint8 values a saved PNG holds, same shape."""
    return unit_to_uint8(images.detach().float().clamp(-1, 1) * 0.5 + 0.5)


def default_scale(shape: Sequence[int]) -> int:
    """Upscaling for figures: cells of at least 32 pixels (8x8 digits: 4; MNIST, CIFAR: 1)."""
    return max(1, 32 // max(int(shape[-2]), int(shape[-1])))


def upscale(images: Tensor, scale: int) -> Tensor:
    """Each pixel repeated ``scale`` x ``scale`` times (nearest neighbour)."""
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    return images.repeat_interleave(scale, -2).repeat_interleave(scale, -1) if scale > 1 else images


def image_grid(images: Tensor, nrow: int, scale: int = 1) -> Tensor:
    """Images in [-1, 1] (n, C, H, W) -> one RGB grid (3, H', W') in [0, 1], ``nrow`` a row,
    1 pixel of black padding."""
    from torchvision.utils import make_grid

    cells = upscale(images.detach().float().cpu().clamp(-1, 1) * 0.5 + 0.5, scale)
    if cells.shape[1] == 1:
        cells = cells.expand(-1, 3, -1, -1)
    return make_grid(cells, nrow=nrow, padding=1, pad_value=0.0)


def rows_grid(stack: Tensor, scale: int) -> Tensor:
    """(rows, cols, C, H, W) in [-1, 1] -> a grid with one row per first index."""
    rows, cols = stack.shape[:2]
    return image_grid(stack.reshape(rows * cols, *stack.shape[2:]), nrow=cols, scale=scale)


def save_png(grid: Tensor, path: str | Path) -> Path:
    """Write an RGB grid (3, H, W) in [0, 1] as a PNG (lossless; other suffixes are refused)."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"figures are written as PNG; --out must end in .png, got '{path.name}'")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(unit_to_uint8(grid).permute(1, 2, 0).numpy()).save(path)
    return path


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, scale: int = 1) -> Path:
    """Images in [-1, 1] (n, C, H, W) saved as one PNG grid, ``nrow`` (default about sqrt(n),
    rounded down) a row."""
    nrow = nrow or max(1, int(images.shape[0] ** 0.5))
    return save_png(image_grid(images, nrow, scale), path)


def save_pngs(images: Tensor, names: Sequence[str], out: str | Path) -> list[Path]:
    """Write each image (C, H, W) in [-1, 1] as ``out/NAME.png``."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for img, name in zip(images, names):
        arr = to_uint8(img)
        p = out / f"{name}.png"
        Image.fromarray(arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy()).save(p)
        paths.append(p)
    return paths


def read_image_files(files: Sequence[Path], shape: Sequence[int]) -> Tensor:
    """Image files of exactly ``shape`` (C, H, W) as one tensor in [-1, 1]. Palette images are
    expanded and an alpha channel dropped; a wrong size or channel count, or an unreadable
    file, is a one-line ValueError."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = (int(s) for s in shape)
    images = []
    for f in files:
        try:
            with Image.open(f) as img:
                img.load()
                bands, size = len(img.getbands()), img.size
                if img.mode == "P":
                    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                    bands = len(img.getbands())
                if img.mode in ("RGBA", "LA"):
                    img = img.convert("RGB" if img.mode == "RGBA" else "L")
                    bands -= 1
                if size != (w, h):
                    raise ValueError(f"image {f} is {size[0]}x{size[1]}; the model takes {w}x{h} "
                                     f"(resize or centre-crop it first)")
                if bands != c:
                    raise ValueError(f"image {f} has {bands} channel(s); the model takes {c}")
                arr = np.asarray(img, dtype=np.float32)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read image {f} ({type(err).__name__})") from None
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        images.append(torch.from_numpy(arr / 127.5 - 1.0))
    return torch.stack(images).float()
