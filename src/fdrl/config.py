"""Run configuration: typed dataclasses, YAML presets shipped in the package, key=value overrides.

A config is validated when built: unknown keys, values of the wrong type and out-of-range
numbers raise :class:`ConfigError` with one line naming the key and what is allowed.

One module over 400 lines: the sections' dataclasses, their checks and the reading of presets,
files and overrides are one schema, and the commands that only read a config (``fdrl config``,
``presets``, ``info``) import this module alone, without torch.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from fdrl.components import Spec, component_spec
from fdrl.pairings import ETA_SCALINGS, check_pairing, scaled_step_size
from fdrl.schema import ConfigError, build_dataclass
from fdrl.table_paths import PARQUET_SUFFIX, TEXT_SUFFIXES, is_table_path, supported_suffixes, table_stem

#: torch.compile modes of the flow step (fdrl.flow.FlowOptions)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: how spectral norm's power iteration runs during the flow (fdrl.flow.FlowOptions.spectral_norm_power)
SPECTRAL_NORM_POWERS = ("once", "per_step")
#: the flow routes of fdrl.flow.ROUTES, in the order they are tried (listed here so that a saved
#: flow plan is read without torch)
ROUTE_NAMES = ("cpu_kernel", "closed_form", "autograd")
#: the metrics of fdrl.evaluate.METRICS (listed here so that configs are checked without torch)
METRIC_NAMES = ("energy", "mmd", "sliced_wasserstein", "c2st", "fid", "classifier_fd")
#: the largest seed (NumPy and scikit-learn take seeds in 0..2**32 - 1)
MAX_SEED = 2**32 - 1
#: what ``device`` may be: auto, cpu, mps, cuda or cuda:N
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
#: upper bounds on settings where a larger value can only be a mistake (it would not fit in
#: memory, or not finish), with why
UPPER_BOUNDS: dict[str, tuple[float, str]] = {
    "train.batch_size": (1_000_000, "a batch this large would not fit in memory"),
    "train.sample_n": (1_000_000, "the figure's samples would not fit in memory"),
    "train.eval_n": (10_000_000, "the evaluation's samples would not fit in memory"),
    "flow.steps": (1_000_000, "each training step would run this many flow steps"),
    "flow.refine_steps": (1_000_000, "sampling would run this many extra flow steps"),
    "train.steps": (10**10, "training would not finish"),
    "train.keep_checkpoints": (10_000, "that many checkpoints would fill the disk"),
    "train.threads": (4096, "no machine has that many cores"),
    "train.data_smoothing_correlation": (1, "it is the weight of the correlations in the jitter's shape, from 0 to 1"),
}


class DamagedRunConfig(ConfigError):
    """A run directory's ``config.yaml`` cannot be used; ``problem`` says why (the message adds
    how to restore it)."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.problem = problem


@dataclass
class Component:
    """A named, configurable part: ``data`` (``fdrl.data.build_data``), ``prior``
    (``fdrl.priors.build_prior``: standard_normal | gaussian | data_gaussian | data_mixture | uniform | dataset)
    or ``model`` (``fdrl.nets.build_estimator``), with its options in ``params``, as the config
    file writes them; :attr:`spec` is the typed form the builders take (:mod:`fdrl.components`)."""

    #: the config section (a subclass per section)
    section: ClassVar[str]

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> Spec:
        """The typed spec of this name and params; ConfigError for an unknown name or option,
        or a value of the wrong type."""
        return component_spec(self.section, self.name, self.params)


@dataclass
class DataComponent(Component):
    section = "data"


@dataclass
class PriorComponent(Component):
    section = "prior"


@dataclass
class ModelComponent(Component):
    section = "model"


