"""The particle flow of Eq. 9 and the potentials that drive it.

One Euler-Maruyama step of the stale gradient flow (Eq. 5) is

    x_{k+1} = x_k - eta * grad_x V(x_k) + nu * xi_k,      xi_k ~ N(0, I),          (Eq. 9)

where the potential V(x) is f'(r_theta(x)) for plain FDRL, and anything else (a sum with a
classifier term for conditional generation, Eq. 31) for compositions. A potential is any
callable mapping a batch to one scalar per sample; the only network ``flow`` knows is the MLP,
whose input gradient it can take in closed form (``FlowOptions.closed_form``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import subprocess
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from fdrl import native
from fdrl.native import route as native_route
from fdrl.nets.mlp import MLP, mlp_input_gradient
from fdrl.objectives import Objective

Potential = Callable[[Tensor], Tensor]
Generators = torch.Generator | Sequence[torch.Generator] | None

from fdrl.config import COMPILE_MODES, SPECTRAL_NORM_POWERS  # noqa: E402  (the names config checks)


@dataclass(frozen=True)
class FlowOptions:
    """Switches of the flow's fast path and numerics. All but two leave the maths of Eq. 9
    unchanged (the same particles up to float rounding); ``autocast_bf16`` and
    ``spectral_norm_power="per_step"`` change it, so both are opt-in (:data:`DEVICE_DEFAULTS`).

    * ``channels_last``: 4-D particles (and so the input gradient) in ``torch.channels_last``;
      pair it with a convolutional estimator converted by :func:`prepare_estimator`.
    * ``autocast_bf16``: the estimator's forward and backward under bf16 autocast (any device);
      the particles, the gradient and the update stay in fp32, the gradient's value does not.
    * ``tf32``: allow TF32 matmuls and convolutions during the flow (Ampere and later).
    * ``closed_form``: for f'(r_theta) of an :class:`~fdrl.nets.MLP` (:func:`ratio_potential`),
      the input gradient derived by hand (:func:`fdrl.nets.mlp.mlp_input_gradient`: no autograd
      graph, one fused LeakyReLU backward per layer) instead of autograd; other potentials and
      bf16 autocast use autograd.
    * ``compile``: the flow steps (input gradient and update) compiled with
      ``torch.compile(mode=compile_mode)``, ``steps_per_call`` steps per compiled call (their
      noise drawn beforehand from the same generator, in the same order); falls back to eager
      with a warning if compilation fails. ``True``: any potential; ``None`` (the CPU default):
      only the closed-form MLP steps, the case measured to pay on the CPU (a new batch shape
      recompiles, and CPU ResNets were not measured); ``False``: never.

    * ``cpu_kernel``: for f'(r_theta) of an :class:`~fdrl.nets.MLP` with fp32 CPU particles, the
      fused C++ flow of :mod:`fdrl.native` (every step of a call in one pass over each tile of
      rows, weights fixed); ``None`` (the CPU default): on an x86-64 CPU whose compiler builds it,
      for the shapes where it was measured faster than the torch route on this machine the first
      time they were flowed (:mod:`fdrl.native.route`); ``True``: any such MLP; ``False``: never.
      Takes precedence over ``closed_form`` and ``compile``.

    * ``spectral_norm_power``: how spectrally normalised weights are computed during a flow
      (:func:`frozen`). ``"once"``: from the power-iteration vectors as they stand on entering
      the flow, without a power iteration (the training forward does one per training step).
      ``"per_step"``: one power iteration per spectral-norm layer at every flow step, as the
      authors' code gets by running the flow in train mode (K + 1 per training step); the
      weights change from step to step, so the closed-form gradient and compile are skipped
      (eager autograd steps). This one changes the maths: sigma is re-estimated during the flow.

    CUDA graphs are not captured by hand: each step draws its noise from a caller-owned
    ``torch.Generator`` and evaluates an autograd input gradient, which a manual capture would
    have to register and warm up; ``compile_mode="reduce-overhead"`` gets CUDA graphs through
    ``torch.compile`` instead (the noise is drawn outside the compiled region), untested here.

    ``FlowOptions()`` (all off) is the plain path; :meth:`for_device` gives the defaults.
    """

    channels_last: bool = False
    autocast_bf16: bool = False
    tf32: bool = False
    compile: bool | None = False
    compile_mode: str = "default"
    closed_form: bool = False
    steps_per_call: int = 1
    spectral_norm_power: str = "once"
    cpu_kernel: bool | None = False

    def __post_init__(self) -> None:
        if self.spectral_norm_power not in SPECTRAL_NORM_POWERS:
            raise ValueError(f"spectral_norm_power must be one of {', '.join(SPECTRAL_NORM_POWERS)}, "
                             f"got '{self.spectral_norm_power}'")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got '{self.compile_mode}'")
        if self.steps_per_call < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {self.steps_per_call}")

    @classmethod
    def for_device(
        cls,
        device: str | torch.device,
        channels_last: bool | None = None,
        autocast_bf16: bool | None = None,
        tf32: bool = True,
        compile: bool | None = None,
        compile_mode: str = "default",
        closed_form: bool | None = None,
        steps_per_call: int | None = None,
        spectral_norm_power: str | None = None,
        estimator: str | None = None,
        cpu_kernel: bool | None = None,
    ) -> "FlowOptions":
        """The options for ``device``: each argument left at ``None`` takes its default from
        :data:`DEVICE_DEFAULTS` (the CPU's column for every device but CUDA). channels_last
        defaults on only for an ``estimator`` (a :func:`fdrl.nets.build_estimator` name) in
        :data:`CHANNELS_LAST_ESTIMATORS`; a CPU ``compile`` of ``None`` becomes ``False`` where
        no C++ compiler runs (:func:`cpu_compiler_found`). ``tf32=False`` forbids TF32."""
        kind = "cuda" if torch.device(device).type == "cuda" else "cpu"
        default = {name: getattr(row, kind) for name, row in DEVICE_DEFAULTS.items()}
        if compile is None:
            compile = default["compile"]
            if compile is None and not cpu_compiler_found():
                compile = False
        if channels_last is None:
            channels_last = default["channels_last"] and estimator in CHANNELS_LAST_ESTIMATORS
        return cls(
            channels_last=channels_last,
            autocast_bf16=default["autocast_bf16"] if autocast_bf16 is None else autocast_bf16,
            tf32=tf32 and default["tf32"],
            compile=compile,
            compile_mode=compile_mode,
            closed_form=default["closed_form"] if closed_form is None else closed_form,
            steps_per_call=default["steps_per_call"] if steps_per_call is None else steps_per_call,
            spectral_norm_power=default["spectral_norm_power"] if spectral_norm_power is None else spectral_norm_power,
            cpu_kernel=default["cpu_kernel"] if cpu_kernel is None else cpu_kernel,
        )

    @classmethod
    def from_config(cls, device: str | torch.device, flow_config: Any, estimator: str | None = None,
                    sampling: bool = False) -> "FlowOptions":
        """:meth:`for_device` with the switches of a config's ``flow`` section
        (:class:`fdrl.config.FlowConfig`) for the estimator named ``estimator``: the one function
        that decides the options of the training flow (``fdrl train``) and of the sampling flow
        (:meth:`fdrl.model.FDRL.flow_options`, ``sampling=True``), so both run the same numerics
        (precision, TF32, layout, spectral norm). Only ``torch.compile`` differs: sampling compiles
        when ``flow.compile`` is true, not by default, since every new batch shape recompiles."""
        f = flow_config
        compile = (f.compile is True) if sampling else f.compile
        return cls.for_device(device, f.channels_last, f.autocast_bf16, f.tf32, compile, f.compile_mode,
                              spectral_norm_power=f.spectral_norm_power, estimator=estimator,
                              cpu_kernel=f.cpu_kernel)


#: flow steps per compiled call on the CPU (benchmarks/swissroll_iteration.py measures the choice)
CPU_STEPS_PER_CALL = 10


@dataclass(frozen=True)
class DeviceDefault:
    """One row of :data:`DEVICE_DEFAULTS`: a :class:`FlowOptions` switch's default on the CPU
    and on CUDA, and why."""

    cpu: Any
    cuda: Any
    why: str


#: Which fast-path switch is on by default on which device, and why: the one place
#: :meth:`FlowOptions.for_device` (so ``fdrl train`` and sampling) reads its defaults from.
#: docs/performance.md has this table with each switch's measured effect. No row has run
#: on a GPU: every CUDA default is unverified there.
DEVICE_DEFAULTS: dict[str, DeviceDefault] = {
    "autocast_bf16": DeviceDefault(
        False, False, "changes the maths: the flow's input gradient moves by over 10% on narrow nets at "
        "initialisation, and two training steps' particles by up to 1.9% of their drift "
        "(tests/test_fast_routes.py); opt-in (flow.autocast_bf16=true, any device) until a run shows sample "
        "quality unchanged. CPU: 1.9-2.1x faster ResNet flow step (benchmarks/flow_switches_cpu.py); "
        "unverified on GPU"),
    "tf32": DeviceDefault(
        False, True, "CUDA only (the CPU has no TF32): fp32 tensors, 10-bit-mantissa products in matmuls and "
        "convolutions (PyTorch's own default for cuDNN convolutions); unverified on GPU"),
    "channels_last": DeviceDefault(
        False, True, "CUDA, and only for CHANNELS_LAST_ESTIMATORS: their channels_last forward, input and "
        "parameter gradients equal the contiguous ones on the CPU (tests/test_device_defaults.py); unverified "
        "on GPU. Off on the CPU although it made a ResNet flow step 1.3-1.6x faster "
        "(benchmarks/flow_switches_cpu.py): its parameter backward crashes torch 2.14 on the 64- and 128-pixel "
        "ResNets at widths 1/16 and 1/8 (opt in with flow.channels_last=true)"),
    "compile": DeviceDefault(
        None, True, "CPU (None): the closed-form MLP steps only (those the CPU kernel does not run), where a C++ "
        "compiler runs (the swiss-roll iteration 1.3x faster than the eager closed form, "
        "benchmarks/swissroll_iteration.py); ResNet steps "
        "were not measured to pay on the CPU. CUDA: every flow step; "
        "unverified on GPU (a failed compile falls back to eager with a warning)"),
    "closed_form": DeviceDefault(
        True, False, "the hand-derived MLP input gradient (fp32, same values to rounding); CPU only because it "
        "has never run on a GPU"),
    "steps_per_call": DeviceDefault(
        CPU_STEPS_PER_CALL, 1, "several compiled closed-form steps per call on the CPU "
        "(benchmarks/swissroll_iteration.py); never run on a GPU"),
    "cpu_kernel": DeviceDefault(
        None, False, "CPU (None): the fused C++ MLP flow (fdrl.native) on x86-64 where a C++ compiler builds "
        "it, for each flow shape where a short measurement on this machine (the first time the shape is "
        "flowed, cached beside the library: fdrl.native.route) found it at least 1.1x the torch route: the "
        "swiss-roll iteration 2.1x official_style, 1.4x the compiled torch route (benchmarks/swissroll_iteration.py, "
        "AMD EPYC); the MNIST net 0.76-0.78x on an Intel Xeon, so no fixed rule. CUDA: not applicable (CPU code)"),
    "spectral_norm_power": DeviceDefault(
        "once", "once", "spectral-norm weights computed once per flow from the current power-iteration vectors; "
        "per_step (the authors' train-mode flow) is the option"),
}

#: the estimators whose channels_last forward and backward (input and parameter gradients) ran on
#: the CPU at every width tried (1/16, 1/8, 1/4) and equal the contiguous ones
#: (tests/test_device_defaults.py); channels_last is a CUDA default only for these. The 64- and
#: 128-pixel ResNets are left out: at widths 1/16 and 1/8 their channels_last parameter backward
#: crashes torch 2.14's CPU kernel (a 1x1 stride-2 convolution with 8 or fewer channels on 64 x 64)
CHANNELS_LAST_ESTIMATORS = ("resnet32",)


@functools.cache
def cpu_compiler_found() -> bool:
    """Whether the C++ compiler torch.compile's inductor uses on the CPU runs here; checked once
    per process. Without one the CPU flow runs eagerly, with a one-line notice."""
    # importing inductor's C++ tooling logs "No CUDA runtime is found" on every CPU-only machine
    # with a CUDA toolkit installed: noise for a user training on the CPU
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        subprocess.run([get_cpp_compiler(), "--version"], check=True, capture_output=True, timeout=60)
        return True
    except Exception as err:  # no compiler, not runnable, torch without inductor, ...
        warnings.warn(f"no working C++ compiler for torch.compile ({type(err).__name__}: {err}); "
                      "the CPU flow runs eagerly")
        return False


def prepare_estimator(net: nn.Module, options: FlowOptions | None) -> nn.Module:
    """Put a convolutional estimator in channels_last when ``options`` asks for it (in place)."""
    if options is not None and options.channels_last and any(isinstance(m, nn.Conv2d) for m in net.modules()):
        net.to(memory_format=torch.channels_last)
    return net


def _layout(x: Tensor, options: FlowOptions | None) -> Tensor:
    if options is not None and options.channels_last and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _noise(x: Tensor, generator: Generators) -> Tensor:
    """A standard normal draw shaped like ``x``; with a sequence of generators (one per shard
    of the batch, e.g. one per distributed rank) each draws its own equal slice."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    shards = len(generator)
    if x.shape[0] % shards:
        raise ValueError(f"a batch of {x.shape[0]} does not split into {shards} equal shards")
    size = x.shape[0] // shards
    return torch.cat([torch.randn((size, *x.shape[1:]), generator=g, device=x.device, dtype=x.dtype)
                      for g in generator])


#: the torch.compile backend of the flow steps (tests use "aot_eager", which needs no compiler)
COMPILE_BACKEND = "inductor"
_COMPILED: dict[tuple[str, str, str], Callable] = {}


def _euler_maruyama(gradient: Callable[[Tensor], Tensor], x: Tensor, xis: Sequence[Tensor] | None, count: int,
                    eta: float, noise: float) -> Tensor:
    """``count`` steps of Eq. 9, x <- x - eta grad V(x) + nu xi, with the given draws xi
    (``None``: nu = 0, no noise term)."""
    for i in range(count):
        x = x - eta * gradient(x)
        if xis is not None:
            x = x + noise * xis[i]
    return x


def _autograd_steps(potential: Potential, x: Tensor, xis: Sequence[Tensor] | None, count: int, eta: float,
                    noise: float, bf16: bool) -> Tensor:
    """Steps with autograd's input gradient of any potential (``torch.func.grad`` when compiled)."""
    if not torch.compiler.is_compiling():
        return _euler_maruyama(lambda y: potential_gradient(potential, y, bf16), x, xis, count, eta, noise)

    def total(y: Tensor) -> Tensor:
        with torch.autocast(y.device.type, dtype=torch.bfloat16, enabled=bf16):
            return potential(y).float().sum()

    return _euler_maruyama(torch.func.grad(total), x, xis, count, eta, noise)


def _derivative(fn: Callable[[Tensor], Tensor], out: Tensor) -> Tensor:
    """d fn / d out for an elementwise ``fn`` (autograd on the 1-D outputs; traced when compiled)."""
    if torch.compiler.is_compiling():
        return torch.func.grad(lambda o: fn(o).sum())(out)
    with torch.enable_grad():
        out = out.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(out).sum(), out)
    return grad


