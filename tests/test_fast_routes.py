"""Every fast route of the training step that runs on the CPU against the plain fp32 path.

For each ResNet (Table 3's and the digit-sized ones; small width, spectral norm and
self-attention on) and the MLP,
``N`` iterations of :func:`fdrl.train.training_step` (Algorithm 1: a K-step flow of Eq. 9,
then one update of the Bregman loss, Eq. 11) from the same weights, batches and noise, with
the plain options (``FlowOptions()``, everything off) and with each CPU-capable switch:
``torch.compile`` of the flow steps, channels_last, bf16 autocast of the estimator in the flow,
and all of them together. The MLP's routes are the fused C++ kernel (``fdrl.native``, the CPU
default for MLPs no wider in input than in width), the CPU default for this wider-input one
(closed-form gradient, compiled, several steps per call), compile of the autograd step, bf16,
and compile with bf16.

Tolerances (docs/performance.md, "Which switch is on where", lists the measured differences):

* fp32 routes (compile, channels_last, the closed form, the C++ kernel): the same maths in another order of
  float operations, so the particles (values of order 1) agree to 1e-5, the losses to 1e-6
  and the parameters to 1e-6 (measured: at most 1.2e-7, 4.5e-8 and 1.5e-8; compile alone: 0).
* bf16 routes: the estimator's forward and input gradient keep 8 significant bits, so the flow's
  input gradient itself moves, by more than 10% (relative norm) on these networks at
  initialisation in the draws tried. No float bound applies; the tolerance is a fraction of what the plain route changed, 5% of max |x_K - x_0|
  for particles, of max |theta_N - theta_0| for parameters and of max |loss| for losses
  (measured: at most 1.9%, resnet8's particles; 0.74% on the Table-3 nets), which a wrong route
  (a sign, a lost eta, an update in bf16 that drops small steps) exceeds by far, since it
  differs by the whole change.

The optimiser is SGD, not Adam: Adam's first step moves every parameter by about lr whatever the
gradient's size, so a rounding-level gradient difference on a near-zero component would become
a whole step and a parameter comparison would say nothing. The torch.compile backend is
``aot_eager`` for the ResNets (dynamo's graph capture and functionalisation of
``torch.func.grad``, without inductor's C++ code generation, which the CPU never runs for a
ResNet by default); the MLP's CPU default runs with inductor, as in ``fdrl train``.
"""

from __future__ import annotations

import copy
import importlib
import warnings

import pytest
import torch

from fdrl.flow import FlowOptions, prepare_estimator
from fdrl.nets import build_estimator
from fdrl.nets.resnet import ARCHITECTURES
from fdrl.objectives import get_objective
from fdrl.train import training_step

flow_module = importlib.import_module("fdrl.flow")

N, K, BATCH, ETA, NU, LR = 2, 2, 2, 0.5, 0.01, 0.1
#: the MLP and every ResNet at the narrowest width whose channels_last parameter backward runs on
#: the CPU (the 64- and 128-pixel ResNets crash torch 2.14's CPU kernel at widths 1/16 and 1/8)
ESTIMATORS = {
    "mlp": ((1, 8, 8), {"width": 32, "depth": 2, "spectral_norm": True}),
    **{arch: ((3, spec.image_size, spec.image_size),
              {"width": 0.0625 if arch == "resnet32" else 0.25, "spectral_norm": True, "self_attention": True})
       for arch, spec in ARCHITECTURES.items()},
}
RESNET_ROUTES = {
    "compile": FlowOptions(compile=True),
    "channels_last": FlowOptions(channels_last=True),
    "bf16": FlowOptions(autocast_bf16=True),
    "all": FlowOptions(compile=True, channels_last=True, autocast_bf16=True),
}
MLP_ROUTES = {
    "cpu_kernel": FlowOptions(cpu_kernel=True),
    "cpu_default": FlowOptions(compile=None, closed_form=True, steps_per_call=K),
    "compile": FlowOptions(compile=True),
    "bf16": FlowOptions(autocast_bf16=True),
    "all": FlowOptions(compile=True, autocast_bf16=True),
}
FP32_TOLERANCE = {"particles": 1e-5, "loss": 1e-6, "parameters": 1e-6}
BF16_FRACTION = 0.05


def _parameters(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def _run(initial, x_data, x_prior, options):
    """N training steps from ``initial``; (last particles, losses, final parameters)."""
    net = prepare_estimator(copy.deepcopy(initial), options)
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    losses = []
    for i in range(N):
        out = training_step(net, get_objective("lsif-chi2"), optimizer, x_data, x_prior, K, ETA, NU,
                            torch.Generator().manual_seed(i), options=options)
        losses.append(out.loss)
    return out.particles.contiguous(), torch.stack(losses), _parameters(net)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_every_cpu_route_of_the_training_step_gives_the_plain_fp32_result(name, monkeypatch):
    from torch._dynamo.utils import counters

    monkeypatch.setattr(flow_module, "COMPILE_BACKEND", "inductor" if name == "mlp" else "aot_eager")
    monkeypatch.setattr(flow_module, "_COMPILED", {})
    torch._dynamo.reset()
    counters.clear()
    shape, params = ESTIMATORS[name]
    torch.manual_seed(0)
    initial = build_estimator(name, shape, **params)
    x_data, x_prior = torch.rand(BATCH, *shape) * 2 - 1, torch.randn(BATCH, *shape) * 0.5
    particles, losses, theta = _run(initial, x_data, x_prior, FlowOptions())
    change = {"particles": float((particles - x_prior).abs().max()), "loss": float(losses.abs().max()),
              "parameters": float((theta - _parameters(initial)).abs().max())}
    for route, options in (MLP_ROUTES if name == "mlp" else RESNET_ROUTES).items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a compile that fell back to eager would warn
            got = dict(zip(("particles", "loss", "parameters"), _run(initial, x_data, x_prior, options)))
        for what, expected in zip(("particles", "loss", "parameters"), (particles, losses, theta)):
            diff = float((got[what] - expected).abs().max())
            bound = BF16_FRACTION * change[what] if options.autocast_bf16 else FP32_TOLERANCE[what]
            print(f"{name} {route} {what}: max |difference| {diff:.2g}, tolerance {bound:.2g}")
            assert diff <= bound, f"{name} {route}: {what} differ by {diff:.3g} > {bound:.3g}"
    assert counters["stats"]["unique_graphs"] >= 1  # the compiled routes compiled
