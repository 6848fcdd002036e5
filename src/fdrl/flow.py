"""The particle flow of Eq. 9 and the potentials that drive it.

One Euler-Maruyama step of the stale gradient flow (Eq. 5) is

    x_{k+1} = x_k - eta * grad_x V(x_k) + nu * xi_k,      xi_k ~ N(0, I),          (Eq. 9)

where the potential V(x) is f'(r_theta(x)) for plain FDRL, and anything else (a sum with a
classifier term for conditional generation, Eq. 31) for compositions. ``flow`` knows nothing
about networks: a potential is any callable mapping a batch to one scalar per sample.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from fdrl.objectives import Objective

Potential = Callable[[Tensor], Tensor]


def potential_gradient(potential: Potential, x: Tensor) -> Tensor:
    """grad_x of sum_i V(x_i): per-sample gradients, since samples do not interact."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        value = potential(x)
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
    generator: torch.Generator | None = None,
    trajectory: list[Tensor] | None = None,
    record_every: int = 1,
) -> Tensor:
    """Run ``steps`` steps of Eq. 9 from ``x`` and return the final particles.

    ``noise`` is nu, the multiplier of a standard normal draw (App. F uses 1e-2). Noise comes
    from ``generator`` so a seed fixes the whole flow. No graph survives a step, so memory does
    not grow with ``steps``. If ``trajectory`` is a list, ``x`` at step 0 and every
    ``record_every`` steps (and at the last step) is appended to it, detached, on the CPU.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if record_every < 1:
        raise ValueError(f"record_every must be >= 1, got {record_every}")
    x = x.detach().clone()
    if trajectory is not None:
        trajectory.append(x.cpu())
    for k in range(1, steps + 1):
        grad = potential_gradient(potential, x)
        x = x - eta * grad
        if noise:
            x = x + noise * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if trajectory is not None and (k % record_every == 0 or k == steps):
            trajectory.append(x.cpu())
    return x


@contextlib.contextmanager
def frozen(net: nn.Module) -> Iterator[nn.Module]:
    """Freeze ``net`` for a flow: no parameter gradients, eval mode, weights parametrised once.

    Eval mode stops spectral norm's power iteration from updating its buffers during a flow,
    and ``parametrize.cached`` computes each normalised weight once for the whole flow rather
    than once per step. Everything is restored on exit.
    """
    was_training = net.training
    requires = [p.requires_grad for p in net.parameters()]
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        with parametrize.cached():
            yield net
    finally:
        for p, r in zip(net.parameters(), requires):
            p.requires_grad_(r)
        net.train(was_training)


def ratio_potential(net: nn.Module, objective: Objective) -> Potential:
    """V(x) = f'(r_theta(x)) for the pairing ``objective`` (Eq. 9 with Eq. 22-24)."""

    def potential(x: Tensor) -> Tensor:
        return objective.f_prime(net(x))

    return potential