def _closed_form_steps(weights: Sequence[Tensor], biases: Sequence[Tensor], negative_slope: float,
                       f_prime: Callable[[Tensor], Tensor], x: Tensor, xis: Sequence[Tensor] | None, count: int,
                       eta: float, noise: float) -> Tensor:
    """Steps with the hand-derived input gradient of V = f'(MLP(x)) (tensors in, tensors out:
    compiled once per shape, whichever network the weights come from)."""

    def gradient(y: Tensor) -> Tensor:
        return mlp_input_gradient(y, weights, biases, negative_slope, lambda out: _derivative(f_prime, out))

    return _euler_maruyama(gradient, x, xis, count, eta, noise)


def _compiled(kind: str, fn: Callable, mode: str) -> Callable:
    key = (kind, COMPILE_BACKEND, mode)
    if key not in _COMPILED:
        options = {"mode": mode} if COMPILE_BACKEND == "inductor" else {}
        _COMPILED[key] = torch.compile(fn, backend=COMPILE_BACKEND, dynamic=False, **options)
    return _COMPILED[key]


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def potential_gradient(potential: Potential, x: Tensor, autocast_bf16: bool = False) -> Tensor:
    """grad_x of sum_i V(x_i): per-sample gradients, since samples do not interact. With
    ``autocast_bf16`` the potential runs under bf16 autocast; x and the gradient stay in x's dtype."""
    with torch.enable_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
        x = x.detach().requires_grad_(True)
        value = potential(x).float()
        if value.shape != (x.shape[0],):
            raise ValueError(
                f"a potential must return one scalar per sample, shape ({x.shape[0]},); "
                f"got {tuple(value.shape)}"
            )
        (grad,) = torch.autograd.grad(value.sum(), x)
    return grad


