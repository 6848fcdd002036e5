"""Algorithm 1 end to end: the trainer, checkpoints, exact resume, sampling from a run."""

import json

import pytest
import torch

from fdrl import FDRL, Trainer, load_config
from fdrl.evaluate import energy_distance
from fdrl.nets import MLP
from fdrl.objectives import get_objective
from fdrl.priors import GaussianPrior
from fdrl.data import build_data
from fdrl.train import training_step

FAST = ["flow.steps=5", "flow.refine_steps=2", "train.batch_size=64", "train.log_every=5",
        "train.sample_every=1000", "train.sample_n=200", "model.params.width=32", "model.params.depth=2", "train.ema=0.9"]


def _params(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.net.parameters()])


def _ema_params(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.ema.parameters()])


def test_short_training_moves_particles_toward_the_data():
    """Algorithm 1 from N(0, 0.1 I) to N(3 1, 0.1 I): the flowed particles end near p."""
    torch.manual_seed(0)
    objective = get_objective("lsif-chi2")
    net = MLP((2,), width=64, depth=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    prior = GaussianPrior.isotropic([0.0, 0.0], 0.1)
    data = build_data("gaussian", mean=[3.0, 3.0], variance=0.1)
    for step in range(300):
        out = training_step(net, objective, opt, data.batch(step, 128, 0), prior.sample(128),
                            20, 0.01, 0.01)
    start = torch.linalg.norm(prior.sample(1000).mean(0) - 3.0)
    end = torch.linalg.norm(out.particles.mean(0) - 3.0)
    assert start > 4.0 and end < 0.6, (float(start), float(end))


def test_trainer_on_swissroll_beats_the_prior(tmp_path):
    config = load_config("swissroll", FAST + ["train.steps=150", "train.lr=2e-3", "flow.eta=0.1",
                                              "flow.steps=20", "train.checkpoint_every=50"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    trainer.fit()
    metrics = trainer.evaluate(1000)
    assert metrics["energy_distance_ratio"] < 0.4, metrics
    run = tmp_path / "run"
    for name in ("config.yaml", "prior.json", "prior.safetensors", "metrics.jsonl", "metrics.json"):
        assert (run / name).exists(), name
    assert list((run / "samples").glob("*.png")) and list((run / "tb").iterdir())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "loss" in r]
    assert {"loss", "r_data", "r_particles", "lr", "steps_per_s"} <= set(logged[-1])
    assert len(list((run / "checkpoints").glob("ckpt_*.pt"))) == config.train.keep_checkpoints


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path):
    """Across a learning-rate decay step too (decay at step 15; interruption at 10)."""
    common = FAST + ["train.lr_decay_at=[15]", "train.checkpoint_every=10", "train.seed=3"]
    full = Trainer(load_config("swissroll", common + ["train.steps=20"]), tmp_path / "full", progress=False)
    full.fit()
    part = Trainer(load_config("swissroll", common + ["train.steps=10"]), tmp_path / "part", progress=False)
    part.fit()
    resumed = Trainer(load_config("swissroll", common + ["train.steps=20"]), tmp_path / "part", progress=False)
    resumed.fit()
    assert resumed.step == 20
    assert torch.equal(_params(full), _params(resumed))
    assert torch.equal(_ema_params(full), _ema_params(resumed))
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(full.optimizer.param_groups[0]["lr"])


def test_fdrl_load_samples_with_ema_weights_and_is_seeded(tmp_path):
    config = load_config("swissroll", FAST + ["train.steps=10", "train.checkpoint_every=10"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    trainer.fit()
    model = FDRL.load(tmp_path / "run")
    assert torch.equal(torch.cat([p.flatten() for p in model.estimator.parameters()]), _ema_params(trainer))
    a, b = model.sample(50, seed=1), model.sample(50, seed=1)
    assert a.shape == (50, 2) and torch.equal(a, b)
    assert not torch.equal(a, model.sample(50, seed=2))
    saved = model.save(tmp_path / "saved")
    again = FDRL.load(saved)
    assert torch.equal(again.sample(20, seed=4), model.sample(20, seed=4))


def test_sampling_uses_k_plus_kappa_steps_by_default(tmp_path):
    config = load_config("swissroll", FAST + ["train.steps=5", "train.checkpoint_every=5"])
    Trainer(config, tmp_path / "run", progress=False).fit()
    model = FDRL.load(tmp_path / "run")
    default = model.sample(30, seed=0)
    explicit = model.sample(30, seed=0, steps=config.flow.steps + config.flow.refine_steps)
    shorter = model.sample(30, seed=0, steps=config.flow.steps)
    assert torch.equal(default, explicit) and not torch.equal(default, shorter)


def test_energy_distance_is_zero_for_identical_and_positive_for_shifted():
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    y = torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
    assert abs(energy_distance(x, y)) < 0.02
    assert energy_distance(x, y + 1.0) > 0.5