@dataclass
class FlowSwitches:
    """The switches of the flow's numerics and fast path: one dataclass, kept whole by a trained
    model (:class:`fdrl.model.FDRL`) so that sampling runs the training flow's numerics, and
    resolved by :meth:`fdrl.flow.FlowOptions.for_device` into the options of one device.

    ``null`` has one meaning for every switch: fdrl decides, per device, estimator and flow
    route, by the rules of :data:`fdrl.flow.DEVICE_DEFAULTS` and :mod:`fdrl.flow` (the plan a run
    records, :class:`fdrl.flow.FlowPlan`, says what it decided); ``true`` / ``false`` force it.
    docs/flow-routes.md lists which route runs for which estimator, device and switches.
    """

    #: convolutional estimators and image particles in channels_last
    channels_last: bool | None = None
    #: bf16 autocast of the estimator during the flow (particles, update and sampling stay fp32);
    #: it changes the maths, so it is off on every device unless true
    autocast_bf16: bool | None = False
    #: TF32 matmuls/convolutions allowed during the flow (CUDA, Ampere and later; no effect elsewhere)
    tf32: bool = True
    #: torch.compile of the flow steps; each route has its own rule for null (fdrl.flow.ROUTES);
    #: sampling compiles only when true, since every new batch shape recompiles
    compile: bool | None = None
    #: torch.compile mode: default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs
    compile_mode: str = "default"
    #: spectral norm in the flow: "once" = weights normalised once per flow, no power iteration
    #: in it (one per training step, in the update's forward); "per_step" = one power iteration
    #: at every flow step, as the authors' train-mode flow (K + 1 per training step)
    spectral_norm_power: str = "once"
    #: the fused C++ MLP flow on the CPU (fdrl.native); null = for the flow shapes where a short
    #: measurement on this machine found it faster (fdrl.native.route), true = any MLP, false = never
    cpu_kernel: bool | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "FlowSwitches":
        """The switches named in ``values`` (a saved model's or run's ``flow`` mapping; keys that
        are not switches, such as ``eta``, are left out), the defaults for the rest: a model
        saved before a switch existed loads with that switch's default."""
        names = {f.name for f in dataclasses.fields(FlowSwitches)}
        return cls(**{k: v for k, v in (values or {}).items() if k in names})

    def switches(self) -> "FlowSwitches":
        """These switches alone (a :class:`FlowConfig`'s without its step size and counts)."""
        return FlowSwitches.from_mapping(dataclasses.asdict(self))


@dataclass
class FlowConfig(FlowSwitches):
    """Eq. 9: step size eta, noise nu; K steps in training, K + kappa when sampling (Alg. 2);
    and the flow's switches (:class:`FlowSwitches`)."""

    eta: float = 3.0
    noise: float = 1e-2
    steps: int = 100
    refine_steps: int = 20
    #: "none": eta as given; "curvature": eta is LSIF-chi2's step and other pairings get
    #: eta * 2 / f''(1) (fdrl.objectives.scaled_step_size)
    eta_scaling: str = "none"

    @property
    def sampling_steps(self) -> int:
        """K + kappa: the flow steps of a sample (Alg. 2)."""
        return self.steps + self.refine_steps


@dataclass(frozen=True)
class FlowPlan:
    """A flow's route and numerics, decided once by :func:`fdrl.flow.plan_flow` from the switches:
    what :func:`fdrl.flow.flow` runs, what ``fdrl train`` records (``fdrl info RUN`` shows it) and
    what the model's samples follow.

    ``route``: a name of :data:`ROUTE_NAMES` (:data:`fdrl.flow.ROUTES`); ``compiled``: its steps
    run under ``torch.compile``; ``steps_per_call``: the most steps one call runs for the
    particles it was planned for (the kernel's is bounded by the noise drawn for a call, so it is
    worked out again for each batch). The other fields are the :class:`fdrl.flow.FlowOptions` of
    the same name, which the route runs under.
    """

    route: str
    compiled: bool = False
    steps_per_call: int = 1
    autocast_bf16: bool = False
    channels_last: bool = False
    tf32: bool = False
    spectral_norm_power: str = "once"
    compile_mode: str = "default"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "FlowPlan":
        """A plan saved as a mapping (:func:`dataclasses.asdict`; other keys are left out);
        ValueError for a route that is not one of :data:`ROUTE_NAMES`."""
        names = {f.name for f in dataclasses.fields(cls)}
        plan = cls(**{k: v for k, v in values.items() if k in names})
        if plan.route not in ROUTE_NAMES:
            raise ValueError(f"flow plan route must be one of {', '.join(ROUTE_NAMES)}, got '{plan.route}'")
        return plan

    def describe(self) -> str:
        """One line: the route, compiled or eager, steps per call, and the numerics that are on."""
        n = self.steps_per_call
        parts = ["compiled" if self.compiled else "eager", f"{n} step{'s' * (n != 1)} per call"]
        parts += [name for name in ("autocast_bf16", "channels_last", "tf32") if getattr(self, name)]
        if self.spectral_norm_power != "once":
            parts.append(f"spectral_norm_power={self.spectral_norm_power}")
        return f"{self.route} ({', '.join(parts)})"


