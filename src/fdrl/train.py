"""Algorithm 1: flow-guided training of the density-ratio estimator.

Each iteration draws a data batch x_p ~ p and prior particles x_0 ~ q', flows the particles
K steps along f'(r_theta) with the *current* network (Eq. 9), and takes one optimiser step on
the Bregman loss (Eq. 11) between x_p and the flowed x_K. :func:`training_step` is that
iteration on its own; :class:`Trainer` adds the run directory, EMA, learning-rate decay,
checkpoints, logging, figures, resume and a divergence guard. One module over 400 lines: the
loop and the state it checkpoints, resumes and rolls back are one object.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections import Counter
import random
import signal
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from torch.nn.parallel import DistributedDataParallel

from fdrl import __version__, distributed, seeding
from fdrl.checkpoint import CheckpointMismatch
from fdrl.config import Config, ConfigError
from fdrl.data import DataSource, ImageData
from fdrl.data.marginals import MARGINALS_FILE, TABLE_GAP, MarginalMap
from fdrl.data.principal import build_run_data
from fdrl.data.scaling import Standardizer
from fdrl.flow import FlowOptions, FlowPlan, Generators, flow, frozen, plan_flow, prepare_estimator, ratio_potential
from fdrl.model import FDRL, resolve_device
from fdrl.nets import build_estimator
from fdrl.objectives import Objective, get_objective
from fdrl.evaluate.heldout import evaluate_heldout
from fdrl.evaluate.binding import BoundMetric, bind_metric, dataset_identity
from fdrl.guard import DivergenceGuard, TrainingError
from fdrl.plots import save_samples_figure
from fdrl.priors import Prior, build_prior
from fdrl.progress import progress_bar
from fdrl.rundir import RunDirectory, config_conflict, without_nan
from fdrl.smoothing import COPY_SHARE, BatchSmoother, near_copy_share

__all__ = ["StepOutput", "Trainer", "TrainingError", "ema_decay", "training_step", "update_ema"]


#: samples the marginal calibration is fitted to (twice the training rows, at least this many,
#: drawn this many at a time), how many of them judge its near-copies, the most numbers of
#: training data it reads (images: 10922 of 3 x 32 x 32) and the shares of the map tried,
#: strongest first
CALIBRATION_PARTICLES, CALIBRATION_JUDGED, CALIBRATION_ELEMENTS = 4000, 2000, 1 << 25
#: the most samples the calibration flows: at 50,000 a median's standard error is 0.006 of a
#: normal column's standard deviation, below what the map can use (at most 256 quantiles), while
#: twice the rows of a 300,000-row table took 88 of a 50-step run's 137 s
CALIBRATION_MAX = 50_000
CALIBRATION_STRENGTHS = (1.0, 0.75, 0.5, 0.25)


@dataclass
class StepOutput:
    loss: Tensor
    out_data: Tensor
    out_particles: Tensor
    particles: Tensor


def training_step(
    net: nn.Module,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    x_data: Tensor,
    x_prior: Tensor,
    steps: int,
    eta: float,
    noise: float,
    generator: Generators = None,
    options: FlowOptions | FlowPlan | None = None,
    ddp: nn.Module | None = None,
) -> StepOutput:
    """One iteration of Algorithm 1 (flow K steps with the current net, then one update).

    ``options``: the flow's switches (:class:`fdrl.flow.FlowOptions`) or its plan
    (:class:`fdrl.flow.FlowPlan`). ``ddp``: ``net``
    wrapped in DistributedDataParallel; the flow always runs on the raw ``net`` (no gradient
    hooks, no communication) and only the update's forward goes through ``ddp``, so only the
    parameter gradients are all-reduced. ``generator`` may be one generator per shard.
    """
    with frozen(net, options):
        x_k = flow(x_prior, ratio_potential(net, objective), steps, eta, noise, generator=generator,
                   options=options)
    if options is not None and options.channels_last and x_data.ndim == 4:
        x_data = x_data.contiguous(memory_format=torch.channels_last)
    out = (ddp or net)(torch.cat([x_data, x_k]))
    out_data, out_particles = out[: x_data.shape[0]], out[x_data.shape[0] :]
    loss = objective.loss(out_data, out_particles)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return StepOutput(loss.detach(), out_data.detach(), out_particles.detach(), x_k)


def ema_decay(decay: float, step: int) -> float:
    """The EMA rate at optimiser step ``step`` (0-based): App. F's ``decay`` with a warm-up,
    min(decay, (1 + t) / (10 + t)), so that early on the average forgets the initial network
    quickly (with a fixed 0.99, 40 steps in, 67% of the EMA's weight is still the network at
    initialisation). The rate depends only on the step, so resume stays exact."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """theta' <- m theta' + (1 - m) theta (App. F); buffers are copied."""
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.lerp_(p, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class _StopRequest:
    """SIGTERM / SIGINT ask training to stop after the current step; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Algorithm 1 with everything a real run needs, writing to ``run_dir``
    (:class:`fdrl.rundir.RunDirectory`: ``config.yaml``, the prior, ``checkpoints/``,
    ``metrics.jsonl``, ``tb/``, ``samples/step_*.png`` and, after :meth:`evaluate`,
    ``metrics.json``). A run directory that already holds checkpoints is resumed from its newest
    good one; one process at a time may write it (a second is refused with RunInUseError).

    Divergence guard (:class:`fdrl.guard.DivergenceGuard`): a step with a non-finite loss or
    gradient, a ratio estimate |r| above ``train.guard_max_ratio``, or a mean ratio on the flowed
    particles above ``train.guard_particle_ratio``, rolls back to the newest
    checkpoint and multiplies the learning rate by ``train.guard_lr_factor`` (kept in later
    checkpoints); after ``train.guard_retries`` rollbacks the run stops with
    :class:`TrainingError`.
    """

    def __init__(self, config: Config, run_dir: str | Path, progress: bool = True, data: DataSource | None = None):
        """``data``: the training data as a data source (:mod:`fdrl.data`); by default it is
        built from ``config.data``. Pass your own only if the run need not be re-opened from
        its directory alone (``fdrl evaluate`` and ``--resume`` rebuild data from the config;
        :func:`fdrl.fit` writes in-memory arrays into the run directory for that reason)."""
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = resolve_device(config.device)
        self.dist = distributed.setup(config.train.dist_backend, self.device.type)
        if self.dist.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.progress = progress and self.dist.is_main
        if config.train.batch_size % self.dist.world:
            raise ConfigError(f"train.batch_size={config.train.batch_size} is the global batch and must be "
                              f"divisible by the number of ranks, {self.dist.world}")
        self.run = RunDirectory(self.run_dir, writer=self.dist.is_main)
        weakref.finalize(self, self.run.release)  # the lock goes with the trainer at the latest
        # the data first: a file that cannot be read leaves no run directory behind
        self.data = data if data is not None else build_run_data(config.data.spec)
        self._on_main(lambda: self.run.prepare(config))  # writable, not in use, same run, same data
        self.flow_options = FlowOptions.from_config(self.device, config.flow, config.model.name)
        #: the training flow's route, planned at its first flow (:meth:`plan_training_flow`)
        self.flow_plan: FlowPlan | None = None
        if config.train.threads > 0:
            torch.set_num_threads(config.train.threads)
        self.objective = get_objective(config.objective)
        self.estimator_spec = {"name": config.model.name, "in_shape": list(self.data.shape),
                               "params": dict(config.model.params)}
        torch.manual_seed(seeding.derived_seed(config.train.seed, "init"))
        self.net = build_estimator(config.model.spec, self.data.shape).to(self.device)
        prepare_estimator(self.net, self.flow_options)
        self.ema = copy.deepcopy(self.net).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        t = config.train
        # DDP for the update only (gradient all-reduce); the flow uses self.net directly
        self.ddp = DistributedDataParallel(self.net, device_ids=[self.device.index] if self.device.type == "cuda"
                                           else None) if self.dist.active else None
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=t.lr, betas=tuple(t.betas))
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, config.lr_milestones(), t.lr_decay_factor)
        self.step = 0
        self.guard = DivergenceGuard(t, self.run_dir / "checkpoints")
        self.best: dict[str, Any] | None = None  # {"step", "metric", "value"} of the best evaluation
        # bound before training (rank 0 evaluates), so a wrong classifier or weights path fails now
        self.eval_metric: BoundMetric | None = self._on_main(self._bind_eval_metric) if t.eval_every else None
        self.smoother = self._build_smoother()
        if t.calibrate_marginals and not isinstance(self.data, ImageData):
            # a dataset it cannot be fitted to fails now, not after training (images always can:
            # they are read only when the map is fitted)
            self._calibration_rows()
        self.scaler: Standardizer | None = getattr(self.data, "scaler", None)
        self.codec = getattr(self.data, "codec", None)
        self.space = getattr(self.data, "space", None)
        self.marginals: MarginalMap | None = None  # fitted when training ends (calibrate_marginals)
        if self.dist.is_main:
            for part in (self.scaler, self.codec, self.space):
                if part is not None:
                    part.save(self.run_dir)
        prior = self._on_main(lambda: self.run.prior(self._build_prior))
        if self.dist.active:  # every rank flows from the same prior (pickled, no shared disk needed)
            box = [prior]
            torch.distributed.broadcast_object_list(box, src=0)
            prior = box[0]
        self.prior = prior

    def _on_main(self, fn):
        """``fn()`` on rank 0 only; a ConfigError there is raised on every rank (no hang)."""
        result, error = None, None
        if self.dist.is_main:
            try:
                result = fn()
            except ConfigError as err:
                error = str(err)
        if self.dist.active:
            box = [error]
            torch.distributed.broadcast_object_list(box, src=0)
            error = box[0]
        if error is not None:
            raise ConfigError(error)
        return result

    def _build_smoother(self) -> BatchSmoother | None:
        """The data batch's jitter (``train.data_smoothing``, :mod:`fdrl.smoothing`), or None."""
        smoothing = self.config.train.data_smoothing
        if smoothing == 0:
            return None
        rows = getattr(self.data, "samples", None)
        if rows is None or rows.ndim != 2:
            raise ConfigError(f"train.data_smoothing={smoothing:g} needs a finite table of vectors (a .npy/.csv "
                              f"file or an array), not data '{self.config.data.name}'; set train.data_smoothing=0")
        return BatchSmoother.fit(rows, smoothing, self.config.train.data_smoothing_correlation, self._copy_scale())

    def _copy_scale(self) -> Tensor | None:
        """Where copies of training rows are judged: a principal space's coefficients in pixels
        (each by its standard deviation: what the held-out report measures), other data in its
        own units (None)."""
        space = getattr(self.data, "space", None)
        return None if space is None else space.scale

    def _build_prior(self) -> Prior:
        prior = build_prior(self.config.prior.spec, self.data)
        if tuple(prior.shape) != tuple(self.data.shape):
            raise ConfigError(f"prior samples have shape {prior.shape} but data samples {self.data.shape}")
        return prior

    def close(self) -> None:
        """Release the run directory's lock (also done when :meth:`fit` ends and when the
        trainer is garbage-collected)."""
        self.run.release()

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue bit-exactly (data, prior and flow noise are re-derived
        from the seed and the step)."""
        return {
            "step": self.step,
            "estimator": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_state(),
            "guard": self.guard.state_dict(),
            "best": self.best,
            "config": self.config.to_dict(),
            "estimator_spec": self.estimator_spec,
            "flow_plan": None if self.flow_plan is None else dataclasses.asdict(self.flow_plan),
            "version": __version__,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`: CheckpointMismatch if it belongs to a run with another
        config (:func:`fdrl.checkpoint.load_checkpoint` puts the file's name in front)."""
        conflict = config_conflict(state["config"], self.config.to_dict())
        if conflict:
            raise CheckpointMismatch(f"belongs to a run with {conflict}; remove it or pass another --out")
        if state["version"] != __version__:
            warnings.warn(f"this checkpoint was written by fdrl {state['version']}; this is {__version__}")
        self.net.load_state_dict(state["estimator"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # milestones follow the (possibly extended) config, not the stored schedule
        self.scheduler.milestones = Counter(self.config.lr_milestones())
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.guard.load_state_dict(state.get("guard"))  # absent in checkpoints before the guard
        self.best = state.get("best")

    def save_checkpoint(self) -> Path:
        """Written by rank 0 only (all ranks hold the same state); returns its path on every rank."""
        return self.run.save_checkpoint(self.state() if self.dist.is_main else {}, self.step,
                                        self.config.train.keep_checkpoints)

    def _load_latest(self) -> Path | None:
        """Restore the newest checkpoint that loads and fits; its path, or None if the run has none."""
        found = self.run.load_latest(self.load_state, self.device)
        return None if found is None else found[1]

    def resume(self) -> bool:
        """Load the newest good checkpoint of the run directory, if any."""
        path = self._load_latest()
        if path is None:
            return False
        if self.best is not None and self.best["step"] == self.step:  # killed before best.pt was linked
            self.run.link_best(path)
        self.run.log({"event": "resumed", "step": self.step, "checkpoint": path.name})
        return True

    def _restore_for_rollback(self) -> dict[str, Any]:
        """The divergence guard's way back: the newest checkpoint, once rank 0 has written it."""
        distributed.barrier(self.dist)
        path = self._load_latest()
        return {"to_step": self.step, "checkpoint": path.name}

    def _bind_eval_metric(self) -> BoundMetric:
        """``train.eval_metric`` bound to ``eval_n`` data draws or the dataset's statistics."""
        t = self.config.train
        try:
            # samples of a principal space come back as images: they are compared with the images
            data = getattr(self.data, "image_data", self.data)
            return bind_metric(t.eval_metric, data, dataset_identity(self.config.data.name, self.config.data.params),
                               t.eval_n, t.seed + 2, classifier=t.eval_classifier,
                               inception_weights=t.eval_inception_weights, device=self.device)
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"train.eval_metric={t.eval_metric}: {err}") from None

    def _evaluate_for_best(self) -> bool:
        """The periodic evaluation (``train.eval_metric`` of ``eval_n`` EMA samples against the
        data, bound by :meth:`_bind_eval_metric`), logged; True if it is the best so far."""
        t = self.config.train
        value = float(self.eval_metric(self.model().sample(t.eval_n, seed=t.seed + 1, batch_size=min(t.eval_n, 500),
                                                           standardized=True)))
        self.run.log({"step": self.step, "eval": t.eval_metric, "value": value})
        previous = self.best["value"] if self.best is not None and self.best.get("metric") == t.eval_metric else None
        if not self.eval_metric.better(value, previous):
            return False
        self.best = {"step": self.step, "metric": t.eval_metric, "value": value}
        return True

    def model(self) -> FDRL:
        """The trained model with the EMA weights (what sampling and evaluation use)."""
        f = self.config.flow
        return FDRL(self.ema, self.objective, self.prior, self.config.step_size(), f.noise, f.steps, f.refine_steps,
                    self.estimator_spec, scaler=self.scaler, flow_switches=f.switches(), codec=self.codec,
                    flow_plan=self.flow_plan, space=self.space, marginals=self.marginals)

    def _save_samples_figure(self) -> None:
        samples = self.model().sample(self.config.train.sample_n, seed=self.config.train.seed, standardized=True)
        data = self.data.draw(self.config.train.sample_n, self.config.train.seed) if samples.ndim == 2 else None
        save_samples_figure(samples, self.run.samples_figure_path(self.step), data,
                            title=f"{self.config.objective}, step {self.step}")

    def _record(self, out: StepOutput, since: tuple[float, int]) -> dict[str, Any]:
        """The training record of this step: loss, mean ratio estimates, lr, speed since ``since``
        (a time and a step)."""
        return {
            "step": self.step,
            "loss": float(out.loss),
            "r_data": float(self.objective.ratio(out.out_data).mean()),
            "r_particles": float(self.objective.ratio(out.out_particles).mean()),
            "lr": self.optimizer.param_groups[0]["lr"],
            "steps_per_s": (self.step - since[1]) / max(time.perf_counter() - since[0], 1e-9),
        }

    def plan_training_flow(self, x_prior: Tensor) -> FlowPlan:
        """The training flow's plan (:func:`fdrl.flow.plan_flow`), decided at the first flow of this
        process from ``x_prior`` and then kept: every training flow and the model's samples take
        its route. Recorded in ``metrics.jsonl`` (``fdrl info RUN`` shows it) and the checkpoints."""
        if self.flow_plan is None:
            with frozen(self.net, self.flow_options):
                self.flow_plan = plan_flow(ratio_potential(self.net, self.objective), x_prior, self.flow_options)
            self.run.log({"event": "flow_plan", "step": self.step, **dataclasses.asdict(self.flow_plan)})
        return self.flow_plan

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> FDRL:
        """Run (or continue) Algorithm 1 until ``train.steps``; returns the EMA model."""
        cfg, t, f = self.config, self.config.train, self.config.flow
        eta = cfg.step_size()
        if self.dist.is_main:
            self.run.lock.acquire()  # again, if an earlier fit() gave it up
        if not self.resume():
            self.save_checkpoint()  # step 0: the divergence guard always has a checkpoint to go back to
            if self.smoother is not None:
                self.run.log({"event": "data_smoothing", "bandwidth": self.smoother.bandwidth})
        distributed.barrier(self.dist)
        writer = self.run.tensorboard()
        bar = progress_bar(total=t.steps, initial=self.step, disable=not self.progress, desc=cfg.name, unit="it")
        since = (time.perf_counter(), self.step)
        try:
            with _StopRequest() as stop:
                while self.step < t.steps:
                    # Algorithm 1: a data batch, prior particles flowed K steps, one update
                    x_data, x_prior, gen = distributed.draw_step(
                        self.data, self.prior, self.step, t.batch_size, t.seed, self.dist.world, [self.dist.rank],
                        self.device)
                    if self.smoother is not None:  # the data side is the smoothed p_h (fdrl.smoothing)
                        x_data = self.smoother(x_data, seeding.generator(t.seed, "smooth", self.step, self.dist.rank))
                    out = training_step(self.net, self.objective, self.optimizer, x_data, x_prior,
                                        f.steps, eta, f.noise, gen, options=self.plan_training_flow(x_prior),
                                        ddp=self.ddp)
                    # divergence guard: every rank rolls back if one went wrong
                    problem = self.guard.problem(out.loss, torch.cat([out.out_data, out.out_particles]), self.net,
                                                 self.objective, out.out_particles)
                    diverged, stop_all = distributed.any_flag(self.dist, problem is not None, stop.requested,
                                                              device=self.device)
                    if diverged:
                        self.guard.roll_back(problem or "another rank diverged", self.step, self._restore_for_rollback,
                                             self.optimizer, self.run.log)
                        since = (time.perf_counter(), self.step)
                        continue
                    self.scheduler.step()
                    update_ema(self.ema, self.net, ema_decay(t.ema, self.step))
                    self.step += 1
                    # bookkeeping: log, evaluate, checkpoint, figure, stop on request
                    bar.update(self.step - bar.n)
                    if self.step % t.log_every == 0 or self.step == t.steps:
                        record = self._record(out, since)
                        since = (time.perf_counter(), self.step)
                        self.run.log(record)
                        for key, value in record.items():
                            if key != "step" and writer is not None:
                                writer.add_scalar(f"train/{key}", value, self.step)
                        bar.set_postfix(loss=f"{record['loss']:.4g}", r_p=f"{record['r_data']:.3g}",
                                        r_q=f"{record['r_particles']:.3g}", refresh=False)
                    improved = (t.eval_every > 0 and self.step % t.eval_every == 0 and self.dist.is_main
                                and self._evaluate_for_best())
                    if improved or stop_all or self.step % t.checkpoint_every == 0 or self.step == t.steps:
                        path = self.save_checkpoint()
                        if improved:
                            self.run.link_best(path)
                    if (self.step % t.sample_every == 0 or self.step == t.steps) and self.dist.is_main:
                        self._save_samples_figure()
                    if stop_all:
                        self.run.log({"event": "stopped", "step": self.step, "checkpoint": path.name})
                        if self.dist.is_main:
                            bar.write(f"stopped at step {self.step}; checkpoint {path}; "
                                      f"resume with: fdrl train --resume {self.run_dir}")
                        break
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            self.run.release()
        distributed.barrier(self.dist)
        if self.step >= t.steps and self.dist.is_main:
            self.calibrate_marginals()
        return self.model()

    def _calibration_rows(self) -> Tensor:
        """The training data in the particles' form (a table's rows, a principal space's
        coefficients, clean images: at most :data:`CALIBRATION_ELEMENTS` numbers of them);
        ConfigError if it is neither a table nor images."""
        if isinstance(self.data, ImageData):
            return self.data.subset(max(1, CALIBRATION_ELEMENTS // math.prod(self.data.shape)), self.config.train.seed)
        rows = getattr(self.data, "samples", None)
        if not isinstance(rows, Tensor):
            raise ConfigError(f"train.calibrate_marginals=true needs a finite dataset (a table or images), not data "
                              f"'{self.config.data.name}'; set train.calibrate_marginals=false")
        return rows

    def calibrate_marginals(self) -> None:
        """With ``train.calibrate_marginals``: the monotone per-feature map from the finished
        sampler's marginals to the training data's (:mod:`fdrl.data.marginals`; a table's numeric
        columns, a principal space's coefficients, an image's pixels), fitted to as many
        particles as twice the training rows (:data:`CALIBRATION_PARTICLES` to
        :data:`CALIBRATION_MAX`) and stored in the run; otherwise any stored map is removed (a
        run trained further has a new sampler)."""
        self.marginals = None
        (self.run_dir / MARGINALS_FILE).unlink(missing_ok=True)
        if not self.config.train.calibrate_marginals:
            return
        rows = self._calibration_rows().flatten(1)
        features = self.codec.numeric_features if self.codec is not None else list(range(rows.shape[1]))
        if not features:
            return
        model, seed = self.model(), self.config.train.seed
        n = min(max(CALIBRATION_PARTICLES, 2 * rows.shape[0]), CALIBRATION_MAX)
        particles = model.particles(n, seeding.derived_seed(seed, "marginals"), batch_size=CALIBRATION_PARTICLES)
        # a table's columns whose sampled marginal is already within the noise of the rows' are
        # left as sampled (TABLE_GAP); an image's pixels and principal coefficients are all mapped
        # (measured that way: docs/images-cpu.md)
        min_gap = None if isinstance(self.data, ImageData) or self.space is not None else TABLE_GAP
        full = MarginalMap.fit(particles, rows, features, model.sampling_steps, min_gap=min_gap)
        event = {"event": "marginals", "step": self.step, "particles": n, "features": len(full.features),
                 "features_within_noise": len(features) - len(full.features), "strength": 0.0}
        if full.features:
            # the most of the map that keeps near-copies of training rows at the smoothing's bound
            judged, scale = particles[:CALIBRATION_JUDGED], self._copy_scale()
            scale = 1.0 if scale is None else scale
            for strength in CALIBRATION_STRENGTHS:
                copies = near_copy_share(model.as_rows(full.weakened(strength)(judged)).flatten(1) * scale,
                                         rows * scale, seeding.generator(seed, "marginals"))
                if copies <= COPY_SHARE:
                    self.marginals = full.weakened(strength)
                    self.marginals.save(self.run_dir)
                    break
            event.update(strength=0.0 if self.marginals is None else self.marginals.strength, near_copies=copies)
        self.run.log(event)

    def evaluate(self, n: int | None = None) -> dict[str, Any]:
        """Score up to ``n`` (default ``train.eval_n``) EMA samples against held-out data beside
        the baselines and the floor (:func:`fdrl.evaluate.heldout.heldout_report`); written to
        ``metrics.json``. Held out: a finite dataset's held-out part (all of it up to ``n``),
        or fresh draws of an infinite toy distribution."""
        report = evaluate_heldout(self.model(), self.config, self.data, n or self.config.train.eval_n)
        metrics = without_nan({"step": self.step, "objective": self.config.objective,
                               "samples_steps": self.config.flow.sampling_steps,
                               "data_bandwidth": 0.0 if self.smoother is None else self.smoother.bandwidth, **report})
        self.run.write_metrics(metrics)
        return metrics