#: flow steps per timed call when the default route of a shape is measured (native.route)
ROUTE_MEASURE_STEPS = 10


def _route_shape(weights: Sequence[Tensor], x: Tensor, options: FlowOptions) -> str:
    """What the two routes' speeds depend on: the net's layer sizes, the batch, the threads, the
    torch route's compilation, torch's version."""
    layers = "x".join(str(w.shape[0]) for w in weights)
    compiled = bool(options.compile) or (options.compile is None and options.closed_form)
    return (f"in{weights[0].shape[1]}-layers{layers}-batch{x.shape[0]}-threads{torch.get_num_threads()}"
            f"-compiled{int(compiled)}-steps{options.steps_per_call}-torch{torch.__version__}")


def _measure_routes(potential: "RatioPotential", x: Tensor, options: FlowOptions) -> dict[str, float]:
    """Seconds per :data:`ROUTE_MEASURE_STEPS` steps on the kernel and on the torch route from
    ``x`` (its own noise generator, eta 0: the particles do not run off)."""
    def run(cpu_kernel: bool) -> Callable[[], Tensor]:
        opts = dataclasses.replace(options, cpu_kernel=cpu_kernel)
        return lambda: flow(x, potential, ROUTE_MEASURE_STEPS, 0.0, 1e-2, torch.Generator().manual_seed(0),
                            options=opts)

    return native_route.time_routes(run(True), run(False))