@dataclass
class TrainConfig:
    """Algorithm 1's outer loop, the optimiser, EMA, and what is written when."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    #: steps at which the learning rate is multiplied by lr_decay_factor; a negative entry
    #: counts from the end (-20000 = when 20000 steps remain, as in App. F)
    lr_decay_at: list[int] = field(default_factory=list)
    lr_decay_factor: float = 0.1
    ema: float = 0.998
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 1000
    sample_n: int = 1000
    eval_n: int = 5000
    #: CPU threads for PyTorch (0: PyTorch's default). Small networks run fastest on 1, and
    #: several threads busy-wait badly when the cores are shared.
    threads: int = 0
    #: every this many steps (0 = never), score eval_n EMA samples with eval_metric (a name of
    #: fdrl.evaluate.METRICS) against the data, log it, and keep the best checkpoint as
    #: checkpoints/best.pt. classifier_fd needs eval_classifier (a `fdrl train-classifier`
    #: directory); fid needs Inception weights (eval_inception_weights, or the library's own
    #: download / $FDRL_INCEPTION_WEIGHTS)
    eval_every: int = 0
    eval_metric: str = "energy"
    eval_classifier: str | None = None
    eval_inception_weights: str | None = None
    #: divergence guard: a non-finite loss or gradient, or a ratio estimate |r| above
    #: guard_max_ratio, rolls training back to the last checkpoint and multiplies the learning
    #: rate by guard_lr_factor; after guard_retries such rollbacks the run stops
    guard_max_ratio: float = 1e10
    guard_retries: int = 3
    guard_lr_factor: float = 0.5
    #: divergence guard: also roll back when the mean ratio estimate on the flowed particles,
    #: an estimate of 1 + chi2(particles || data), exceeds this (fdrl.guard); 0 = no such bound
    guard_particle_ratio: float = 0.0
    #: kernel smoothing of the data batch (fdrl.smoothing): each batch of a finite table of vectors
    #: is jittered by Gaussian noise, this many times the least bandwidth at which the jittered
    #: rows are near-copies of training rows at most 5% of the time, so that the estimator learns
    #: a smoothed p and samples do not collapse onto training rows; 0 = the rows as they are
    data_smoothing: float = 0.0
    #: the jitter's shape: its covariance is h^2 (w R + (1 - w) I) in z-scores, R the rows'
    #: correlation matrix, w this weight; 0 = the same in every direction (correlations shrink by
    #: 1 + h^2), 1 = along the data's correlations (kept exactly, but nothing off a flat table)
    data_smoothing_correlation: float = 0.0
    #: after training, map each sampled feature (a table's numeric column, a principal
    #: coefficient, a pixel) monotonically onto the training data's marginal
    #: (fdrl.data.marginals), fitted to the finished sampler's particles; a finite dataset only
    calibrate_marginals: bool = False
    #: torch.distributed backend when launched by torchrun (WORLD_SIZE > 1): auto (nccl on
    #: CUDA, gloo on the CPU), nccl or gloo. batch_size is the global batch, split over ranks.
    dist_backend: str = "auto"


@dataclass
class Config:
    name: str = "custom"
    objective: str = "lsif-chi2"
    device: str = "auto"
    data: DataComponent = field(default_factory=lambda: DataComponent("swissroll"))
    prior: PriorComponent = field(default_factory=lambda: PriorComponent("standard_normal"))
    model: ModelComponent = field(default_factory=lambda: ModelComponent("mlp"))
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        """Check ranges and the pairing; raise ConfigError naming the key."""
        try:
            check_pairing(self.objective)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        positive = {
            "flow.eta": self.flow.eta,
            "flow.steps": self.flow.steps,
            "train.steps": self.train.steps,
            "train.batch_size": self.train.batch_size,
            "train.lr": self.train.lr,
            "train.log_every": self.train.log_every,
            "train.checkpoint_every": self.train.checkpoint_every,
            "train.keep_checkpoints": self.train.keep_checkpoints,
            "train.sample_every": self.train.sample_every,
            "train.sample_n": self.train.sample_n,
            "train.eval_n": self.train.eval_n,
            "train.guard_max_ratio": self.train.guard_max_ratio,
        }
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        non_negative = {
            "flow.noise": self.flow.noise,
            "flow.refine_steps": self.flow.refine_steps,
            "train.seed": self.train.seed,
            "train.eval_every": self.train.eval_every,
            "train.guard_retries": self.train.guard_retries,
            "train.threads": self.train.threads,
            "train.data_smoothing": self.train.data_smoothing,
            "train.data_smoothing_correlation": self.train.data_smoothing_correlation,
            "train.guard_particle_ratio": self.train.guard_particle_ratio,
        }
        for key, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"{key} must be >= 0, got {value}")
        for key, (bound, why) in UPPER_BOUNDS.items():
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            if value > bound:
                raise ConfigError(f"{key}={value} is more than {bound:,}: {why}")
        if self.train.seed > MAX_SEED:
            raise ConfigError(f"train.seed must be in 0..{MAX_SEED}, got {self.train.seed}")
        if self.train.eval_metric not in METRIC_NAMES:
            raise ConfigError(f"train.eval_metric must be one of {', '.join(METRIC_NAMES)}, got '{self.train.eval_metric}'")
        if self.train.eval_every and self.train.eval_metric == "classifier_fd" and not self.train.eval_classifier:
            raise ConfigError("train.eval_metric=classifier_fd needs train.eval_classifier=DIR "
                              "(train one with: fdrl train-classifier digits --out DIR)")
        for component in (self.data, self.prior, self.model):
            component.spec  # building the spec checks the name, the options and their types
        if self.flow.eta_scaling not in ETA_SCALINGS:
            raise ConfigError(f"flow.eta_scaling must be one of {', '.join(ETA_SCALINGS)}, got '{self.flow.eta_scaling}'")
        if not 0.0 <= self.train.ema < 1.0:
            raise ConfigError(f"train.ema must be in [0, 1), got {self.train.ema}")
        if not 0.0 < self.train.lr_decay_factor <= 1.0:
            raise ConfigError(f"train.lr_decay_factor must be in (0, 1], got {self.train.lr_decay_factor}")
        if not 0.0 < self.train.guard_lr_factor < 1.0:
            raise ConfigError(f"train.guard_lr_factor must be in (0, 1), got {self.train.guard_lr_factor}")
        if len(self.train.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.train.betas):
            raise ConfigError(f"train.betas must be two numbers in [0, 1), got {self.train.betas}")
        if self.flow.compile_mode not in COMPILE_MODES:
            raise ConfigError(f"flow.compile_mode must be one of {', '.join(COMPILE_MODES)}, got '{self.flow.compile_mode}'")
        if self.flow.spectral_norm_power not in SPECTRAL_NORM_POWERS:
            raise ConfigError(f"flow.spectral_norm_power must be one of {', '.join(SPECTRAL_NORM_POWERS)}, "
                              f"got '{self.flow.spectral_norm_power}'")
        if self.train.dist_backend not in ("auto", "nccl", "gloo"):
            raise ConfigError(f"train.dist_backend must be auto, nccl or gloo, got '{self.train.dist_backend}'")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got '{self.device}'")
        return self

    def step_size(self) -> float:
        """The flow's eta after ``flow.eta_scaling``."""
        return scaled_step_size(self.flow.eta, self.flow.eta_scaling, self.objective)

    def lr_milestones(self) -> list[int]:
        """``train.lr_decay_at`` resolved to absolute steps (negative entries count from the end)."""
        steps = self.train.steps
        return sorted(s if s >= 0 else steps + s for s in self.train.lr_decay_at)


