"""The closed-form MLP input gradient and the compiled multi-step flow (issue 12's fast default):
every route gives the plain path's particles within float tolerance."""

import importlib

import pytest
import torch

from fdrl.flow import FlowOptions, flow, frozen, potential_gradient, ratio_potential
from fdrl.nets import MLP
from fdrl.nets.mlp import mlp_input_gradient
from fdrl.objectives import OBJECTIVES, get_objective

flow_module = importlib.import_module("fdrl.flow")  # fdrl.flow the attribute is the function
PAIRINGS = list(OBJECTIVES)


def _flow(net, x0, options, objective, steps=7, generator=None):
    with frozen(net):
        return flow(x0, ratio_potential(net, get_objective(objective)), steps, 0.05, 0.01,
                    generator or torch.Generator().manual_seed(1), options=options)


@pytest.mark.parametrize("objective", PAIRINGS)
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_closed_form_gradient_equals_autograd(objective, spectral_norm):
    """grad_x f'(NN(x)) by hand equals autograd's, for flattened 8x8 inputs and a spectrally
    normalised network (whose cached normalised weights the closed form must use)."""
    torch.manual_seed(0)
    net = MLP((1, 8, 8), width=32, depth=3, spectral_norm=spectral_norm, negative_slope=0.1)
    obj = get_objective(objective)
    x = torch.randn(17, 1, 8, 8, dtype=torch.float64)
    net.double()
    with frozen(net):
        weights, biases = net.weights_and_biases()
        by_hand = mlp_input_gradient(x, weights, biases, net.negative_slope,
                                     lambda out: torch.func.grad(lambda o: obj.f_prime(o).sum())(out))
        reference = potential_gradient(ratio_potential(net, obj), x)
    assert by_hand.shape == x.shape
    torch.testing.assert_close(by_hand, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("objective", PAIRINGS)
def test_closed_form_flow_gives_the_plain_particles(objective):
    torch.manual_seed(0)
    net = MLP((2,), width=16, depth=3)
    x0 = torch.randn(64, 2)
    plain = _flow(net, x0, None, objective)
    closed = _flow(net, x0, FlowOptions(closed_form=True), objective)
    torch.testing.assert_close(closed, plain, rtol=1e-6, atol=1e-6)
    assert not torch.equal(plain, x0)


def test_a_composed_potential_falls_back_to_autograd():
    """The closed form is for f'(r_theta) of an MLP only: any other potential uses autograd."""
    torch.manual_seed(0)
    net = MLP((2,), width=8, depth=1)
    potential = ratio_potential(net, get_objective("lr-kl"))
    x0 = torch.randn(8, 2)

    def composed(x):
        return potential(x) + x.square().sum(1)

    with frozen(net):
        runs = [flow(x0, composed, 3, 0.1, 0.0, options=o) for o in (None, FlowOptions(closed_form=True))]
    torch.testing.assert_close(runs[1], runs[0])


@pytest.mark.parametrize("objective", ["lsif-chi2", "lr-js"])
def test_compiled_multistep_flow_gives_the_plain_particles_and_compiles_once(objective, monkeypatch):
    """Closed form compiled 4 steps per call (aot_eager: no C++ compiler needed), 10 steps (two
    compiled calls and an eager remainder of 2), sharded noise generators; a new network of the
    same shape reuses the compiled graph (weights are inputs, not guarded module state)."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(flow_module, "COMPILE_BACKEND", "aot_eager")
    monkeypatch.setattr(flow_module, "_COMPILED", {})
    torch._dynamo.reset()
    counters.clear()
    options = FlowOptions(compile=None, closed_form=True, steps_per_call=4)
    for seed in range(3):
        torch.manual_seed(seed)
        net = MLP((2,), width=16, depth=2, spectral_norm=seed == 2)
        x0 = torch.randn(32, 2)

        def gens():
            return [torch.Generator().manual_seed(s) for s in (5, 6)]

        fast = _flow(net, x0, options, objective, steps=10, generator=gens())
        plain = _flow(net, x0, None, objective, steps=10, generator=gens())
        torch.testing.assert_close(fast, plain, rtol=1e-6, atol=1e-6)
        if seed == 1:
            assert counters["stats"]["unique_graphs"] == 1


def test_auto_compile_leaves_other_potentials_eager(monkeypatch):
    """compile=None (the CPU default) compiles the closed-form steps only."""
    calls = []
    monkeypatch.setattr(flow_module, "_compiled", lambda kind, fn, mode: calls.append(kind) or fn)
    torch.manual_seed(0)
    net = MLP((2,), width=8, depth=1)
    x0 = torch.randn(8, 2)
    auto = FlowOptions(compile=None, closed_form=True, steps_per_call=2)
    with frozen(net):
        flow(x0, ratio_potential(net, get_objective("lr-kl")), 4, 0.1, 0.01, options=auto)
        flow(x0, lambda x: net(x).sum() * 0 + x.sum(1), 4, 0.1, 0.01, options=auto)
    assert calls == ["closed_form"]


def test_trajectory_is_recorded_step_by_step_on_the_compiled_route(monkeypatch):
    monkeypatch.setattr(flow_module, "COMPILE_BACKEND", "aot_eager")
    monkeypatch.setattr(flow_module, "_COMPILED", {})
    torch.manual_seed(0)
    net = MLP((2,), width=8, depth=1)
    x0 = torch.randn(8, 2)
    runs = []
    for options in (None, FlowOptions(compile=None, closed_form=True, steps_per_call=4)):
        trajectory: list[torch.Tensor] = []
        with frozen(net):
            flow(x0, ratio_potential(net, get_objective("lr-kl")), 5, 0.1, 0.01, torch.Generator().manual_seed(0),
                 trajectory=trajectory, record_every=2, options=options)
        runs.append(torch.stack(trajectory))
    assert runs[0].shape[0] == 4  # steps 0, 2, 4, 5
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-6, atol=1e-6)
