"""Typed specs of the data sets, priors and estimators a config names, without PyTorch.

A config's ``data``, ``prior`` and ``model`` sections are a ``name`` and its ``params``;
:func:`component_spec` turns them into the spec dataclass registered for that name (one per
data set, prior and estimator family), each option typed, with the builder's default. So a typo
or a value of the wrong type is a one-line :class:`~fdrl.schema.ConfigError` naming the valid
options before anything is built, and ``fdrl config`` checks a config without importing torch.
The builders take the specs: :func:`fdrl.data.build_data`, :func:`fdrl.priors.build_prior`
and :func:`fdrl.nets.build_estimator`.

Options a builder cannot do without (a data file's ``path``, an image folder's ``root``) are
None here and checked when the component is built (:meth:`Spec.require`): a preset leaves
them to the user, who gives them on the command line.

One module of about 400 lines: the specs of the three sections are one registry, a few
declarative lines each, that a config is checked against without torch.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fdrl.schema import ConfigError, coerce

#: the share of a user's rows or images held out for scoring, unless data.test_fraction says otherwise
DEFAULT_TEST_FRACTION = 0.2
#: data_gaussian: above this many dimensions the low-rank form is used unless ``rank`` says
#: otherwise. 12288 = 3 x 64 x 64 keeps CIFAR10 and CelebA on the full covariance, as in the
#: paper (a d x d float64 accumulator of 1.2 GB at 12288); 3 x 128 x 128 would need 19 GB.
MAX_FULL_DIM = 12288
#: the Table 3 ResNets (fdrl.nets.resnet.ARCHITECTURES), listed here so that configs are checked without torch
RESNET_ARCHITECTURES = ("resnet32", "resnet64", "resnet64_shallow", "resnet128", "resnet8", "resnet28")


@dataclass(frozen=True, kw_only=True)
class Spec:
    """A component's name and typed options. ``name`` defaults to the first of :attr:`names`."""

    #: the config section: data, prior or model
    section: ClassVar[str]
    #: the ``SECTION.name`` values this spec is for
    names: ClassVar[tuple[str, ...]]
    #: options the builder needs that have no default (None until the user gives them) -> what
    #: to write after ``SECTION.params.OPTION=`` in the message that asks for one
    required: ClassVar[dict[str, str]] = {}

    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.names[0])
        if self.name not in self.names:
            raise ConfigError(f"{type(self).__name__} is for {self.section} {', '.join(self.names)}, "
                              f"not '{self.name}'")

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The option names (``SECTION.params.*``)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "name")

    @property
    def params(self) -> dict[str, Any]:
        """The options as keyword arguments."""
        return {name: getattr(self, name) for name in self.options()}

    def require(self) -> None:
        """ConfigError naming the first :attr:`required` option that is not given."""
        for option, value in self.required.items():
            if getattr(self, option) is None:
                raise ConfigError(f"{self.section} '{self.name}' needs {self.section}.params.{option}={value}")


# -- data ----------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class DataSpec(Spec):
    section = "data"


@dataclass(frozen=True, kw_only=True)
class ToySpec(DataSpec):
    """A two-dimensional toy distribution of :mod:`fdrl.data.toy` (its sampler's keywords)."""


@dataclass(frozen=True, kw_only=True)
class SwissrollSpec(ToySpec):
    names = ("swissroll",)
    noise: float = 1.0
    scale: float = 5.0


@dataclass(frozen=True, kw_only=True)
class EightGaussiansSpec(ToySpec):
    names = ("8gaussians",)
    radius: float = 2.0
    std: float = 0.1


@dataclass(frozen=True, kw_only=True)
class TwentyFiveGaussiansSpec(ToySpec):
    names = ("25gaussians",)
    spacing: float = 1.0
    std: float = 0.05


@dataclass(frozen=True, kw_only=True)
class GaussianDataSpec(ToySpec):
    names = ("gaussian",)
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0])
    variance: float = 0.1