def _merge(base: dict[str, Any], update: dict[str, Any], into_params: bool = False) -> dict[str, Any]:
    """Deep-merge ``update`` into ``base``. A preset that ``extends`` another replaces a whole
    ``params`` mapping; a command-line override (``into_params``) updates single entries."""
    out = dict(base)
    for key, value in update.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        if nested and (into_params or key != "params"):
            out[key] = _merge(out[key], value, into_params)
        else:
            out[key] = value
    return out


class _Loader(yaml.SafeLoader):
    """YAML 1.1's safe loader, but "1e-3" is a float (1.1 wants a dot: "1.0e-3"), as in YAML 1.2
    and JSON, so a number in ``params`` (which have no declared type) is never a string."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def parse_override(text: str) -> dict[str, Any]:
    """``"train.steps=100"`` -> {"train": {"steps": 100}} (the value is read as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{text}' must look like key=value, e.g. train.steps=100")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw else ""
    except (yaml.YAMLError, ValueError):  # not YAML, or e.g. an impossible date: the text itself
        value = raw
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("fdrl.presets").iterdir() if p.name.endswith(".yaml"))


def _read_yaml(path_or_text: Any, label: str) -> dict[str, Any]:
    try:
        data = yaml.load(path_or_text, Loader=_Loader)
    except (yaml.YAMLError, ValueError) as err:
        raise ConfigError(f"{label} is not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label} must be a YAML mapping of config keys")
    return data


