"""Shared pieces of the benchmarks: the official-style reference (the authors' algorithm as
released), timing, matmul peak, FLOP counts."""

from __future__ import annotations

import copy
import time

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from fdrl.flow import FlowOptions, flow, frozen, prepare_estimator, ratio_potential
from fdrl.objectives import Objective
from fdrl.train import ema_decay, training_step, update_ema


def official_style_flow(net: nn.Module, objective: Objective, x: Tensor, steps: int, eta: float, noise: float,
                        generator: torch.Generator | None = None) -> Tensor:
    """Eq. 9 the way the authors' released code runs it (ajrheng/FDRL, ``src/model_utils.py``),
    written here from that description: the estimator as it stands (train mode, parameters
    requiring grad, spectral norm recomputed at every forward), the particles a leaf tensor that
    requires grad, the input gradient alone by ``torch.autograd.grad(f'.sum(), [x],
    retain_graph=True)``, and an in-place update of ``x.data``. Their update subtracts
    ``eta * grad + nu * xi``; here ``+ nu * xi`` is added (xi is symmetric, so the same law, and
    the same operations), which makes the particles comparable with fdrl's for the same draws."""
    x_k = x.detach().clone().requires_grad_(True)
    for _ in range(steps):
        value = objective.f_prime(net(x_k))
        (grad,) = torch.autograd.grad(value.sum(), [x_k], retain_graph=True)
        x_k.data -= eta * grad - noise * torch.randn(x_k.shape, generator=generator, dtype=x_k.dtype,
                                                     device=x_k.device)
    return x_k.detach()


class OfficialStyleIteration:
    """Algorithm 1 as the authors' training loop runs it: the estimator in train mode, the flow
    of :func:`official_style_flow`, separate forwards of the particle and data batches, the
    Bregman loss with its mean ratios read back as Python floats (their logging), Adam, and their
    EMA: every ``state_dict`` entry replaced by ``(1 - mu) * value + mu * shadow``."""

    def __init__(self, net: nn.Module, objective: Objective, optimizer: torch.optim.Optimizer, ema_rate: float):
        self.net, self.objective, self.optimizer, self.mu = net, objective, optimizer, ema_rate
        self.shadow = {name: value.detach().clone() for name, value in net.state_dict().items()}

    def __call__(self, x_data: Tensor, x_prior: Tensor, steps: int, eta: float, noise: float,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One iteration; returns (flowed particles, loss)."""
        self.net.train()
        x_k = official_style_flow(self.net, self.objective, x_prior, steps, eta, noise, generator)
        out_particles, out_data = self.net(x_k), self.net(x_data)
        loss = self.objective.loss(out_data, out_particles)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        for name, value in self.net.state_dict().items():
            self.shadow[name].data = (1.0 - self.mu) * value.data + self.mu * self.shadow[name].data
        self.logged = (self.objective.ratio(out_particles).mean().item(), self.objective.ratio(out_data).mean().item())
        return x_k, loss.detach()


def fast_flow(net: nn.Module, objective: Objective, x: Tensor, steps: int, eta: float, noise: float,
              generator: torch.Generator | None = None, options: FlowOptions | None = None) -> Tensor:
    with frozen(net, options):
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


def closed_form_op_floor(net: nn.Module, x: Tensor, reps: int = 200) -> dict[str, float]:
    """Seconds per flow step of each operation the closed-form MLP step runs as its own kernel
    (``fdrl.nets.mlp.mlp_input_gradient`` and the update of Eq. 9), each timed alone on ``net``'s
    frozen weights at ``x``'s batch (best of 5 runs of ``reps`` calls), and their sum.

    The sum is what a route that keeps these kernels separate cannot beat: only kernels that fuse
    the LeakyReLU passes into the matrix products could. The output layer is left out (with a
    constant f'', as for LSIF-chi2, the compiled step drops it), so the sum is a lower bound."""
    import torch.nn.functional as F

    def per_call(fn) -> float:
        def run() -> None:
            for _ in range(reps):
                fn()
        return timed(run, repeat=5) / reps

    with frozen(net):
        weights, biases = net.weights_and_biases()
        slope = net.negative_slope
        h = x.reshape(x.shape[0], -1)
        parts = {"matmul_first": 0.0, "matmul_hidden": 0.0, "matmul_input_gradient": 0.0,
                 "leaky_relu": 0.0, "leaky_relu_backward": 0.0}
        for i, (w, b) in enumerate(zip(weights[:-1], biases[:-1])):
            z = torch.addmm(b, h, w.t())
            parts["matmul_first" if i == 0 else "matmul_hidden"] += per_call(lambda: torch.addmm(b, h, w.t()))
            parts["leaky_relu"] += per_call(lambda: F.leaky_relu(z, slope))
            g = torch.randn_like(z)
            parts["leaky_relu_backward"] += per_call(lambda: torch.ops.aten.leaky_relu_backward(g, z, slope, False))
            key = "matmul_input_gradient" if i == 0 else "matmul_hidden"
            parts[key] += per_call(lambda: g @ w)
            h = F.leaky_relu(z, slope)
        x2, xi = x.reshape(x.shape[0], -1), torch.randn_like(x.reshape(x.shape[0], -1))
        parts["update"] = per_call(lambda: x2 - 0.05 * xi + 0.01 * xi)
    return {**parts, "total": sum(parts.values())}


class FdrlIteration:
    """fdrl's iteration under ``options``: ``training_step`` and the Trainer's EMA update."""

    def __init__(self, net, objective, lr: float, ema_rate: float, options: FlowOptions):
        self.net, self.objective, self.options, self.ema_rate = prepare_estimator(net, options), objective, options, ema_rate
        self.optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        self.ema = copy.deepcopy(net).eval()
        self.step = 0

    def __call__(self, x_data, x_prior, steps, eta, noise, generator):
        out = training_step(self.net, self.objective, self.optimizer, x_data, x_prior, steps, eta, noise, generator,
                            options=self.options)
        update_ema(self.ema, self.net, ema_decay(self.ema_rate, self.step))
        self.step += 1
        return out.particles, out.loss
