"""Unpaired translation (Sec. 6.5) and DGflow-style refinement, end to end on tiny stand-ins."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fdrl.cli.compose import register
from fdrl.config import load_config
from fdrl.guidance import refine, transport, translate
from fdrl.sample_files import load_input_images
from fdrl.model import FDRL
from fdrl.priors import DataSourcePrior, DatasetPrior
from fdrl.train import Trainer

SIDE = 64  # resnet64_shallow (the cat2dog preset) is built for 64 x 64 images


def _write_domain(folder: Path, n: int, channel: int, rng: np.random.Generator, side: int = SIDE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = rng.integers(0, 80, (side, side, 3)).astype(np.uint8)
        a[..., channel] += 150  # A reddish "cats", B bluish "dogs"
        Image.fromarray(a).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def cat2dog_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-domain")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 3)):
        _write_domain(root / "data" / f"{split}A", n, 0, rng)
        _write_domain(root / "data" / f"{split}B", n, 2, rng)
    data = root / "data"
    overrides = [f"data.params.root={data}", f"prior.params.data.params.root={data}",
                 f"data.params.load_size={SIDE}", f"prior.params.data.params.load_size={SIDE}",
                 "model.params.width=0.0625", "flow.steps=2", "flow.refine_steps=1", "train.steps=3",
                 "train.batch_size=4", "train.sample_n=4", "train.eval_n=4", "device=cpu"]
    if "channels_last" in load_config("cat2dog").to_dict()["flow"]:
        # channels_last on the CPU with this preset's spectral norm + self-attention crashed the
        # process (segfault / double free in backward) while it was being written; not under test here
        overrides.append("flow.channels_last=false")
    Trainer(load_config("cat2dog", overrides), root / "run", progress=False).fit()
    return root


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fdrl")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def test_the_cat2dog_preset_uses_the_source_domain_as_prior(cat2dog_run):
    model = FDRL.load(cat2dog_run / "run")
    assert isinstance(model.prior, DataSourcePrior)
    assert model.prior.data_params["domain"] == "A" and model.prior.shape == (3, SIDE, SIDE)
    draws = model.prior.sample(4, torch.Generator().manual_seed(0))
    assert (draws[:, 0].mean() > draws[:, 2].mean())  # reddish source images, not the bluish target


def test_translate_command_end_to_end(cat2dog_run, capsys):
    out = cat2dog_run / "translated"
    args = _parse("translate", str(cat2dog_run / "run"), "--input", str(cat2dog_run / "data" / "testA"),
                  "--out", str(out), "--columns", "3", "--device", "cpu")
    assert args.func(args) == 0
    pngs = sorted(p.name for p in out.glob("*.png") if p.name != "translation.png")
    assert pngs == ["000.png", "001.png", "002.png"]
    with Image.open(out / "000.png") as img:
        assert img.size == (SIDE, SIDE) and img.mode == "RGB"
    with Image.open(out / "translation.png") as fig:  # 3 rows (images) x 3 columns (steps 0, 2, 3)
        assert fig.size == (3 * (SIDE + 1) + 1, 3 * (SIDE + 1) + 1)
    assert "columns at steps 0,2,3" in capsys.readouterr().out


def test_translate_records_source_intermediate_and_result(cat2dog_run):
    model = FDRL.load(cat2dog_run / "run")
    x, names = load_input_images(cat2dog_run / "data" / "testA", model.prior.shape)
    result, snaps, show = translate(model, x, steps=3, columns=4)
    assert show == [0, 1, 2, 3] and snaps.shape == (4, 3, 3, SIDE, SIDE)
    assert torch.equal(snaps[0], x) and torch.allclose(snaps[-1], result)
    same, _ = transport(model, x, steps=3)
    assert torch.allclose(same, result)  # same seed, same flow


def test_translate_bad_input_is_one_line(cat2dog_run, tmp_path):
    run = str(cat2dog_run / "run")
    small = tmp_path / "small"
    _write_domain(small, 1, 0, np.random.default_rng(1), side=32)
    gray = tmp_path / "gray"
    gray.mkdir()
    Image.fromarray(np.zeros((SIDE, SIDE), np.uint8)).save(gray / "g.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images")
    for folder, message in ((small, r"is 32x32; the model takes 64x64"), (gray, r"has 1 channel\(s\); the model takes 3"),
                            (empty, "holds no images"), (tmp_path / "missing", "does not exist")):
        args = _parse("translate", run, "--input", str(folder), "--out", str(tmp_path / "o"), "--device", "cpu")
        with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
            args.func(args)
        assert "\n" not in str(err.value)


# -- refinement: FDRL with the prior fixed to another generator's samples -----------------------

@pytest.fixture(scope="module")
def refine_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("refine")
    generated = np.clip(np.random.default_rng(0).normal(0, 0.5, (200, 1, 8, 8)), -1, 1).astype(np.float32)
    np.save(root / "generator.npy", generated)
    overrides = ["train.steps=5", "train.batch_size=32", "flow.steps=3", "flow.refine_steps=1",
                 "model.params.width=32", "model.params.depth=1", "train.sample_n=16", "train.eval_n=100",
                 "device=cpu", "prior.name=dataset", f"prior.params.path={root / 'generator.npy'}"]
    Trainer(load_config("digits", overrides), root / "run", progress=False).fit()
    return root


def test_refine_command_and_api(refine_run, capsys):
    from safetensors.torch import load_file

    model = FDRL.load(refine_run / "run")
    assert isinstance(model.prior, DatasetPrior)
    out = refine_run / "refined"
    args = _parse("refine", str(refine_run / "run"), "--input", str(refine_run / "generator.npy"), "--out", str(out),
                  "--steps", "2", "--device", "cpu")
    assert args.func(args) == 0
    refined = load_file(str(out / "refined.safetensors"))["samples"]
    assert refined.shape == (200, 1, 8, 8) and len(list(out.glob("*.png"))) == 200
    # a folder of the written PNGs refines too
    args = _parse("refine", str(refine_run / "run"), "--input", str(out), "--out", str(refine_run / "again"),
                  "--steps", "1", "--device", "cpu")
    assert args.func(args) == 0 and len(list((refine_run / "again").glob("*.png"))) == 200

    # the Python API takes a callable generator; zero steps returns its samples unchanged
    def generator(n: int) -> torch.Tensor:
        return torch.zeros(n, 1, 8, 8)

    assert torch.equal(refine(model, generator, n=5, steps=0), torch.zeros(5, 1, 8, 8))
    moved = refine(model, generator, n=5, steps=2)
    assert moved.shape == (5, 1, 8, 8) and not torch.equal(moved, torch.zeros(5, 1, 8, 8))
    with pytest.raises(ValueError, match="needs n >= 1"):
        refine(model, generator)
    with pytest.raises(ValueError, match=r"takes images of shape \(1, 8, 8\)"):
        refine(model, torch.zeros(3, 1, 9, 9))


def test_translation_moves_source_points_into_the_target_domain(tmp_path):
    """Sec. 6.5 on vectors: the prior is domain A = N(0, 0.1 I), the data domain B = N(2 1, 0.1 I).
    Held-out A points flowed by the trained model land in B (near its mean, with its spread)."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(0.0, 0.1**0.5, (2000, 2)).astype(np.float32))
    np.save(tmp_path / "b.npy", rng.normal(2.0, 0.1**0.5, (2000, 2)).astype(np.float32))
    config = load_config({
        "data": {"name": "array", "params": {"path": str(tmp_path / "b.npy"), "test_fraction": 0.0}},
        "prior": {"name": "dataset", "params": {"path": str(tmp_path / "a.npy")}},
        "model": {"name": "mlp", "params": {"width": 64, "depth": 2}},
        "flow": {"eta": 0.05, "noise": 0.01, "steps": 40, "refine_steps": 5},
        "train": {"steps": 500, "batch_size": 128, "lr": 1e-3, "ema": 0.9, "sample_every": 1000, "threads": 1},
        "device": "cpu"})
    Trainer(config, tmp_path / "run", progress=False).fit()
    held_out_a = torch.from_numpy(rng.normal(0.0, 0.1**0.5, (500, 2)).astype(np.float32))
    result, snapshots, steps = translate(FDRL.load(tmp_path / "run"), held_out_a, columns=3)
    before = torch.linalg.norm(held_out_a.mean(0) - 2.0)
    after = torch.linalg.norm(result.mean(0) - 2.0)
    assert before > 2.5 and after < 0.3, (before, after)
    assert torch.equal(snapshots[0], held_out_a) and steps[-1] == 45
    assert ((result - 2.0).norm(dim=1) < 1.5).float().mean() > 0.95  # each point moved, not just the mean
