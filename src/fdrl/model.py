"""A trained FDRL model: estimator (EMA weights), objective, prior and flow settings.

``FDRL.sample`` is Algorithm 2: draw x_0 from the prior and run K + kappa steps of Eq. 9.
``FDRL.save(dir)`` (alias ``save_pretrained``) writes safetensors + JSON; ``FDRL.load(path)``
(alias ``from_pretrained``) reads a saved model or a training run directory (its newest
checkpoint's EMA weights). A model trained on a user's standardised vectors carries the
:class:`~fdrl.data.scaling.Standardizer`: ``sample`` returns the user's units and
``log_ratio`` takes them. A model trained on a table also carries its
:class:`~fdrl.data.columns.TableCodec`: ``sample`` gives back rows of the same columns, labels
and dtypes, in the form the data came in (a DataFrame, a NumPy array or a tensor). A model
trained in a principal-component space of images carries its
:class:`~fdrl.data.principal.PrincipalSpace`: particles are coefficients and ``sample`` decodes
them into full images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from fdrl import __version__, seeding
from fdrl.data.columns import TableCodec, decode_rows, project
from fdrl.data.marginals import MarginalMap
from fdrl.data.principal import PrincipalSpace
from fdrl.data.scaling import Standardizer
from fdrl.checkpoint import load_checkpoint, load_latest
from fdrl.config import DEVICE_PATTERN, RUN_CONFIG, FlowSwitches
from fdrl.flow import FlowOptions, FlowPlan, Potential, flow, frozen, prepare_estimator, ratio_potential
from fdrl.nets import build_estimator
from fdrl.objectives import Objective, get_objective, scaled_step_size
from fdrl.priors import Prior, load_prior
from fdrl.progress import progress_bar
from fdrl.rundir import without_nan

MODEL_FILE, META_FILE, METRICS_FILE = "model.safetensors", "fdrl.json", "metrics.json"
#: what ``fdrl.json`` holds (FDRL.meta)
_META_KEYS = ("objective", "estimator", "eta", "noise", "steps", "refine_steps")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; ``cpu``, ``mps``, ``cuda`` and ``cuda:N``
    are checked against what this machine has (ValueError saying what to use instead)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not DEVICE_PATTERN.fullmatch(name):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got '{name}'")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' was asked for but no CUDA GPU is available; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device '{name}': this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but Apple MPS is not available; use --device cpu or auto")
    return device


class FDRL:
    """The generative model of the paper, ready to sample.

    Parameters mirror App. F: ``eta`` (step size), ``noise`` (nu), ``steps`` (K, the training
    flow length) and ``refine_steps`` (kappa, the extra refinement steps of Sec. 4.1).
    ``flow_switches``: the training config's flow switches (:class:`fdrl.config.FlowSwitches`, or
    a mapping of some of them: absent ones take their defaults), so that sampling runs the
    training flow's numerics (:meth:`flow_options`); ``flow_plan``: the route the training flow
    took (:class:`fdrl.flow.FlowPlan`), which sampling follows. ``scaler`` and ``codec``: the
    standardisation and the table columns of the data (:mod:`fdrl.data`), None for data taken
    as it is; ``space``: the principal space the particles live in
    (:class:`~fdrl.data.principal.PrincipalSpace`), None for pixels or vectors.
    """

    def __init__(
        self,
        estimator: nn.Module,
        objective: Objective | str,
        prior: Prior,
        eta: float,
        noise: float,
        steps: int,
        refine_steps: int = 0,
        estimator_spec: dict[str, Any] | None = None,
        scaler: Standardizer | None = None,
        flow_switches: FlowSwitches | Mapping[str, Any] | None = None,
        codec: TableCodec | None = None,
        flow_plan: FlowPlan | Mapping[str, Any] | None = None,
        space: PrincipalSpace | None = None,
        marginals: MarginalMap | None = None,
    ):
        self.estimator = estimator.eval()
        self.objective = get_objective(objective) if isinstance(objective, str) else objective
        self.prior = prior
        self.eta, self.noise = float(eta), float(noise)
        self.steps, self.refine_steps = int(steps), int(refine_steps)
        self.estimator_spec = estimator_spec or {}
        self.scaler, self.codec, self.space = scaler, codec, space
        #: the marginal calibration (:mod:`fdrl.data.marginals`), for unguided samples of its step count
        self.marginals = marginals
        self.flow_switches = FlowSwitches.from_mapping(
            dataclasses.asdict(flow_switches) if isinstance(flow_switches, FlowSwitches) else flow_switches)
        self.flow_plan = FlowPlan.from_mapping(flow_plan) if isinstance(flow_plan, Mapping) else flow_plan
        #: the run checkpoint :meth:`load` read the weights from (None otherwise)
        self.checkpoint: Path | None = None
        #: the run directory :meth:`load` read (None for a saved model or one built in memory)
        self.run_dir: Path | None = None
        self._metrics: dict[str, Any] | None = None
        #: where :meth:`load` found the held-out report, read on first use of :attr:`metrics`
        self._metrics_file: Path | None = None

    @property
    def metrics(self) -> dict[str, Any] | None:
        """The held-out report of the run (``RUN/metrics.json``, or the copy :meth:`save` wrote
        beside the weights), or None if it has none."""
        if self._metrics is None and self._metrics_file is not None and self._metrics_file.is_file():
            try:
                self._metrics = json.loads(self._metrics_file.read_text())
            except ValueError:
                fix = (f"re-score with: fdrl evaluate {self.run_dir}" if self.run_dir is not None else
                       "delete it, or save the model again from its run")
                raise ValueError(f"'{self._metrics_file}' is damaged; {fix}") from None
        return self._metrics

    @metrics.setter
    def metrics(self, value: dict[str, Any] | None) -> None:
        self._metrics = value

    @property
    def columns(self) -> list[Any] | None:
        """The column names of the table the model was trained on (None for arrays of more than
        two dimensions); :attr:`codec` says their kinds."""
        if self.codec is not None:
            return list(self.codec.kinds)
        return None if self.scaler is None else self.scaler.columns

    def features(self, x: Any) -> Tensor:
        """Rows in the data's form (a DataFrame of the training columns, or an array / tensor of
        them) -> the model's standardised features."""
        if self.codec is not None and not (isinstance(x, (Tensor, np.ndarray)) and self.codec.is_plain):
            import pandas as pd

            frame = x if isinstance(x, pd.DataFrame) else pd.DataFrame(np.asarray(x), columns=self.columns)
            x = torch.from_numpy(self.codec.encode(frame))
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x, dtype=torch.float32)
        if self.space is not None:
            return self.space.encode(x)
        return x if self.scaler is None else self.scaler.forward(x)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample as :meth:`sample` returns it (an image's for a principal
        space, where the particles are its coefficients)."""
        return tuple(self.space.shape if self.space is not None else self.prior.shape)

    def require_pixels(self, what: str) -> None:
        """ValueError (one line) if the particles are not the data itself: ``what`` (a command or
        guidance) works on pixels."""
        if self.space is not None:
            raise ValueError(f"{what} needs a pixel-space estimator, and this model flows "
                             f"{self.space.describe()}; train one with data.params.pca=0 (or the images_resnet "
                             "preset)")

    def decode(self, particles: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Particles -> the data they stand for: full images for a principal space (the remaining
        directions drawn with ``generator``: :meth:`~fdrl.data.principal.PrincipalSpace.decode`),
        the particles themselves otherwise."""
        return particles if self.space is None else self.space.decode(particles, generator)

    @property
    def sampling_steps(self) -> int:
        """K + kappa: the flow steps of a sample (Alg. 2)."""
        return self.steps + self.refine_steps

    def total_steps(self, steps: int | None) -> int:
        """The flow steps a sample takes when ``steps`` are asked for (None: :attr:`sampling_steps`)."""
        return self.sampling_steps if steps is None else int(steps)

    @property
    def device(self) -> torch.device:
        return next(self.estimator.parameters()).device

    def to(self, device: str | torch.device) -> "FDRL":
        self.estimator.to(device)
        return self

    def potential(self) -> Potential:
        """f'(r_theta(x)): the potential of Eq. 9. Compositions add terms to it."""
        return ratio_potential(self.estimator, self.objective)

    def as_rows(self, particles: Tensor) -> Tensor:
        """Particles in model units -> the model units of the table rows they decode to
        (:func:`fdrl.data.columns.project`); as they are for data that is not a table. What is
        scored against data is rows, not the continuous particles."""
        return particles if self.codec is None else project(particles, self.codec, self.scaler)

    @torch.no_grad()
    def log_ratio(self, x: Any, standardized: bool = False) -> Any:
        """log r_theta(x) for rows ``x`` in the data's form (:meth:`features`): the estimator's log
        density ratio q~(x) / p(x) (App. C), where q~ is the density of the particles after the K
        training flow steps of Eq. 9 and p the data's (for vectors trained with
        ``train.data_smoothing``, the smoothed p of :mod:`fdrl.smoothing`). The loss (Eq. 11) sees
        only data rows and flowed particles, so r_theta is an estimate only where one of them
        lies; after training q~ is close to p there, and log r is close to 0 on the data's
        support. Away from both it is the network's extrapolation, with no relation to how far x
        is from the data: it is not an outlier score or a log-likelihood (docs/tables-quality.md
        has the measurement). LSIF outputs r itself, clamped at the smallest positive float
        before the log.
        ``standardized``: ``x`` is already in the model's standardised units."""
        x = torch.as_tensor(x, dtype=torch.float32) if standardized else self.features(x)
        if x.shape[0] == 0:  # no rows: no scores (the network's layers cannot take an empty batch)
            log_r = torch.zeros(0)
        else:
            log_r = self.objective.log_ratio(self.estimator(x.to(self.device)))
        return log_r.cpu() if self.codec is None or self.codec.returns == "tensor" else log_r.cpu().numpy()

    def flow(
        self,
        x: Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        potential: Potential | None = None,
        trajectory: list[Tensor] | None = None,
        record_every: int = 1,
    ) -> Tensor:
        """Flow ``x`` for ``steps`` steps (default K + kappa) of Eq. 9 with :meth:`flow_options`;
        the model is left as it was (spectral norm's power-iteration vectors included)."""
        steps = self.total_steps(steps)
        options = self.flow_options()
        prepare_estimator(self.estimator, options)
        with frozen(self.estimator, options, keep_power_iterations=False):
            return flow(
                x.to(self.device), potential or self.potential(), steps, self.eta, self.noise,
                generator=generator, trajectory=trajectory, record_every=record_every, options=options,
            )

    def flow_options(self) -> FlowOptions:
        """The sampling flow's options on this model's device, decided by the function that decides
        the training flow's (:meth:`fdrl.flow.FlowOptions.from_config`, ``sampling=True``): the same
        precision, TF32, layout and spectral-norm handling as training, and the route the training
        flow took (:attr:`flow_plan`) where this device runs it."""
        options = FlowOptions.from_config(self.device, self.flow_switches, self.estimator_spec.get("name"),
                                          sampling=True)
        return options.following(None if self.flow_plan is None else self.flow_plan.route)

    def prior_batches(self, n: int, seed: int = 0, batch_size: int | None = None) -> Iterator[tuple[int, Tensor, torch.Generator]]:
        """The starting points of Algorithm 2 in batches: (first index, x_0, flow-noise generator),
        seeded by (seed, batch index). Everything that samples draws through here, so the same
        seed gives the same particles whatever is done with them."""
        if n < 1:
            raise ValueError(f"number of samples must be >= 1, got {n}")
        batch_size = batch_size or n
        for i, start in enumerate(range(0, n, batch_size)):
            m = min(batch_size, n - start)
            x0 = self.prior.sample(m, seeding.generator(seed, "prior", i), device=self.device)
            yield start, x0, seeding.generator(seed, "flow", i, device=self.device)

    def particles(self, n: int, seed: int = 0, steps: int | None = None, batch_size: int | None = None) -> Tensor:
        """``n`` particles after ``steps`` (default K + kappa) flow steps, in model units, as the
        flow leaves them: not decoded, not mapped (what :mod:`fdrl.data.marginals` is fitted to);
        flowed ``batch_size`` at a time (default all at once), seeded as in :meth:`sample`."""
        return torch.cat([self.flow(x0, steps, generator).cpu()
                          for _, x0, generator in self.prior_batches(n, seed, batch_size)])

    def sample(
        self,
        n: int,
        steps: int | None = None,
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool = False,
        guidance: Any = None,
        shard: tuple[int, int] = (0, 1),
        standardized: bool = False,
    ) -> Any:
        """Algorithm 2: ``n`` samples after ``steps`` (default K + kappa) flow steps, on the CPU.

        Batches of ``batch_size`` are drawn with generators seeded by (seed, batch index), so
        the result does not depend on the batch size's device placement, only on the seed.
        ``guidance``: a :class:`fdrl.guidance.ClassGuidance` (one label, or one per sample) for
        class-conditional samples (Eq. 12, 29-31); prior draws and noise are those of the
        unguided samples with the same seed.
        ``shard=(rank, world)``: flow only the batches i with i % world == rank and return their
        samples, in order (:func:`fdrl.distributed.sample_sharded` deals the batches over ranks
        and gathers them; together they are exactly the one-process samples).
        Samples are in the data's units and form: rows of the training table (a DataFrame, a
        NumPy array or a tensor, as the data came in: :class:`~fdrl.data.columns.TableCodec`)
        or a tensor for images (decoded from a principal space with the remaining directions
        drawn from generators seeded by (seed, first index of the batch): :meth:`decode`);
        ``standardized=True`` gives the model's standardised features of those rows as a tensor
        (:func:`fdrl.data.columns.project`; for scoring against standardised data), and the
        images themselves for a principal space, where samples are scored in pixels.
        """
        if n < 1:
            raise ValueError(f"number of samples must be >= 1, got {n}")
        rank, world = shard
        if not 0 <= rank < world:
            raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
        if guidance is not None:
            self.require_pixels("guidance by a classifier")
        batches = (b for i, b in enumerate(self.prior_batches(n, seed, batch_size)) if i % world == rank)
        if progress:
            total = -(-n // (batch_size or n))
            batches = progress_bar(batches, desc="sampling", unit="batch", total=len(range(rank, total, world)))
        out = []
        with guidance.bound(self, n) if guidance is not None else contextlib.nullcontext():
            labels = guidance.labels_for(n) if guidance is not None else None
            for start, x0, generator in batches:
                potential = None if guidance is None else guidance.potential(self, labels[start:start + len(x0)])
                particles = self.flow(x0, steps, generator, potential=potential).cpu()
                if self.marginals is not None and guidance is None and self.total_steps(steps) == self.marginals.steps:
                    particles = self.marginals(particles)
                out.append(self.decode(particles, seeding.generator(seed, "decode", start)))
        samples = torch.cat(out) if out else torch.empty(0, *self.sample_shape)
        if standardized or self.space is not None:
            return self.as_rows(samples)
        if self.codec is not None:
            return self.codec.output(decode_rows(samples, self.codec, self.scaler))
        return samples if self.scaler is None else self.scaler.inverse(samples)

    def meta(self) -> dict[str, Any]:
        return {
            "objective": self.objective.name,
            "estimator": self.estimator_spec,
            "eta": self.eta,
            "noise": self.noise,
            "steps": self.steps,
            "refine_steps": self.refine_steps,
            "flow": dataclasses.asdict(self.flow_switches),
            "flow_plan": None if self.flow_plan is None else dataclasses.asdict(self.flow_plan),
            "fdrl_version": __version__,
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors``, ``fdrl.json``, the prior, the data's encoding and the
        held-out report (``metrics.json``, if the model has one) to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.estimator.state_dict().items()}
        save_file(state, str(directory / MODEL_FILE))
        (directory / META_FILE).write_text(json.dumps(self.meta(), indent=2))
        self.prior.save(directory)
        if self.scaler is not None:
            self.scaler.save(directory)
        for part in (self.codec, self.space, self.marginals):
            if part is not None:
                part.save(directory)
        if self.metrics is not None:
            (directory / METRICS_FILE).write_text(json.dumps(without_nan(self.metrics), indent=2, allow_nan=False))
        return directory

    def save_pretrained(self, directory: str | Path) -> Path:
        """The same as :meth:`save` (the name diffusers and transformers users look for)."""
        return self.save(directory)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", checkpoint: str | Path | None = None) -> "FDRL":
        """Load a saved model directory, or a run directory (EMA weights of its newest checkpoint
        that loads, or of ``checkpoint``). A damaged file is a ValueError (a CheckpointError for
        checkpoints) naming it and what to do."""
        path = Path(path)
        if (path / META_FILE).exists():
            fix = "save the model again (FDRL.save)"
            (meta, estimator), checkpoint = _saved_model(path), None
        elif (path / RUN_CONFIG).exists():
            fix = f"fdrl train --resume {path} writes it again"
            (meta, estimator), checkpoint = _run_model(path, checkpoint)
        else:
            raise FileNotFoundError(
                f"'{path}' is neither a saved model (no {META_FILE}) nor a run directory (no {RUN_CONFIG})"
            )
        try:
            prior, scaler, codec = load_prior(path), Standardizer.load(path), TableCodec.load(path)
            space, marginals = PrincipalSpace.load(path), MarginalMap.load(path)
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"{err}; {fix}") from None
        spec = meta["estimator"]
        if tuple(prior.shape) != tuple(spec["in_shape"]):
            raise ValueError(f"the prior in '{path}' draws shape {tuple(prior.shape)} but the estimator takes "
                             f"{tuple(spec['in_shape'])}; {fix}")
        model = cls(estimator, meta["objective"], prior, meta["eta"], meta["noise"], meta["steps"],
                    meta["refine_steps"], estimator_spec=spec, scaler=scaler, flow_switches=meta.get("flow"), codec=codec,
                    flow_plan=meta.get("flow_plan"), space=space, marginals=marginals)
        model.checkpoint = None if checkpoint is None else Path(checkpoint)
        model.run_dir = path if (path / RUN_CONFIG).exists() and not (path / META_FILE).exists() else None
        model._metrics_file = path / METRICS_FILE
        return model.to(resolve_device(str(device)) if isinstance(device, str) else device)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "FDRL":
        """The same as :meth:`load`."""
        return cls.load(path, device=device)