def _kernel_wanted(options: FlowOptions, potential: "RatioPotential", x: Tensor) -> bool:
    """Whether the flow runs on :mod:`fdrl.native`'s fused kernel (``FlowOptions.cpu_kernel``):
    ``None`` measures the shape the first time (:func:`fdrl.native.route.kernel_chosen`)."""
    weights = potential.net.weights_and_biases()[0]
    if options.cpu_kernel is False or not native.supports(potential.objective.name, weights, x):
        return False
    if options.cpu_kernel is None:
        return native.runs_by_default() and native_route.kernel_chosen(
            _route_shape(weights, x, options), lambda: _measure_routes(potential, x, options))
    return native.library() is not None


def _route(potential: Potential, options: FlowOptions, x: Tensor) -> str:
    """The route of :func:`flow_route` (with ``cpu_kernel=None``, a shape not seen before is
    measured first)."""
    if (not options.autocast_bf16 and options.spectral_norm_power == "once"
            and isinstance(potential, RatioPotential) and isinstance(potential.net, MLP)):
        if _kernel_wanted(options, potential, x):
            return "cpu_kernel"
        if options.closed_form:
            return "closed_form"
    return "autograd"


def _stepper(potential: Potential, options: FlowOptions, x: Tensor) -> tuple[str, Callable]:
    """(kind, steps function (fn, x, xis, count, eta, noise) -> x) for ``potential`` under
    ``options`` and particles like ``x``; ``fn`` is the (eager or compiled) torch steps function,
    which the ``"cpu_kernel"`` kind does not use."""
    kind = _route(potential, options, x)
    if kind == "autograd":
        return kind, lambda fn, *a: fn(potential, *a, options.autocast_bf16)
    weights, biases = potential.net.weights_and_biases()
    slope, objective = potential.net.negative_slope, potential.objective
    if kind == "cpu_kernel":
        packed = native.PackedMLP(weights, biases, slope)
        return kind, lambda fn, y, *a: packed.flow(y, objective.name, *a)
    return kind, lambda fn, *a: fn(weights, biases, slope, objective.f_prime, *a)


