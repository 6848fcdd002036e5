"""Which flow route (:data:`fdrl.flow.ROUTES`) runs for which estimator, device and switches, as
:func:`fdrl.flow.plan_flow` decides it on this machine; docs/flow-routes.md shows the table
this prints:

    python -m fdrl.route_table
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from fdrl.config import FlowSwitches
from fdrl.flow import FlowOptions, frozen, plan_flow, ratio_potential
from fdrl.nets import build_estimator
from fdrl.objectives import get_objective

#: the estimator families and switch settings :func:`route_table` lists, as (estimator, switches)
ROUTE_TABLE_CASES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("mlp", {}), ("mlp", {"cpu_kernel": True}), ("mlp", {"cpu_kernel": False}),
    ("mlp", {"cpu_kernel": False, "compile": False}), ("mlp", {"autocast_bf16": True}),
    ("mlp", {"spectral_norm_power": "per_step"}), ("resnet32", {}), ("resnet32", {"compile": True}),
)


def route_table(devices: Sequence[str] = ("cpu", "cuda"), batch: int = 256) -> list[dict[str, str]]:
    """Which route each estimator family takes on each device under each switch setting of
    :data:`ROUTE_TABLE_CASES` (the rest at their defaults), as :func:`plan_flow` decides it on
    this machine for a batch of ``batch`` particles (the kernel's steps per call depend on it). A ``cpu_kernel`` of null is measured per flow shape: its row gives both outcomes.
    Compositions (guided potentials) take the autograd row of their device, since only f'(r_theta)
    of an MLP has another route. Rows: estimator, device, switches, route."""
    rows = []
    for device in devices:
        for estimator, asked in ROUTE_TABLE_CASES:
            shape = (2,) if estimator == "mlp" else (3, 32, 32)
            net = build_estimator(estimator, shape, **({"width": 8, "depth": 1} if estimator == "mlp" else
                                                       {"width": 0.0625}))
            options = FlowOptions.for_device(device, FlowSwitches(**asked), estimator)
            # particles on the "meta" device stand for another device's without one: no data, and
            # the kernel, which runs CPU particles only, refuses them as it would CUDA ones
            x = torch.zeros(batch, *shape, device="cpu" if device == "cpu" else "meta")
            potential = ratio_potential(net, get_objective("lsif-chi2"))
            with frozen(net, options):
                if options.cpu_kernel is None:
                    plans = [plan_flow(potential, x, dataclasses.replace(options, cpu_kernel=pin))
                             for pin in (True, False)]
                    route = " if measured faster, else ".join(dict.fromkeys(p.describe() for p in plans))
                else:
                    route = plan_flow(potential, x, options).describe()
            switches = ", ".join(f"{k}={v}" for k, v in asked.items()) or "defaults"
            rows.append({"estimator": estimator, "device": device, "switches": switches, "route": route})
    return rows


def route_table_markdown(rows: list[dict[str, str]] | None = None) -> str:
    """:func:`route_table`'s rows (default: computed now) as a Markdown table."""
    rows = route_table() if rows is None else rows
    lines = ["| estimator | device | switches | route |", "|---|---|---|---|"]
    lines += [f"| {r['estimator']} | {r['device']} | {r['switches']} | {r['route']} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(route_table_markdown())
