"""fdrl: Flow-Guided Density Ratio Learning (Heng, Ansari and Soh).

The library in one breath: an :class:`Objective` (Bregman loss + f-divergence) defines the
potential f'(r_theta(x)); :func:`flow` moves particles along it (Eq. 9); :class:`Trainer`
runs Algorithm 1; :class:`FDRL` samples with Algorithm 2.
"""

__version__ = "0.1.0"

from fdrl.config import Config, ConfigError, load_config  # noqa: E402
from fdrl.flow import flow, frozen, ratio_potential  # noqa: E402
from fdrl.model import FDRL  # noqa: E402
from fdrl.objectives import OBJECTIVES, Objective, get_objective  # noqa: E402
from fdrl.priors import (  # noqa: E402
    DatasetPrior,
    GaussianPrior,
    Prior,
    StandardNormalPrior,
    UniformPrior,
    load_prior,
)
from fdrl.train import Trainer, training_step  # noqa: E402

__all__ = [
    "Config", "ConfigError", "DatasetPrior", "FDRL", "GaussianPrior", "OBJECTIVES", "Objective",
    "Prior", "StandardNormalPrior", "Trainer", "UniformPrior", "flow", "frozen", "get_objective",
    "load_config", "load_prior", "ratio_potential", "training_step",
]
