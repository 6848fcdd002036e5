"""Where the pixels of an image dataset live: memory (:class:`TensorImages`), a folder of
encoded files (:class:`FolderImages`) or an LMDB database (:class:`LmdbImages`), the last two
decoded a batch at a time (:class:`EncodedImages`) and shaped by a :class:`Geometry`.

Unreadable image files are skipped with a warning (once per process); an image smaller than a
centre crop it needs is an error.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from fdrl.components import FileImageSpec
from fdrl.data.images.source import ImageData, held_out_split

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


class EncodedImages(ImageData):
    """Images decoded from encoded files (JPEG, PNG, ...) a batch at a time, converted to the
    configured channels (mixed L / RGBA / RGB / palette files are fine) and shaped by a
    :class:`Geometry`. A file that fails to decode is skipped (with a warning) in favour of the
    next readable index, so batches stay a function of (step, seed) for a given set of files."""

    def __init__(self, name: str, size: int, geometry: Geometry, options: FileImageSpec, key: dict[str, Any]):
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

    def __init__(self, root: str | Path, geometry: Geometry, options: FileImageSpec, name: str = "folder",
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

    def __init__(self, path: str | Path, geometry: Geometry, options: FileImageSpec, name: str, how_to_get: str):
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
