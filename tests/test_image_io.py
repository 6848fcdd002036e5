"""One conversion of images in [-1, 1] to pixels: per-image PNGs, grids and FID's input agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fdrl.evaluate import to_uint8_rgb
from fdrl.image_io import image_grid, read_image_files, save_grid, save_png, save_pngs, to_uint8


def test_a_per_image_png_holds_the_bytes_of_a_grid_and_of_fid_input(tmp_path):
    """Values half-way between two levels, (2k + 1) / 255 - 1, where rounding half to even (what
    the one-per-image PNGs did apart from the grids) and floor(v + 0.5) disagree."""
    k = torch.arange(0, 254, 2, dtype=torch.float64)
    halves = ((2 * k + 1) / 255 - 1).float()
    image = torch.cat([halves, torch.tensor([-1.5, 1.5, 0.0])])[None, None, :].expand(1, 3, 4, -1).contiguous()
    (path,) = save_pngs(image, ["one"], tmp_path / "each")
    png = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)
    assert torch.equal(png, to_uint8(image[0]))
    half_even = ((image[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert not torch.equal(half_even, png)  # the inputs tell the two roundings apart
    assert png[0, 0, -3:].tolist() == [0, 255, 128]  # clamped, and 0 is 127.5 rounded up
    save_grid(image, tmp_path / "grid.png")
    assert torch.equal(torch.from_numpy(np.array(Image.open(tmp_path / "grid.png"))).permute(2, 0, 1), png)
    assert torch.equal(to_uint8_rgb(image)[0], png)


def test_grey_pngs_read_back_within_one_level(tmp_path):
    x = torch.rand(3, 1, 5, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    paths = save_pngs(x, ["a", "b", "c"], tmp_path)
    assert Image.open(paths[0]).mode == "L"
    back = read_image_files(paths, (1, 5, 6))
    assert back.shape == x.shape and float((back - x).abs().max()) <= 1 / 255 + 1e-6
    with pytest.raises(ValueError, match="has 1 channel"):
        read_image_files(paths, (3, 5, 6))
    with pytest.raises(ValueError, match="is 6x5; the model takes 5x5"):
        read_image_files(paths, (1, 5, 5))


def test_a_grid_is_scaled_padded_and_written_only_as_png(tmp_path):
    images = torch.zeros(6, 1, 2, 3)
    grid = image_grid(images, nrow=3, scale=2)  # 2 rows x 3 columns of 4 x 6 cells, 1 pixel of padding
    assert grid.shape == (3, 2 * (4 + 1) + 1, 3 * (6 + 1) + 1)
    assert float(grid[:, 0].max()) == 0.0 and float(grid[0, 1, 1]) == 0.5  # black padding, grey cell
    with pytest.raises(ValueError, match="must end in .png"):
        save_png(grid, tmp_path / "grid.jpg")