#: suffixes of vector data files that ``fdrl train PATH`` trains on (fdrl.data.files reads them);
#: text tables may also be compressed (fdrl.table_paths.is_table_path)
VECTOR_SUFFIXES = (".npy", *TEXT_SUFFIXES, PARQUET_SUFFIX)
#: spreadsheet files, named in their own error (they are not tables fdrl reads)
SPREADSHEET_SUFFIXES = (".xls", ".ods")
#: the presets that a data file or an image folder given as PATH starts from
VECTORS_PRESET, IMAGES_PRESET = "vectors", "images"


def data_source_kind(source: str) -> str | None:
    """What ``fdrl train SOURCE`` means: ``"vectors"`` (a .npy path or a table: .csv, .tsv,
    .parquet, ... see :func:`~fdrl.table_paths.is_table_path`), ``"images"``
    (a folder that is not a run directory), or None (a preset name or a YAML file). A bare
    preset name wins over a same-named folder in the working directory; write ``./NAME`` for
    the folder."""
    path = Path(source)
    if is_table_path(path) or path.suffix.lower() == ".npy":
        return "vectors"
    if not path.is_dir():
        return None
    if source in preset_names() and path.name == source:
        return None
    if (path / "config.yaml").is_file():
        raise ConfigError(f"'{source}' is a run directory, not data; continue it with: fdrl train --resume {source}")
    return "images"


def _user_data_raw(source: str, kind: str) -> dict[str, Any]:
    """The raw config for a user's data: the ``vectors`` or ``images`` preset with the data
    section pointing at ``source`` (an absolute path, so the run works from any folder), named
    after the file (without its table and compression suffixes) or folder."""
    path = Path(source)
    if kind == "vectors" and not path.is_file():
        raise ConfigError(f"data file '{source}' does not exist" if not path.exists() else
                          f"data file '{source}' is not a regular file")
    raw = load_raw(VECTORS_PRESET if kind == "vectors" else IMAGES_PRESET)
    data = dict(raw.get("data") or {})
    params = dict(data.get("params") or {})
    params["path" if kind == "vectors" else "root"] = str(path.resolve())
    data["params"] = params
    raw["data"] = data
    raw["name"] = table_stem(path) if kind == "vectors" else path.resolve().name
    return raw


