"""Which Bregman objective x f-divergence pairings exist (App. C), without PyTorch.

The names, the pairings the paper rules out and why, and each divergence's curvature
d f'(r) / d log r at r = 1 (Table 2). :mod:`fdrl.objectives` holds the maths; this module is
what configuration checks and the command line need, so that `fdrl config` and `fdrl --help`
start without importing torch.
"""

from __future__ import annotations

#: name -> (Bregman objective, f-divergence): LSIF with Pearson-chi2, LR with KL, JS, logD.
PAIRINGS: dict[str, tuple[str, str]] = {
    "lsif-chi2": ("lsif", "chi2"),
    "lr-kl": ("lr", "kl"),
    "lr-js": ("lr", "js"),
    "lr-logd": ("lr", "logd"),
}

#: d f'(r) / d log r at r = 1 (Table 2): 2 for Pearson-chi2, 1 for KL, 1/2 for JS and logD.
CURVATURE: dict[str, float] = {"chi2": 2.0, "kl": 1.0, "js": 0.5, "logd": 0.5}

_WHY_REFUSED = {
    "lsif": "LSIF's network outputs r itself, which may be <= 0, so the log-ratio divergences "
    "(kl, js, logd) would take the log of an unconstrained output (App. C)",
    "lr": "LR's network outputs log r; Pearson-chi2 needs exp of it, the unstable path App. C/D avoid",
}

ETA_SCALINGS = ("none", "curvature")


def check_pairing(name: str) -> str:
    """The canonical name of a pairing, e.g. ``"LSIF-chi2"`` -> ``"lsif-chi2"``; a ValueError
    saying why for anything the paper rules out or does not know."""
    key = name.strip().lower()
    if key in PAIRINGS:
        return key
    valid = ", ".join(PAIRINGS)
    bregman, _, divergence = key.partition("-")
    if bregman in _WHY_REFUSED and divergence in CURVATURE:
        raise ValueError(f"objective '{name}' is not a valid pairing: {_WHY_REFUSED[bregman]}; choose one of: {valid}")
    raise ValueError(f"unknown objective '{name}'; choose one of: {valid}")


def scaled_step_size(eta: float, scaling: str, objective: str) -> float:
    """The flow's step size. ``scaling="curvature"`` reads ``eta`` as the step for a pairing of
    curvature 2 (LSIF-chi2) and gives eta * 2 / curvature, so one preset takes the same step near
    r = 1 with every pairing; ``"none"`` uses ``eta`` as given."""
    if scaling not in ETA_SCALINGS:
        raise ValueError(f"flow.eta_scaling must be one of {', '.join(ETA_SCALINGS)}, got '{scaling}'")
    if scaling == "none":
        return eta
    name = objective if isinstance(objective, str) else objective.name
    return eta * 2.0 / CURVATURE[PAIRINGS[check_pairing(name)][1]]
