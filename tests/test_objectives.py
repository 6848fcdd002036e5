"""The Bregman losses (Eq. 18, 21) and the f' forms (Table 2, Eq. 22-24)."""

import math

import pytest
import torch

from fdrl.objectives import OBJECTIVES, get_objective
from table2 import TABLE_2, f_prime


def _gaussian_log_density(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_loss_is_minimised_at_the_true_ratio(name):
    """Scan c * r*(x) for r* = q/p of two 1-D Gaussians: the loss is smallest at c = 1."""
    objective = get_objective(name)
    g = torch.Generator().manual_seed(0)
    n = 400_000
    x_q = 0.0 + 1.0 * torch.randn(n, generator=g, dtype=torch.float64)
    x_p = 0.5 + 1.0 * torch.randn(n, generator=g, dtype=torch.float64)

    def log_ratio(x):
        return _gaussian_log_density(x, 0.0, 1.0) - _gaussian_log_density(x, 0.5, 1.0)

    scales = torch.linspace(0.6, 1.4, 81, dtype=torch.float64)
    losses = []
    for c in scales:
        if objective.outputs_log_ratio:
            out_p, out_q = log_ratio(x_p) + torch.log(c), log_ratio(x_q) + torch.log(c)
        else:
            out_p, out_q = c * torch.exp(log_ratio(x_p)), c * torch.exp(log_ratio(x_q))
        losses.append(float(objective.loss(out_p, out_q)))
    best = float(scales[int(torch.tensor(losses).argmin())])
    assert abs(best - 1.0) <= 0.03, (name, best)


@pytest.mark.parametrize("divergence", list(TABLE_2))
def test_the_reference_table_is_consistent(divergence):
    """The test's own Table 2: f(1) = 0, f convex, and f' is the derivative of f."""
    f, _ = TABLE_2[divergence]
    r = torch.logspace(-3, 3, 50, dtype=torch.float64, requires_grad=True)
    (derivative,) = torch.autograd.grad(f(r).sum(), r)
    torch.testing.assert_close(derivative, f_prime(divergence, r.detach()), rtol=1e-10, atol=1e-10)
    assert float(f(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(0.0, abs=1e-12)
    assert (f_prime(divergence, r.detach()).diff() > 0).all()


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_stable_f_prime_equals_table2(name):
    objective = get_objective(name)
    r = torch.logspace(-6, 6, 200, dtype=torch.float64)
    out = torch.log(r) if objective.outputs_log_ratio else r
    stable = objective.f_prime(out)
    naive = f_prime(objective.divergence, r)
    torch.testing.assert_close(stable, naive, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(objective.f_prime_of_log_ratio(torch.log(r)), naive, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["lr-kl", "lr-js", "lr-logd"])
def test_log_ratio_forms_stay_finite_for_extreme_outputs(name):
    objective = get_objective(name)
    out = torch.tensor([-80.0, -30.0, 0.0, 30.0, 80.0], requires_grad=True)
    value = objective.f_prime(out).sum() + objective.loss(out, out)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(out.grad).all()


def test_lsif_loss_value_by_hand():
    objective = get_objective("lsif-chi2")
    out_p, out_q = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0])
    assert float(objective.loss(out_p, out_q)) == pytest.approx(0.5 * (1 + 9) / 2 - 3.0)


def test_lr_loss_value_by_hand():
    objective = get_objective("lr-kl")
    out_p, out_q = torch.tensor([0.3]), torch.tensor([-1.2])
    r_p, r_q = math.exp(0.3), math.exp(-1.2)
    expected = -math.log(1 / (1 + r_p)) - math.log(r_q / (1 + r_q))  # Eq. 19
    assert float(objective.loss(out_p, out_q)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("bad", ["lsif-kl", "lsif-js", "lr-chi2", "lsif-logd"])
def test_ruled_out_pairing_is_refused_with_valid_names(bad):
    with pytest.raises(ValueError) as info:
        get_objective(bad)
    message = str(info.value)
    assert "not a valid pairing" in message
    assert all(name in message for name in OBJECTIVES)


def test_unknown_objective_lists_valid_names():
    with pytest.raises(ValueError, match="lsif-chi2, lr-kl, lr-js, lr-logd"):
        get_objective("wasserstein")