def load_raw(source: str, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset name, a YAML file path, a vector data file or an image folder -> the raw
    mapping (presets may ``extends:`` another; data paths start from the ``vectors`` or
    ``images`` preset). A file's ``extends: other.yaml`` is found relative to the file's
    folder; a chain that comes back to a config it passed is a ConfigError (``_chain``: the
    configs that extend this one, outermost first)."""
    kind = data_source_kind(source)
    if kind is not None:
        return _user_data_raw(source, kind)
    path = Path(source)
    is_file = source.endswith((".yaml", ".yml")) or path.is_file()
    if is_file:
        if not path.is_file():
            raise ConfigError(f"config file '{source}' does not exist")
        if path.suffix.lower() in SPREADSHEET_SUFFIXES:
            raise ConfigError(f"'{source}' is a spreadsheet in a format fdrl does not read: save it as .xlsx or "
                              "CSV")
        try:
            data = _read_yaml(path.read_text(), f"config file '{source}'")
        except (ConfigError, UnicodeDecodeError) as err:
            if path.suffix.lower() in (".yaml", ".yml"):
                raise
            raise ConfigError(f"'{source}' is neither a config (YAML) nor a data file fdrl reads "
                              f"({supported_suffixes()}); {err if isinstance(err, ConfigError) else 'it is binary'}") \
                from None
    elif source in preset_names():
        text = resources.files("fdrl.presets").joinpath(f"{source}.yaml").read_text()
        data = _read_yaml(text, f"preset '{source}'")
        data.setdefault("name", source)
    elif "/" in source or "\\" in source or source.startswith(("~", ".")):
        # a path, not a preset name: say that it is missing rather than list the presets
        raise ConfigError(f"'{source}' does not exist; give an image folder, a data file (.csv, .tsv, .parquet, "
                          ".npy, ...), a .yaml config or a preset name")
    else:
        raise ConfigError(f"unknown preset '{source}'; valid presets: {', '.join(preset_names())} (or a .yaml file)")
    identity = str(path.resolve()) if is_file else f"preset {source}"
    if identity in _chain:
        names = [*_chain[_chain.index(identity):], identity]
        raise ConfigError(f"'extends:' goes round in a circle: {' -> '.join(names)}; remove one of them")
    parent = data.pop("extends", None)
    if parent is not None:
        parent = str(parent)
        if is_file and parent.endswith((".yaml", ".yml")) and not Path(parent).is_absolute():
            parent = str(path.parent / parent)
        data = _merge(load_raw(parent, (*_chain, identity)), data)
    return data


def load_config(source: str | dict[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a validated :class:`Config` from a preset name, YAML path or mapping plus overrides."""
    raw = {} if source is None else (dict(source) if isinstance(source, dict) else load_raw(source))
    raw.pop("extends", None)
    for text in overrides:
        raw = _merge(raw, parse_override(text), into_params=True)
    return build_dataclass(Config, _merge(Config().to_dict(), _test_fraction_into_params(raw))).validate()


#: a run directory's resolved config
RUN_CONFIG = "config.yaml"
#: sections every stored run config has (a file without them is truncated or not a run's)
_RUN_SECTIONS = ("objective", "data", "prior", "model", "flow", "train")


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's ``config.yaml`` as a mapping, checked: FileNotFoundError if there is
    none, ConfigError naming the file and the way to restore it if it is damaged (not YAML,
    not a mapping, sections missing, or keys this version does not know)."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a run directory (no {RUN_CONFIG})")
    try:
        raw = _read_yaml(path.read_text(), f"'{path}'")
        missing = [s for s in _RUN_SECTIONS if not raw.get(s)]
        if missing:
            raise ConfigError(f"'{path}' has no {missing[0]} section")
        try:
            load_config(raw)
        except ConfigError as err:
            raise ConfigError(f"'{path}' is damaged or from another version ({err})") from None
    except (ConfigError, UnicodeDecodeError) as err:
        raise DamagedRunConfig(str(err), f"restore it, or let fdrl train --resume {run_dir} write it again from the "
                               "newest checkpoint") from None
    return raw


def _test_fraction_into_params(raw: dict[str, Any]) -> dict[str, Any]:
    """``data.test_fraction`` (the documented spelling) is the data option ``test_fraction``; it
    wins over a preset's ``data.params.test_fraction``."""
    data = raw.get("data")
    if not isinstance(data, dict) or "test_fraction" not in data:
        return raw
    data = dict(data)
    value = data.pop("test_fraction")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"data.test_fraction must be a number in [0, 1), got {value!r}")
    data["params"] = {**(data.get("params") or {}), "test_fraction": float(value)}
    return {**raw, "data": data}
