"""flow.eta_scaling: one preset, the same step near r = 1 for every pairing."""

import pytest
import torch

from fdrl.config import ConfigError, load_config
from fdrl.objectives import OBJECTIVES, get_objective, scaled_step_size


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_curvature_is_the_derivative_of_f_prime_in_log_r_at_one(name):
    objective = get_objective(name)
    log_r = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(objective.f_prime_of_log_ratio(log_r).sum(), log_r)
    assert float(grad) == pytest.approx(objective.curvature)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_curvature_scaling_equalises_the_step_near_convergence(name):
    objective = get_objective(name)
    assert scaled_step_size(0.05, "curvature", objective) * objective.curvature == pytest.approx(0.1)
    assert scaled_step_size(0.05, "none", objective) == 0.05


def test_the_swissroll_preset_scales_eta_per_pairing():
    etas = {o: load_config("swissroll", [f"objective={o}"]).step_size() for o in OBJECTIVES}
    assert etas == pytest.approx({"lsif-chi2": 0.05, "lr-kl": 0.1, "lr-js": 0.2, "lr-logd": 0.2})
    with pytest.raises(ConfigError, match="flow.eta_scaling"):
        load_config("swissroll", ["flow.eta_scaling=huge"])
