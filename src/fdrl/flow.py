"""The particle flow of Eq. 9, the potentials that drive it and the routes that run it.

One Euler-Maruyama step of the stale gradient flow (Eq. 5) is

    x_{k+1} = x_k - eta * grad_x V(x_k) + nu * xi_k,      xi_k ~ N(0, I),          (Eq. 9)

where the potential V(x) is f'(r_theta(x)) for plain FDRL, and anything else (a sum with a
classifier term for conditional generation, Eq. 31) for compositions. A potential is any
callable mapping a batch to one scalar per sample.

A flow runs on one of three routes (:data:`ROUTES`, in the order they are tried): the fused C++
kernel (:mod:`fdrl.native`), the hand-derived MLP input gradient in torch (compiled or eager),
or autograd's input gradient of any potential (compiled or eager). Each route says which flows
it can run, whether it compiles and how many steps one call runs; :func:`plan_flow` picks the
first route the :class:`FlowOptions` choose, once, into a :class:`FlowPlan` that :func:`flow`
runs, a training run records and its samples follow. :mod:`fdrl.route_table` lists the choices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from fdrl import native
from fdrl.config import ROUTE_NAMES, FlowPlan
# the options and the freezing of a flow belong to this module's interface (fdrl.flow_setup defines them)
from fdrl.flow_setup import (CHANNELS_LAST_ESTIMATORS, CPU_STEPS_PER_CALL, DEVICE_DEFAULTS, FlowOptions,  # noqa: F401
                             frozen, prepare_estimator)
from fdrl.native import route as native_route
from fdrl.nets.mlp import MLP, mlp_input_gradient
from fdrl.objectives import Objective

Potential = Callable[[Tensor], Tensor]
Generators = torch.Generator | Sequence[torch.Generator] | None
#: ``count`` steps of Eq. 9 from ``x`` with the draws ``xis``: (x, xis, count, eta, noise) -> x
Steps = Callable[[Tensor, Sequence[Tensor] | None, int, float, float], Tensor]


class Route:
    """One way to run the steps of Eq. 9. :meth:`runs` says which flows it can compute,
    :meth:`chosen` whether the options pick it, :meth:`compiles` its compile rule and
    :meth:`steps_per_call` how many steps one call runs."""

    name: ClassVar[str]

    def runs(self, potential: Potential, x: Tensor, numerics: FlowOptions | FlowPlan) -> bool:
        return True

    def chosen(self, potential: Potential, x: Tensor, options: FlowOptions) -> bool:
        return self.runs(potential, x, options)

    def compiles(self, options: FlowOptions) -> bool:
        return False

    def steps_per_call(self, plan: FlowPlan, x: Tensor, recording: bool) -> int:
        """Steps per call: the plan's when compiled and not recording a trajectory (each compiled
        call is one fixed count: a trajectory step would recompile), else one."""
        return plan.steps_per_call if plan.compiled and not recording else 1

    def steps(self, potential: Potential, plan: FlowPlan, compiled: bool) -> Steps:
        raise NotImplementedError


def _mlp_ratio(potential: Potential, numerics: FlowOptions | FlowPlan) -> bool:
    """Whether a route with a hand-derived MLP gradient computes this flow: f'(r_theta) of an
    :class:`~fdrl.nets.MLP` in fp32 with weights fixed for the whole flow (spectral norm once)."""
    return (not numerics.autocast_bf16 and numerics.spectral_norm_power == "once"
            and isinstance(potential, RatioPotential) and isinstance(potential.net, MLP))


class KernelRoute(Route):
    """The fused C++ MLP flow (:mod:`fdrl.native`): every step of a call in one pass over each tile
    of rows. Never compiled; a call runs as many steps as :data:`CPU_KERNEL_NOISE_FLOATS` of noise
    allow. ``cpu_kernel=None`` takes it for the shapes measured faster on this machine."""

    name = "cpu_kernel"

    def runs(self, potential: Potential, x: Tensor, numerics: FlowOptions | FlowPlan) -> bool:
        return (_mlp_ratio(potential, numerics)
                and native.supports(potential.objective.name, potential.net.weights_and_biases()[0], x)
                and native.library() is not None)

    def chosen(self, potential: Potential, x: Tensor, options: FlowOptions) -> bool:
        if options.cpu_kernel is False or not self.runs(potential, x, options):
            return False
        if options.cpu_kernel is None:
            weights = potential.net.weights_and_biases()[0]
            return native.runs_by_default() and native_route.kernel_chosen(
                _route_shape(weights, x, potential, options), lambda: _measure_routes(potential, x, options))
        return True

    def steps_per_call(self, plan: FlowPlan, x: Tensor, recording: bool) -> int:
        return max(1, CPU_KERNEL_NOISE_FLOATS // max(1, x.numel()))

    def steps(self, potential: Potential, plan: FlowPlan, compiled: bool) -> Steps:
        weights, biases = potential.net.weights_and_biases()
        packed = native.PackedMLP(weights, biases, potential.net.negative_slope)
        name = potential.objective.name
        return lambda x, xis, count, eta, noise: packed.flow(x, name, xis, count, eta, noise)


class ClosedFormRoute(Route):
    """The hand-derived MLP input gradient in torch (:func:`fdrl.nets.mlp.mlp_input_gradient`: no
    autograd graph); compiled unless ``compile`` is false, ``steps_per_call`` steps per call."""

    name = "closed_form"

    def runs(self, potential: Potential, x: Tensor, numerics: FlowOptions | FlowPlan) -> bool:
        return _mlp_ratio(potential, numerics)

    def chosen(self, potential: Potential, x: Tensor, options: FlowOptions) -> bool:
        return options.closed_form and self.runs(potential, x, options)

    def compiles(self, options: FlowOptions) -> bool:
        return options.compile is not False

    def steps(self, potential: Potential, plan: FlowPlan, compiled: bool) -> Steps:
        weights, biases = potential.net.weights_and_biases()
        fn = _compiled(self.name, _closed_form_steps, plan.compile_mode) if compiled else _closed_form_steps
        slope, f_prime = potential.net.negative_slope, potential.objective.f_prime
        return lambda *a: fn(weights, biases, slope, f_prime, *a)


class AutogradRoute(Route):
    """Autograd's input gradient of any potential (``torch.func.grad`` when compiled): the
    reference, and the route of other networks, compositions, bf16 and ``per_step`` spectral
    norm. Compiled only when ``compile`` is true and the weights are fixed during the flow."""

    name = "autograd"

    def compiles(self, options: FlowOptions) -> bool:
        return options.compile is True and options.spectral_norm_power == "once"

    def steps(self, potential: Potential, plan: FlowPlan, compiled: bool) -> Steps:
        fn = _compiled(self.name, _autograd_steps, plan.compile_mode) if compiled else _autograd_steps
        return lambda *a: fn(potential, plan.autocast_bf16, *a)


#: the routes, in the order :func:`plan_flow` tries them (autograd runs every flow); their names are
#: :data:`fdrl.config.ROUTE_NAMES`, which a saved plan is checked against without torch
ROUTES: dict[str, Route] = {route.name: route for route in (KernelRoute(), ClosedFormRoute(), AutogradRoute())}
assert tuple(ROUTES) == ROUTE_NAMES


def plan_flow(potential: Potential, x: Tensor, options: FlowOptions | FlowPlan | None = None) -> FlowPlan:
    """The plan of a flow of ``potential`` from particles like ``x``: the first route of
    :data:`ROUTES` the ``options`` choose (``None``: :class:`FlowOptions`(), eager autograd), with
    its compile rule and steps per call. With ``cpu_kernel=None`` a flow shape not seen before is
    measured first (:mod:`fdrl.native.route`). A plan given as ``options`` is kept where its route
    runs this flow and falls back to eager autograd where it does not (a guided potential, a
    plan's kernel on CUDA particles)."""
    if isinstance(options, FlowPlan):
        if ROUTES[options.route].runs(potential, x, options):
            return options
        return dataclasses.replace(options, route=AutogradRoute.name, compiled=False, steps_per_call=1)
    options = options or FlowOptions()
    route = next(r for r in ROUTES.values() if r.chosen(potential, x, options))
    compiled = route.compiles(options)
    draft = FlowPlan(route.name, compiled, options.steps_per_call, options.autocast_bf16, options.channels_last,
                     options.tf32, options.spectral_norm_power, options.compile_mode)
    return dataclasses.replace(draft, steps_per_call=route.steps_per_call(draft, x, recording=False))


def flow_route(potential: Potential, x: Tensor, options: FlowOptions | FlowPlan | None = None) -> str:
    """Which route :func:`flow` takes for ``potential``, particles like ``x`` and ``options``: a
    name of :data:`ROUTES` (:func:`plan_flow`)."""
    return plan_flow(potential, x, options).route


#: flow steps per timed call when the default route of a shape is measured (native.route)
ROUTE_MEASURE_STEPS = 10


def _route_shape(weights: Sequence[Tensor], x: Tensor, potential: Potential, options: FlowOptions) -> str:
    """What the kernel's and the torch route's speeds depend on: the net's layer sizes, the batch,
    the threads, the torch route's compilation, torch's version."""
    torch_route = plan_flow(potential, x, dataclasses.replace(options, cpu_kernel=False))
    layers = "x".join(str(w.shape[0]) for w in weights)
    return (f"in{weights[0].shape[1]}-layers{layers}-batch{x.shape[0]}-threads{torch.get_num_threads()}"
            f"-compiled{int(torch_route.compiled)}-steps{options.steps_per_call}-torch{torch.__version__}")


def _measure_routes(potential: RatioPotential, x: Tensor, options: FlowOptions) -> dict[str, float]:
    """Seconds per :data:`ROUTE_MEASURE_STEPS` steps on the kernel and on the torch route from
    ``x`` (its own noise generator, eta 0: the particles do not run off)."""
    def run(cpu_kernel: bool) -> Callable[[], Tensor]:
        opts = dataclasses.replace(options, cpu_kernel=cpu_kernel)
        return lambda: flow(x, potential, ROUTE_MEASURE_STEPS, 0.0, 1e-2, torch.Generator().manual_seed(0),
                            options=opts)

    return native_route.time_routes(run(True), run(False))


#: the kernel's noise for one call is drawn beforehand: at most this many floats of it at a time
CPU_KERNEL_NOISE_FLOATS = 1 << 22
#: the torch.compile backend of the flow steps (tests use "aot_eager", which needs no compiler)
COMPILE_BACKEND = "inductor"
_COMPILED: dict[tuple[str, str, str], Callable] = {}


def flow(
    x: Tensor,
    potential: Potential,
    steps: int,
    eta: float,
    noise: float,
    generator: Generators = None,
    trajectory: list[Tensor] | None = None,
    record_every: int = 1,
    options: FlowOptions | FlowPlan | None = None,
) -> Tensor:
    """Run ``steps`` steps of Eq. 9 from ``x`` and return the final particles.

    ``noise`` is nu, the multiplier of a standard normal draw (App. F uses 1e-2). Noise comes
    from ``generator`` so a seed fixes the whole flow. No graph survives a step, so memory does
    not grow with ``steps``. If ``trajectory`` is a list, ``x`` at step 0 and every
    ``record_every`` steps (and at the last step) is appended to it, detached, on the CPU.

    ``generator`` may be a sequence of generators, one per equal shard of the batch (what
    each distributed rank draws; see :mod:`fdrl.distributed`). ``options``: the switches
    (:class:`FlowOptions`, planned here by :func:`plan_flow`) or a plan made before;
    ``None`` is the plain path. Every route gives the particles of the plain path up to float
    rounding, bf16 autocast aside; ``spectral_norm_power`` is applied by :func:`frozen`, which
    must be given the same options.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if record_every < 1:
        raise ValueError(f"record_every must be >= 1, got {record_every}")
    x = _layout(x.detach().clone(), options)
    plan = plan_flow(potential, x, options)
    if trajectory is not None:
        trajectory.append(x.cpu())
    route = ROUTES[plan.route]
    eager = route.steps(potential, plan, compiled=False)
    fast = route.steps(potential, plan, compiled=True) if plan.compiled else None
    per_call = route.steps_per_call(plan, x, recording=trajectory is not None)
    done = 0
    with _tf32(plan.tf32), torch.no_grad():
        while done < steps:
            # a call ends at the next recorded step, and draws at most per_call steps of noise
            count = min(per_call, steps - done, record_every - done % record_every if trajectory is not None
                        else steps)
            xis = [_layout(_noise(x, generator), plan) for _ in range(count)] if noise else None
            if fast is not None and count == per_call:  # a shorter last call runs eagerly: no recompile
                try:
                    x = fast(x, xis, count, eta, noise)
                except Exception as err:  # no compiler, unsupported op, ...: the eager path
                    warnings.warn(f"torch.compile of the flow step failed ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''}); running eagerly")
                    fast = None
                    x = eager(x, xis, count, eta, noise)
            else:
                x = eager(x, xis, count, eta, noise)
            done += count
            if trajectory is not None and (done % record_every == 0 or done == steps):
                trajectory.append(x.cpu())
    return x


def _layout(x: Tensor, options: FlowOptions | FlowPlan | None) -> Tensor:
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


def _euler_maruyama(gradient: Callable[[Tensor], Tensor], x: Tensor, xis: Sequence[Tensor] | None, count: int,
                    eta: float, noise: float) -> Tensor:
    """``count`` steps of Eq. 9, x <- x - eta grad V(x) + nu xi, with the given draws xi
    (``None``: nu = 0, no noise term)."""
    for i in range(count):
        x = x - eta * gradient(x)
        if xis is not None:
            x = x + noise * xis[i]
    return x


def _autograd_steps(potential: Potential, bf16: bool, x: Tensor, xis: Sequence[Tensor] | None, count: int,
                    eta: float, noise: float) -> Tensor:
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
    """``fn`` compiled once per (route, backend, mode) for the process."""
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


class RatioPotential:
    """V(x) = f'(r_theta(x)) for the pairing ``objective`` (Eq. 9 with Eq. 22-24): a callable
    potential whose network and objective the routes can see (for the hand-derived MLP gradient)."""

    def __init__(self, net: nn.Module, objective: Objective):
        self.net, self.objective = net, objective

    def __call__(self, x: Tensor) -> Tensor:
        return self.objective.f_prime(self.net(x))


def ratio_potential(net: nn.Module, objective: Objective) -> Potential:
    """V(x) = f'(r_theta(x)) for the pairing ``objective`` (Eq. 9 with Eq. 22-24)."""
    return RatioPotential(net, objective)