@dataclass(frozen=True, kw_only=True)
class ArraySpec(DataSpec):
    """Rows of a table or a ``.npy`` array (:meth:`fdrl.data.ArrayData.from_file`)."""

    names = ("array",)
    required = {"path": "FILE (a table: .csv, .tsv, .parquet, ...; or .npy)"}
    path: str | None = None
    test_fraction: float = DEFAULT_TEST_FRACTION
    test_path: str | None = None
    standardize: bool = False
    split_seed: int = 0
    columns: dict[str, str] | None = None
    missing: str = "model"
    returns: str | None = None


_ROOT = "DIR (the dataset directory)"


@dataclass(frozen=True, kw_only=True)
class ImageSpec(DataSpec):
    """An image dataset of :mod:`fdrl.data.images`: random flips and Gaussian dequantisation
    (sigma ``dequantize``, 0 = none) of training batches."""

    #: the split holding the held-out images (None: the dataset has none)
    held_out_split: ClassVar[str | None] = None
    flip: bool = True
    dequantize: float = 3e-2
    #: model the images in a principal-component space (fdrl.data.principal): :func:`check_pca`
    pca: float | str = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_pca(self.pca)


def check_pca(value: Any) -> float | int | str:
    """``data.params.pca`` as a variance share in (0, 1), a number of directions >= 1, ``auto``
    (directions by the number of images: :mod:`fdrl.data.principal`) or 0 for pixel space;
    ConfigError (one line) otherwise."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (value >= 1 and value != int(value)):
        raise ConfigError(f"data.params.pca must be a variance share in (0, 1), a number of directions >= 1, "
                          f"auto, or 0 for pixel space; got {value!r}")
    return int(value) if value >= 1 or value == 0 else float(value)


@dataclass(frozen=True, kw_only=True)
class FileImageSpec(ImageSpec):
    """Images decoded from files: ``channels`` 3 or 1 (grayscale), ``workers`` decoding threads,
    ``check_files`` opens every file's header once at start."""

    required = {"root": _ROOT}
    root: str | None = None
    channels: int = 3
    workers: int = 4
    check_files: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.channels not in (1, 3):
            raise ConfigError(f"data.params.channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if self.workers < 0:
            raise ConfigError(f"data.params.workers must be >= 0, got {self.workers}")


@dataclass(frozen=True, kw_only=True)
class Cifar10Spec(ImageSpec):
    names = ("cifar10",)
    required = {"root": _ROOT}
    held_out_split = "test"
    root: str | None = None
    split: str = "train"


@dataclass(frozen=True, kw_only=True)
class CelebASpec(FileImageSpec):
    names = ("celeba",)
    image_size: int = 64
    pre_crop: int = 140


@dataclass(frozen=True, kw_only=True)
class LsunChurchSpec(FileImageSpec):
    names = ("lsun_church",)
    held_out_split = "val"
    split: str = "train"
    image_size: int = 128
    keep_aspect: bool = False


@dataclass(frozen=True, kw_only=True)
class ResizedImagesSpec(FileImageSpec):
    """Files of any size, resized (shorter side, or both sides without ``keep_aspect``) to
    ``load_size`` (default ``image_size``) after an optional centre crop ``pre_crop``, then
    centre-cropped to ``image_size``; the test split held out."""

    required = {"root": _ROOT, "image_size": "SIDE (the images' side in pixels)"}
    held_out_split = "test"
    split: str = "train"
    image_size: int | None = None
    load_size: int | None = None
    pre_crop: int | None = None
    keep_aspect: bool = True


@dataclass(frozen=True, kw_only=True)
class FolderSpec(ResizedImagesSpec):
    """Any folder of images; ``test_fraction`` of the files (a seeded choice) are held out."""

    names = ("folder",)
    test_fraction: float = DEFAULT_TEST_FRACTION


@dataclass(frozen=True, kw_only=True)
class TwoDomainSpec(ResizedImagesSpec):
    """One domain (A or B) of the ``trainA/ trainB/ testA/ testB/`` layout."""

    names = ("two_domain",)
    required = {**ResizedImagesSpec.required, "domain": "A or B"}
    domain: str | None = None
    keep_aspect: bool = False


@dataclass(frozen=True, kw_only=True)
class Cat2dogSpec(FileImageSpec):
    names = ("cat2dog",)
    required = {"root": _ROOT, "domain": "A or B"}
    held_out_split = "test"
    domain: str | None = None
    split: str = "train"
    image_size: int = 64
    load_size: int = 84


@dataclass(frozen=True, kw_only=True)
class DigitsSpec(ImageSpec):
    """Labelled 8-bit digits held in memory; ``classes`` keeps only those digits."""

    names = ("digits",)
    held_out_split = "test"
    split: str = "train"
    test_fraction: float = DEFAULT_TEST_FRACTION
    flip: bool = False
    classes: int | list[int] | None = None


@dataclass(frozen=True, kw_only=True)
class MnistSpec(DigitsSpec):
    names = ("mnist",)
    image_size: int = 28


@dataclass(frozen=True, kw_only=True)
class Mnist8Spec(DigitsSpec):
    names = ("mnist8",)


# -- priors --------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class PriorSpec(Spec):
    section = "prior"


@dataclass(frozen=True, kw_only=True)
class StandardNormalSpec(PriorSpec):
    names = ("standard_normal",)


@dataclass(frozen=True, kw_only=True)
class GaussianPriorSpec(PriorSpec):
    """N(mean, variance I); ``mean`` None = the origin."""

    names = ("gaussian",)
    mean: list[float] | None = None
    variance: float = 1.0


@dataclass(frozen=True, kw_only=True)
class DataGaussianSpec(PriorSpec):
    """Eq. 8 fitted to the training data (see :func:`fdrl.priors.build_prior`). ``rank`` None:
    full up to ``max_full_dim`` dimensions, low-rank above; ``clamp`` None: the data's value
    range, ``[]``: none; ``batch_size`` None: :func:`fdrl.priors.fit_batch_size`; ``cache_dir`` None:
    :func:`fdrl.priors.default_cache_dir`."""

    names = ("data_gaussian",)
    rank: int | str | None = None
    max_full_dim: int = MAX_FULL_DIM
    clamp: list[float] | None = None
    batch_size: int | None = None
    seed: int = 0
    oversample: int = 10
    passes: int = 2
    fit_samples: int = 10000
    cache: bool = True
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank is not None and self.rank != "full" and not (isinstance(self.rank, int) and self.rank >= 1):
            raise ConfigError(f"prior.params.rank must be a positive integer or 'full', got {self.rank!r}")


@dataclass(frozen=True, kw_only=True)
class DataMixtureSpec(PriorSpec):
    """A Gaussian mixture with full covariances fitted to the training rows (see
    :class:`fdrl.priors.GaussianMixturePrior`): ``components`` (at most one per 5 rows);
    ``clamp`` as for ``data_gaussian``; above ``max_dim`` dimensions, the one Gaussian of Eq. 8;
    ``fit_samples``: draws fitted to where the data is an endless stream."""

    names = ("data_mixture",)
    components: int = 10
    max_dim: int = 512
    clamp: list[float] | None = None
    seed: int = 0
    fit_samples: int = 10000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.components < 1:
            raise ConfigError(f"prior.params.components must be a positive integer, got {self.components!r}")


@dataclass(frozen=True, kw_only=True)
class UniformSpec(PriorSpec):
    names = ("uniform",)
    low: float = -1.0
    high: float = 1.0


@dataclass(frozen=True, kw_only=True)
class DatasetPriorSpec(PriorSpec):
    """Draws from the array in ``path``, or from the dataset ``data`` ({name, params}) with its
    augmentation (Sec. 6.5)."""

    names = ("dataset",)
    path: str | None = None
    data: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data is not None:
            self.source()

    def source(self) -> Spec:
        """The spec of :attr:`data` (ConfigError if it is not a data set's name and params)."""
        data = self.data or {}
        if not isinstance(data.get("name"), str) or not isinstance(data.get("params", {}), dict):
            raise ConfigError(f"prior.params.data must be {{name: DATASET, params: {{...}}}}, got {self.data!r}")
        return component_spec("data", data["name"], data.get("params", {}), "prior.params.data")


# -- estimators ----------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class EstimatorSpec(Spec):
    section = "model"


@dataclass(frozen=True, kw_only=True)
class MlpSpec(EstimatorSpec):
    """:class:`fdrl.nets.MLP`'s options."""

    names = ("mlp",)
    width: int = 128
    depth: int = 3
    spectral_norm: bool = False
    negative_slope: float = 0.2


@dataclass(frozen=True, kw_only=True)
class ResNetSpec(EstimatorSpec):
    """:class:`fdrl.nets.ResNet`'s options; ``resnet`` is the Table 3 ResNet for the images' side."""

    names = ("resnet", *RESNET_ARCHITECTURES)
    spectral_norm: bool = False
    self_attention: bool = False
    width: float = 1.0
    negative_slope: float = 0.2


def _by_name(*classes: type[Spec]) -> dict[str, type[Spec]]:
    return {name: cls for cls in classes for name in cls.names}


#: data.name -> its spec
DATA_SPECS: dict[str, type[Spec]] = _by_name(
    SwissrollSpec, EightGaussiansSpec, TwentyFiveGaussiansSpec, GaussianDataSpec, ArraySpec, Cifar10Spec,
    CelebASpec, LsunChurchSpec, FolderSpec, TwoDomainSpec, Cat2dogSpec, DigitsSpec, MnistSpec, Mnist8Spec)
#: prior.name -> its spec
PRIOR_SPECS: dict[str, type[Spec]] = _by_name(
    StandardNormalSpec, GaussianPriorSpec, DataGaussianSpec, DataMixtureSpec, UniformSpec, DatasetPriorSpec)
#: model.name -> its spec
MODEL_SPECS: dict[str, type[Spec]] = _by_name(MlpSpec, ResNetSpec)

SECTIONS = {"data": DATA_SPECS, "prior": PRIOR_SPECS, "model": MODEL_SPECS}
_KIND = {"data": "dataset", "prior": "prior", "model": "estimator"}
#: the names of the image datasets (data.name)
IMAGE_DATASETS = tuple(name for name, cls in DATA_SPECS.items() if issubclass(cls, ImageSpec))


def component_spec(section: str, name: str, params: dict[str, Any], key: str = "") -> Spec:
    """The spec of ``section``'s ``name`` with ``params`` (a config's ``SECTION.params``);
    ConfigError (one line) for an unknown name, an unknown option (listing the valid ones) or a
    value of the wrong type (naming the option). ``key``: where the section is in the config
    (default: ``section``; a nested one, such as a dataset prior's data, says so)."""
    key = key or section
    table = SECTIONS[section]
    if name not in table:
        raise ConfigError(f"unknown {_KIND[section]} '{name}' ({key}.name); choose one of: {', '.join(table)}")
    cls = table[name]
    unknown = sorted(str(k) for k in params if k not in cls.options())  # YAML keys may be numbers
    if unknown:
        valid = ", ".join(f"{key}.params.{k}" for k in cls.options()) or "none"
        raise ConfigError(f"unknown config key '{key}.params.{unknown[0]}' for {section} '{name}'; "
                          f"valid keys here: {valid}")
    hints = typing.get_type_hints(cls)
    return cls(name=name, **{k: coerce(v, hints[k], f"{key}.params.{k}") for k, v in params.items()})


def as_spec(section: str, spec: Spec | str, params: dict[str, Any]) -> Spec:
    """``spec`` itself, or the spec of the name ``spec`` with ``params`` (a builder's keyword
    arguments: ``build_data("digits", split="test")``); options go in one of the two, not both."""
    if isinstance(spec, str):
        return component_spec(section, spec, params)
    if spec.section != section or params:
        raise TypeError(f"expected a {section} spec without options, or a {section} name with options; "
                        f"got {type(spec).__name__} and {sorted(params)}")
    return spec
