"""The particle flow of Eq. 9 and the potentials that drive it.

One Euler-Maruyama step of the stale gradient flow (Eq. 5) is

    x_{k+1} = x_k - eta * grad_x V(x_k) + nu * xi_k,      xi_k ~ N(0, I),          (Eq. 9)

where the potential V(x) is f'(r_theta(x)) for plain FDRL, and anything else (a sum with a
classifier term for conditional generation, Eq. 31) for compositions. ``flow`` knows nothing
about networks: a potential is any callable mapping a batch to one scalar per sample.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from fdrl.objectives import Objective

Potential = Callable[[Tensor], Tensor]
Generators = torch.Generator | Sequence[torch.Generator] | None

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class FlowOptions:
    """Switches of the flow's fast path; every one leaves the maths of Eq. 9 unchanged.

    * ``channels_last``: 4-D particles (and so the input gradient) in ``torch.channels_last``;
      pair it with a convolutional estimator converted by :func:`prepare_estimator`.
    * ``autocast_bf16``: the estimator's forward and backward under bf16 autocast (CUDA);
      the particles, the gradient and the update stay in fp32.
    * ``tf32``: allow TF32 matmuls and convolutions during the flow (Ampere and later).
    * ``compile``: one flow step (input gradient via ``torch.func.grad`` and the update)
      compiled with ``torch.compile(mode=compile_mode)``; falls back to eager with a warning
      if compilation fails.

    CUDA graphs are not captured by hand: each step draws its noise from a caller-owned
    ``torch.Generator`` and evaluates an autograd input gradient, which a manual capture would
    have to register and warm up; ``compile_mode="reduce-overhead"`` gets CUDA graphs through
    ``torch.compile`` instead (the noise is drawn outside the compiled region), untested here.

    ``FlowOptions()`` (all off) is the plain path; :meth:`for_device` gives the defaults.
    """

    channels_last: bool = False
    autocast_bf16: bool = False
    tf32: bool = False
    compile: bool = False
    compile_mode: str = "default"

    @classmethod
    def for_device(
        cls,
        device: str | torch.device,
        channels_last: bool | None = None,
        autocast_bf16: bool | None = None,
        tf32: bool = True,
        compile: bool | None = None,
        compile_mode: str = "default",
    ) -> "FlowOptions":
        """The defaults: TF32 on; channels_last, bf16 autocast and ``torch.compile`` on CUDA only
        (``None``). On the CPU ``compile=True`` pays for MLP estimators (2.05-2.13x on the
        swiss-roll benchmark) but needs a C++ compiler and recompiles per batch shape, so it is
        opt-in; a channels_last training backward of the spectral-norm + self-attention Cat2dog
        estimator was seen to crash the process (double free) with torch 2.14."""
        cuda = torch.device(device).type == "cuda"
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got '{compile_mode}'")
        return cls(
            channels_last=cuda if channels_last is None else channels_last,
            autocast_bf16=cuda if autocast_bf16 is None else (autocast_bf16 and cuda),
            tf32=tf32 and cuda,
            compile=cuda if compile is None else compile,
            compile_mode=compile_mode,
        )


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


_COMPILED: dict[tuple[str, str], Callable] = {}
#: the torch.compile backend of the flow step (tests use "aot_eager", which needs no compiler)
COMPILE_BACKEND = "inductor"


def _grad_step(potential: Potential, x: Tensor, xi: Tensor, eta: float, noise: float, bf16: bool) -> Tensor:
    def total(y: Tensor) -> Tensor:
        with torch.autocast(y.device.type, dtype=torch.bfloat16, enabled=bf16):
            return potential(y).float().sum()

    return x - eta * torch.func.grad(total)(x) + noise * xi


def _compiled_step(mode: str) -> Callable:
    key = (COMPILE_BACKEND, mode)
    if key not in _COMPILED:
        options = {"mode": mode} if COMPILE_BACKEND == "inductor" else {}
        _COMPILED[key] = torch.compile(_grad_step, backend=COMPILE_BACKEND, dynamic=False, **options)
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
    path (:class:`FlowOptions`); ``None`` is the plain path.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if record_every < 1:
        raise ValueError(f"record_every must be >= 1, got {record_every}")
    x = _layout(x.detach().clone(), options)
    if trajectory is not None:
        trajectory.append(x.cpu())
    bf16 = options is not None and options.autocast_bf16
    step = _compiled_step(options.compile_mode) if options is not None and options.compile else None
    with _tf32(options is not None and options.tf32):
        for k in range(1, steps + 1):
            if step is not None:
                xi = _layout(_noise(x, generator), options) if noise else torch.zeros_like(x)
                try:
                    with torch.no_grad():
                        x = step(potential, x, xi, eta, noise, bf16)
                except Exception as err:  # no compiler, unsupported op, ...: the eager path
                    warnings.warn(f"torch.compile of the flow step failed ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''}); running eagerly")
                    step = None
                    x = x - eta * potential_gradient(potential, x, bf16) + noise * xi
            else:
                grad = potential_gradient(potential, x, bf16)
                x = x - eta * grad
                if noise:
                    x = x + noise * _layout(_noise(x, generator), options)
            if trajectory is not None and (k % record_every == 0 or k == steps):
                trajectory.append(x.cpu())
    return x


@contextlib.contextmanager
def frozen(net: nn.Module) -> Iterator[nn.Module]:
    """Freeze ``net`` for a flow: no parameter gradients, eval mode, weights parametrised once,
    narrow-input linear weights laid out column-major on the CPU.

    Eval mode stops spectral norm's power iteration from updating its buffers during a flow,
    and ``parametrize.cached`` computes each normalised weight once for the whole flow rather
    than once per step: the cache is filled on entry, outside any autograd or ``torch.func``
    transform. Everything is restored on exit.
    """
    was_training = net.training
    requires = [p.requires_grad for p in net.parameters()]
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    relaid = _column_major_narrow_weights(net)
    try:
        with parametrize.cached():
            with torch.no_grad():
                for module in net.modules():
                    if parametrize.is_parametrized(module):
                        for name in module.parametrizations:
                            getattr(module, name)
            yield net
    finally:
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


def ratio_potential(net: nn.Module, objective: Objective) -> Potential:
    """V(x) = f'(r_theta(x)) for the pairing ``objective`` (Eq. 9 with Eq. 22-24)."""

    def potential(x: Tensor) -> Tensor:
        return objective.f_prime(net(x))

    return potential
