"""The flow of Eq. 9."""

import torch

from fdrl.flow import flow, frozen, potential_gradient, ratio_potential
from fdrl.nets import MLP
from fdrl.objectives import get_objective


def test_one_step_equals_hand_computation_for_a_quadratic_potential():
    a = torch.tensor([0.5, 2.0])
    x0 = torch.tensor([[1.0, -1.0], [0.3, 0.7], [-2.0, 4.0]])
    eta, nu = 0.1, 0.05

    def potential(x):
        return 0.5 * (a * x**2).sum(1)

    x1 = flow(x0, potential, 1, eta, nu, generator=torch.Generator().manual_seed(7))
    xi = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    expected = x0 - eta * a * x0 + nu * xi
    torch.testing.assert_close(x1, expected)


def test_noise_is_fixed_by_the_generator_seed():
    net = MLP((2,), width=16, depth=2)
    potential = ratio_potential(net, get_objective("lr-kl"))
    x0 = torch.randn(32, 2)
    runs = [flow(x0, potential, 5, 0.1, 0.1, torch.Generator().manual_seed(3)) for _ in range(2)]
    other = flow(x0, potential, 5, 0.1, 0.1, torch.Generator().manual_seed(4))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], other)


def test_trajectory_records_every_n_steps_and_the_last():
    x0 = torch.zeros(4, 2)
    trajectory = []
    flow(x0, lambda x: x.sum(1), 10, 1.0, 0.0, trajectory=trajectory, record_every=4)
    assert [float(t[0, 0]) for t in trajectory] == [0.0, -4.0, -8.0, -10.0]


def test_gradient_is_per_sample():
    net = MLP((3,), width=8, depth=2)
    potential = ratio_potential(net, get_objective("lsif-chi2"))
    x = torch.randn(5, 3)
    batched = potential_gradient(potential, x)
    single = torch.cat([potential_gradient(potential, x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, single)


def test_flow_gives_parameters_no_gradient_and_leaves_spectral_norm_buffers_alone():
    net = MLP((2,), width=16, depth=2, spectral_norm=True)
    net(torch.randn(8, 2))  # a training-mode forward runs the power iteration once
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    with frozen(net):
        flow(torch.randn(16, 2), ratio_potential(net, get_objective("lsif-chi2")), 20, 0.1, 0.01)
    assert all(p.grad is None for p in net.parameters())
    assert all(p.requires_grad for p in net.parameters())
    assert net.training
    for k, v in net.named_buffers():
        assert torch.equal(v, buffers[k]), k


def test_flow_keeps_no_graph_between_steps():
    net = MLP((2,), width=16, depth=2)
    with frozen(net):
        x = flow(torch.randn(8, 2), ratio_potential(net, get_objective("lr-js")), 3, 0.1, 0.0)
    assert x.grad_fn is None and not x.requires_grad
