"""Shared pieces of the benchmarks: the naive reference flow, timing, matmul peak, FLOP counts."""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from fdrl.flow import FlowOptions, flow, frozen, ratio_potential
from fdrl.objectives import Objective


def naive_flow(net: nn.Module, objective: Objective, x: Tensor, steps: int, eta: float, noise: float,
               generator: torch.Generator | None = None) -> Tensor:
    """Eq. 9 as a naive implementation writes it: parameters require grad (training mode,
    spectral norm recomputed every call), backward(retain_graph=True) into x.grad, no
    channels_last, fp32 eager."""
    x = x.detach().clone()
    for _ in range(steps):
        x.requires_grad_(True)
        value = objective.f_prime(net(x)).sum()
        value.backward(retain_graph=True)
        x = (x - eta * x.grad + noise * torch.randn(x.shape, generator=generator, dtype=x.dtype)).detach()
    net.zero_grad(set_to_none=True)
    return x


def fast_flow(net: nn.Module, objective: Objective, x: Tensor, steps: int, eta: float, noise: float,
              generator: torch.Generator | None = None, options: FlowOptions | None = None) -> Tensor:
    with frozen(net):
        return flow(x, ratio_potential(net, objective), steps, eta, noise, generator, options=options)


def timed(fn, repeat: int = 3, warmup: int = 1) -> float:
    """Best-of-``repeat`` wall time in seconds (synchronising CUDA)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(device: str = "cpu", n: int = 1024, dtype=torch.float32) -> float:
    """The machine's achieved fp32 (or ``dtype``) matmul GFLOP/s on n x n matrices."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 3 if device == "cpu" else 50
    seconds = timed(lambda: [a @ b for _ in range(reps)], repeat=3)
    return 2 * n**3 * reps / seconds / 1e9


def flow_step_flops(net: nn.Module, objective: Objective, x: Tensor) -> int:
    """FLOPs of one flow step (forward + input gradient), counted by torch.utils.flop_counter."""
    x = x.detach().clone().requires_grad_(True)
    with frozen(net), FlopCounterMode(display=False) as counter:
        # .backward(inputs=...) rather than autograd.grad: the counter's module hooks refuse the latter
        objective.f_prime(net(x)).sum().backward(inputs=[x])
    return counter.get_total_flops()