def _estimator(spec: dict[str, Any], state: dict[str, Tensor]) -> nn.Module:
    """The estimator ``spec`` describes, with the weights ``state``."""
    estimator = build_estimator(spec["name"], spec["in_shape"], **spec.get("params", {}))
    estimator.load_state_dict(state)
    return estimator


def _saved_model(directory: Path) -> tuple[dict[str, Any], nn.Module]:
    """The metadata and estimator of a directory written by :meth:`FDRL.save`."""
    meta_path, weights_path = directory / META_FILE, directory / MODEL_FILE
    try:
        meta = json.loads(meta_path.read_text())
        missing = [k for k in _META_KEYS if not isinstance(meta, dict) or k not in meta]
        if missing:
            raise KeyError(missing[0])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"'{meta_path}' is damaged or from another version ({type(err).__name__}: {err}); "
                         "save the model again (FDRL.save)") from None
    try:
        return meta, _estimator(meta["estimator"], load_file(str(weights_path)))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        what = f"{type(err).__name__}: {err}".splitlines()[0]
        raise ValueError(f"'{weights_path}' does not hold the weights '{meta_path.name}' describes ({what}); "
                         "save the model again (FDRL.save)") from None


def _run_model(run_dir: Path, checkpoint: str | Path | None) -> tuple[tuple[dict[str, Any], nn.Module], Path]:
    """The metadata and EMA estimator of a run's newest checkpoint that loads and fits (or of
    ``checkpoint``), and that checkpoint's path; the flow settings come from the config stored
    in the checkpoint."""
    def build(state: dict[str, Any]) -> tuple[dict[str, Any], nn.Module]:
        config, flow_config = state["config"], state["config"]["flow"]
        meta = {
            "objective": config["objective"],
            "estimator": state["estimator_spec"],
            "eta": scaled_step_size(flow_config["eta"], flow_config.get("eta_scaling", "none"), config["objective"]),
            **{k: flow_config[k] for k in ("noise", "steps", "refine_steps")},
            "flow": flow_config,
            "flow_plan": state.get("flow_plan"),
        }
        return meta, _estimator(state["estimator_spec"], state["ema"])

    if checkpoint is not None:
        return load_checkpoint(checkpoint, apply=build), Path(checkpoint)
    found = load_latest(run_dir, apply=build)
    if found is None:
        raise FileNotFoundError(f"run directory '{run_dir}' has no checkpoint yet; train it first")
    return found
