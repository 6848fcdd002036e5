"""ablate_steps (Fig. 5): one flow scored at several lengths, table + JSON + plot."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from fdrl import FDRL, StandardNormalPrior, get_objective, training_step
from fdrl.evaluate import ablate_steps, energy_distance
from fdrl.nets import MLP

K, ETA, NOISE = 10, 0.2, 0.01


def data(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(n, 2, generator=g) * 0.5 + 2.0


@pytest.fixture(scope="module")
def toy_model() -> FDRL:
    """An FDRL trained for 150 steps of Algorithm 1 to carry N(0, I) to N((2, 2), 0.25 I) in K steps."""
    torch.manual_seed(0)
    net, objective = MLP((2,), width=32, depth=2), get_objective("lsif-chi2")
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    prior, g = StandardNormalPrior((2,)), torch.Generator().manual_seed(0)
    for _ in range(150):
        training_step(net, objective, optimizer, data(128, g), prior.sample(128, g), K, ETA, NOISE, g)
    return FDRL(net, objective, prior, ETA, NOISE, K, refine_steps=5)


def test_ablate_steps_writes_table_json_and_plot(toy_model, tmp_path):
    reference = data(400, torch.Generator().manual_seed(1))
    seen: list[torch.Tensor] = []

    def metric(samples: torch.Tensor) -> float:
        seen.append(samples)
        return energy_distance(samples, reference)

    steps = [10, 0, 5, 15, 5]  # unsorted, with a repeat
    record = ablate_steps(toy_model, steps, metric, n=300, seed=3, out_dir=tmp_path / "abl",
                          metric_name="energy", batch_size=128, info={"checkpoint": "hand-built"})
    lengths = [row["steps"] for row in record["rows"]]
    values = [row["energy"] for row in record["rows"]]
    assert lengths == [0, 5, 10, 15]
    # the flow carries the prior towards the data over the K training steps
    assert values[0] > values[1] > values[2]
    assert values[2] < 0.2 * values[0]

    # each scored set is exactly what model.sample draws for that length and seed
    for length, samples in zip(lengths, seen):
        assert torch.equal(samples, toy_model.sample(300, steps=length, seed=3, batch_size=128))

    out = tmp_path / "abl"
    with open(out / "ablate_steps.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["steps", "energy"]
    assert [int(r[0]) for r in rows[1:]] == lengths
    assert [float(r[1]) for r in rows[1:]] == pytest.approx(values)
    stored = json.loads((out / "ablate_steps.json").read_text())
    assert stored == record
    assert stored["checkpoint"] == "hand-built" and stored["training_steps"] == K and stored["n"] == 300
    assert (out / "ablate_steps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("steps", [[], [-1, 5]])
def test_ablate_steps_rejects_bad_lengths(toy_model, tmp_path, steps):
    with pytest.raises(ValueError, match="flow lengths"):
        ablate_steps(toy_model, steps, lambda s: 0.0, n=10, seed=0, out_dir=tmp_path)