def flow_route(potential: Potential, x: Tensor, options: FlowOptions | None = None) -> str:
    """Which route :func:`flow` takes for ``potential``, particles like ``x`` and ``options``:
    ``"cpu_kernel"`` (:mod:`fdrl.native`), ``"closed_form"`` (the hand-derived MLP gradient in
    torch, compiled where ``options.compile`` says) or ``"autograd"``."""
    return _route(potential, options or FlowOptions(), x)


#: the kernel's noise for one call is drawn beforehand: at most this many floats of it at a time
CPU_KERNEL_NOISE_FLOATS = 1 << 22


def flow(
    x: Tensor,
    potential: Potential,
    steps: int,
    eta: float,
    noise: float,
    generator: Generators = None,
    trajectory: list[Tensor] | None = None,
    record_every: int = 1,
    options: FlowOptions | None = None,
) -> Tensor:
    """Run ``steps`` steps of Eq. 9 from ``x`` and return the final particles.

    ``noise`` is nu, the multiplier of a standard normal draw (App. F uses 1e-2). Noise comes
    from ``generator`` so a seed fixes the whole flow. No graph survives a step, so memory does
    not grow with ``steps``. If ``trajectory`` is a list, ``x`` at step 0 and every
    ``record_every`` steps (and at the last step) is appended to it, detached, on the CPU.

    ``generator`` may be a sequence of generators, one per equal shard of the batch (what
    each distributed rank draws; see :mod:`fdrl.distributed`). ``options`` switches on the fast
    path (:class:`FlowOptions`); ``None`` is the plain path. Every option but bf16 autocast gives
    the particles of the plain path up to float rounding; ``spectral_norm_power`` is applied by
    :func:`frozen`, which must be given the same options.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if record_every < 1:
        raise ValueError(f"record_every must be >= 1, got {record_every}")
    options = options or FlowOptions()
    x = _layout(x.detach().clone(), options)
    if trajectory is not None:
        trajectory.append(x.cpu())
    kind, call = _stepper(potential, options, x)
    eager = _closed_form_steps if kind == "closed_form" else _autograd_steps
    wanted = kind != "cpu_kernel" and options.spectral_norm_power == "once" and (
        options.compile or (options.compile is None and kind == "closed_form"))
    compiled = _compiled(kind, eager, options.compile_mode) if wanted else None
    if kind == "cpu_kernel":
        per_call = max(1, CPU_KERNEL_NOISE_FLOATS // max(1, x.numel()))
    else:
        per_call = options.steps_per_call if compiled is not None and trajectory is None else 1
    done = 0
    with _tf32(options.tf32), torch.no_grad():
        while done < steps:
            # a call ends at the next recorded step, and draws at most per_call steps of noise
            count = min(per_call, steps - done, record_every - done % record_every if trajectory is not None
                        else steps)
            xis = [_layout(_noise(x, generator), options) for _ in range(count)] if noise else None
            if compiled is not None and count == per_call:  # a shorter last call runs eagerly: no recompile
                try:
                    x = call(compiled, x, xis, count, eta, noise)
                except Exception as err:  # no compiler, unsupported op, ...: the eager path
                    warnings.warn(f"torch.compile of the flow step failed ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''}); running eagerly")
                    compiled = None
                    x = call(eager, x, xis, count, eta, noise)
            else:
                x = call(eager, x, xis, count, eta, noise)
            done += count
            if trajectory is not None and (done % record_every == 0 or done == steps):
                trajectory.append(x.cpu())
    return x


@contextlib.contextmanager
def frozen(net: nn.Module, options: FlowOptions | None = None, keep_power_iterations: bool = True
           ) -> Iterator[nn.Module]:
    """Freeze ``net`` for a flow: no parameter gradients, eval mode, narrow-input linear
    weights laid out column-major on the CPU, and spectrally normalised weights computed as
    ``options.spectral_norm_power`` says (:class:`FlowOptions`; ``None``: ``"once"``).

    ``"once"``: eval mode stops spectral norm's power iteration, and ``parametrize.cached``
    computes each normalised weight W / sigma once for the whole flow rather than once per step
    (the cache is filled on entry, outside any autograd or ``torch.func`` transform).
    ``"per_step"``: the spectral-norm parametrisations stay in training mode and uncached, so
    every forward of the flow runs one power iteration (updating the vectors u, v) and divides
    by the new sigma, as the authors' train-mode flow does. With ``keep_power_iterations=False``
    (sampling, which must not change the model) u and v are put back on exit. Everything else
    is restored on exit.
    """
    per_step = options is not None and options.spectral_norm_power == "per_step"
    was_training = net.training
    requires = [p.requires_grad for p in net.parameters()]
    norms = [m for m in net.modules() if isinstance(m, _SpectralNorm)]
    vectors = [(m._u.clone(), m._v.clone()) for m in norms] if per_step and not keep_power_iterations else []
    net.eval()
    for m in norms:
        m.train(per_step)
    for p in net.parameters():
        p.requires_grad_(False)
    relaid = _column_major_narrow_weights(net)
    try:
        with contextlib.nullcontext() if per_step else parametrize.cached():
            if not per_step:
                with torch.no_grad():
                    for module in net.modules():
                        if parametrize.is_parametrized(module):
                            for name in module.parametrizations:
                                getattr(module, name)
            yield net
    finally:
        with torch.no_grad():
            for m, (u, v) in zip(norms, vectors):
                m._u.copy_(u)
                m._v.copy_(v)
        for p, data in relaid:
            p.data = data
        for p, r in zip(net.parameters(), requires):
            p.requires_grad_(r)
        net.train(was_training)


#: CPU linear layers with at most this many input features get column-major weights in a flow
NARROW_INPUT_FEATURES = 8


def _column_major_narrow_weights(net: nn.Module) -> list[tuple[nn.Parameter, Tensor]]:
    """Store the weight of every plain CPU ``nn.Linear`` with <= :data:`NARROW_INPUT_FEATURES`
    input features column-major (same values, transposed strides); returns (parameter,
    original data) pairs for :func:`frozen` to restore.

    The flow's input gradient multiplies (batch, out) by the weight (out, in); with in = 2 (toy
    data) MKL's GEMM is 2-3x faster on a column-major weight than on the row-major one, which
    made this one product the flow's second most expensive (``benchmarks/swissroll_iteration.py``
    reports the effect as ``speedup_layout``). Wider layers gain nothing, CUDA is unaffected.
    """
    relaid = []
    for module in net.modules():
        if (isinstance(module, nn.Linear) and not parametrize.is_parametrized(module)
                and module.weight.device.type == "cpu" and 1 < module.in_features <= NARROW_INPUT_FEATURES):
            original = module.weight.data
            module.weight.data = original.t().contiguous().t()
            relaid.append((module.weight, original))
    return relaid


class RatioPotential:
    """V(x) = f'(r_theta(x)) for the pairing ``objective`` (Eq. 9 with Eq. 22-24): a callable
    potential whose network and objective the fast path can see (for the closed-form MLP gradient)."""

    def __init__(self, net: nn.Module, objective: Objective):
        self.net, self.objective = net, objective

    def __call__(self, x: Tensor) -> Tensor:
        return self.objective.f_prime(self.net(x))


def ratio_potential(net: nn.Module, objective: Objective) -> Potential:
    """V(x) = f'(r_theta(x)) for the pairing ``objective`` (Eq. 9 with Eq. 22-24)."""
    return RatioPotential(net, objective)
