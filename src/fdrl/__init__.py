"""fdrl: Flow-Guided Density Ratio Learning (Heng, Ansari and Soh).

The library in one breath: an :class:`Objective` (Bregman loss + f-divergence) defines the
potential f'(r_theta(x)); :func:`flow` moves particles along it (Eq. 9); :class:`Trainer`
runs Algorithm 1; :class:`FDRL` samples with Algorithm 2; :func:`fit` trains on your own data
(an array, a tensor, a dataset or a path) and returns the model.

The names below are imported on first use, so ``import fdrl`` (and the ``fdrl`` command's
start-up) does not pay for PyTorch until something needs it.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "Config": "fdrl.config", "ConfigError": "fdrl.config", "load_config": "fdrl.config",
    "flow": "fdrl.flow", "frozen": "fdrl.flow", "ratio_potential": "fdrl.flow",
    "FDRL": "fdrl.model",
    "OBJECTIVES": "fdrl.objectives", "Objective": "fdrl.objectives", "get_objective": "fdrl.objectives",
    "DatasetPrior": "fdrl.priors", "GaussianPrior": "fdrl.priors", "Prior": "fdrl.priors",
    "StandardNormalPrior": "fdrl.priors", "UniformPrior": "fdrl.priors", "load_prior": "fdrl.priors",
    "Trainer": "fdrl.train", "training_step": "fdrl.train",
    "fit": "fdrl.fitting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fdrl' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


class _Package(types.ModuleType):
    """``fdrl.flow`` is the function, as with eager imports: importing the submodule
    ``fdrl.flow`` must not rebind the package attribute to the module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType) and value.__name__ == _EXPORTS[name]:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
