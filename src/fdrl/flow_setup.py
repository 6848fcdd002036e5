"""How a flow is set up: its options on one device (:class:`FlowOptions`, from the switches of
:class:`fdrl.config.FlowSwitches` and the table :data:`DEVICE_DEFAULTS`) and the estimator
frozen for it (:func:`frozen`). :mod:`fdrl.flow` resolves the options into a route and runs it;
docs/flow-routes.md has the measured effect of each switch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from fdrl.config import COMPILE_MODES, SPECTRAL_NORM_POWERS, FlowPlan, FlowSwitches


@dataclass(frozen=True)
class FlowOptions:
    """The flow's switches on one device (:meth:`for_device`): those of
    :class:`fdrl.config.FlowSwitches`, with ``None`` resolved where the device decides it, and
    two that only the device decides (``closed_form``, ``steps_per_call``). All but two leave the
    maths of Eq. 9 unchanged (the same particles up to float rounding); ``autocast_bf16`` and
    ``spectral_norm_power="per_step"`` change it, so both are opt-in.

    * ``channels_last``: 4-D particles (and so the input gradient) in ``torch.channels_last``;
      pair it with a convolutional estimator converted by :func:`prepare_estimator`.
    * ``autocast_bf16``: the estimator's forward and backward under bf16 autocast (any device);
      the particles, the gradient and the update stay in fp32, the gradient's value does not.
    * ``tf32``: allow TF32 matmuls and convolutions during the flow (Ampere and later).
    * ``closed_form``: for f'(r_theta) of an :class:`~fdrl.nets.MLP`, the input gradient derived
      by hand (:func:`fdrl.nets.mlp.mlp_input_gradient`) instead of autograd.
    * ``compile``: the flow steps compiled with ``torch.compile(mode=compile_mode)``,
      ``steps_per_call`` steps per compiled call; ``True``: every route but the C++ kernel;
      ``None``: each route's own rule (:data:`fdrl.flow.ROUTES`: the closed form compiles, autograd
      does not); ``False``: never. A failed compile falls back to eager with a warning.
    * ``cpu_kernel``: the fused C++ MLP flow (:mod:`fdrl.native`); ``None``: for the flow shapes
      where a short measurement on this machine found it faster (:mod:`fdrl.native.route`);
      ``True``: wherever it runs; ``False``: never. Takes precedence over ``closed_form``.
    * ``spectral_norm_power``: how spectrally normalised weights are computed during a flow
      (:func:`frozen`): ``"once"`` on entering it, ``"per_step"`` with one power iteration per
      step (the authors' train-mode flow; the weights change, so only autograd runs it).

    CUDA graphs are not captured by hand: each step draws its noise from a caller-owned
    ``torch.Generator``; ``compile_mode="reduce-overhead"`` gets them through ``torch.compile``.

    ``FlowOptions()`` (all off) is the plain path: eager autograd steps.
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
    def for_device(cls, device: str | torch.device, switches: FlowSwitches | None = None,
                   estimator: str | None = None, **overrides: Any) -> "FlowOptions":
        """The options for ``device`` from ``switches`` (default :class:`~fdrl.config.FlowSwitches`())
        and ``overrides`` (any field of this class): every ``None`` takes the device's column of
        :data:`DEVICE_DEFAULTS` (the CPU's for every device but CUDA). Three rules more:
        channels_last's default holds only for an ``estimator`` (a
        :func:`fdrl.nets.build_estimator` name) in :data:`CHANNELS_LAST_ESTIMATORS`; ``tf32`` is a
        permission (on where the device has TF32, ``False`` forbids it); a CPU ``compile`` of
        ``None`` becomes ``False`` where no C++ compiler runs (:func:`cpu_compiler_found`)."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"FlowOptions has no switch '{unknown[0]}'; switches: {', '.join(names)}")
        kind = "cuda" if torch.device(device).type == "cuda" else "cpu"
        asked = {**dataclasses.asdict(switches or FlowSwitches()), **overrides}
        values = {name: getattr(DEVICE_DEFAULTS[name], kind) if asked.get(name) is None else asked[name]
                  for name in names}
        if asked.get("channels_last") is None:
            values["channels_last"] = values["channels_last"] and estimator in CHANNELS_LAST_ESTIMATORS
        values["tf32"] = asked["tf32"] is not False and getattr(DEVICE_DEFAULTS["tf32"], kind)
        if values["compile"] is None and not cpu_compiler_found():
            values["compile"] = False
        return cls(**values)

    @classmethod
    def from_config(cls, device: str | torch.device, switches: FlowSwitches, estimator: str | None = None,
                    sampling: bool = False) -> "FlowOptions":
        """:meth:`for_device` with a config's switches (a :class:`fdrl.config.FlowConfig` or its
        :class:`~fdrl.config.FlowSwitches`) for the estimator named ``estimator``: the one function
        that decides the options of the training flow (``fdrl train``) and of the sampling flow
        (:meth:`fdrl.model.FDRL.flow_options`, ``sampling=True``), so both run the same numerics.
        Only ``torch.compile`` differs: sampling compiles when ``compile`` is true, not by default,
        since every new batch shape recompiles."""
        switches = switches.switches()
        if sampling:
            switches.compile = switches.compile is True
        return cls.for_device(device, switches, estimator)

    def following(self, route: str | None) -> "FlowOptions":
        """These options with the one measured choice, ``cpu_kernel=None``, pinned to ``route`` (the
        route a run's training flow took, :class:`fdrl.flow.FlowPlan`): the kernel where it ran
        the kernel, the torch routes otherwise; unchanged for ``None`` (a model without a plan)."""
        return self if route is None else dataclasses.replace(self, cpu_kernel=route == "cpu_kernel")


#: flow steps per compiled call on the CPU (benchmarks/swissroll_iteration.py measures the choice)
CPU_STEPS_PER_CALL = 10


@dataclass(frozen=True)
class DeviceDefault:
    """One row of :data:`DEVICE_DEFAULTS`: a :class:`FlowOptions` switch's default on the CPU
    and on CUDA, and why."""

    cpu: Any
    cuda: Any
    why: str


#: Which switch is on by default on which device, and why: the one place :meth:`FlowOptions.for_device`
#: (so ``fdrl train`` and sampling) reads its defaults from. docs/flow-routes.md has each switch's
#: measured effect. No row has run on a GPU: every CUDA default is unverified there.
DEVICE_DEFAULTS: dict[str, DeviceDefault] = {
    "autocast_bf16": DeviceDefault(
        False, False, "changes the maths (the flow's input gradient moves by over 10% on narrow nets, "
        "tests/test_fast_routes.py): opt-in on every device until a run shows sample quality unchanged"),
    "tf32": DeviceDefault(
        False, True, "CUDA only (the CPU has no TF32): fp32 tensors, 10-bit-mantissa products in matmuls and "
        "convolutions (PyTorch's own default for cuDNN convolutions)"),
    "channels_last": DeviceDefault(
        False, True, "CUDA, for CHANNELS_LAST_ESTIMATORS only: their channels_last forward, input and parameter "
        "gradients equal the contiguous ones (tests/test_device_defaults.py). Off on the CPU: its parameter "
        "backward crashes torch's CPU kernel on the narrow 64- and 128-pixel ResNets"),
    "compile": DeviceDefault(
        None, True, "CPU (None): each route's own rule, so the closed-form MLP steps compile (where a C++ "
        "compiler runs) and the autograd steps, whose CPU compile was not measured to pay, do not. CUDA: "
        "every torch route"),
    "closed_form": DeviceDefault(
        True, False, "the hand-derived MLP input gradient (fp32, same values to rounding); CPU only, where it "
        "was measured"),
    "steps_per_call": DeviceDefault(
        CPU_STEPS_PER_CALL, 1, "several compiled steps per call where one call's overhead counts (the CPU)"),
    "cpu_kernel": DeviceDefault(
        None, False, "CPU (None): the fused C++ MLP flow (fdrl.native) on x86-64 where a C++ compiler builds "
        "it, for each flow shape where a short measurement on this machine found it at least 1.1x the torch "
        "route (fdrl.native.route): which shapes gain depends on the CPU. CUDA: not applicable (CPU code)"),
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


def prepare_estimator(net: nn.Module, options: FlowOptions | FlowPlan | None) -> nn.Module:
    """Put a convolutional estimator in channels_last when ``options`` asks for it (in place)."""
    if options is not None and options.channels_last and any(isinstance(m, nn.Conv2d) for m in net.modules()):
        net.to(memory_format=torch.channels_last)
    return net


@contextlib.contextmanager
def frozen(net: nn.Module, options: FlowOptions | FlowPlan | None = None, keep_power_iterations: bool = True
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


