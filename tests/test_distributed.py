"""Data-parallel training (fdrl.distributed): 2 gloo ranks with batch b each take the same step
as 1 process with batch 2b drawing the union of their data and particles; a torchrun smoke run."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from fdrl import distributed
from fdrl.data.toy import ToyDistribution
from fdrl.flow import FlowOptions
from fdrl.nets import MLP
from fdrl.objectives import get_objective
from fdrl.priors import GaussianPrior
from fdrl.train import training_step

B, SEED, STEP = 32, 5, 3  # global batch, seed, the training step drawn


def _setup():
    torch.manual_seed(0)
    net = MLP((2,), width=32, depth=2)
    return net, torch.optim.Adam(net.parameters(), lr=1e-3)


def _draw(world, ranks):
    data = ToyDistribution("swissroll")
    prior = GaussianPrior.isotropic([0.0, 0.0], 1.0)
    return distributed.draw_step(data, prior, STEP, B, SEED, world, ranks)


def _one_step(net, opt, x_data, x_prior, gen, ddp=None):
    return training_step(net, get_objective("lsif-chi2"), opt, x_data, x_prior, 10, 0.05, 0.01, gen,
                         options=FlowOptions.for_device("cpu"), ddp=ddp)


def _rank(rank, world, init_file, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        net, opt = _setup()
        x_data, x_prior, gen = _draw(world, [rank])
        _one_step(net, opt, x_data, x_prior, gen, ddp=DistributedDataParallel(net))
        torch.save([p.detach() for p in net.parameters()], f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_with_batch_b_take_the_step_of_one_process_with_batch_2b(tmp_path):
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(tmp_path / "params")), nprocs=2, join=True)
    net, opt = _setup()
    before = [p.detach().clone() for p in net.parameters()]
    x_data, x_prior, gens = _draw(2, [0, 1])  # the union of the two ranks' draws
    assert x_data.shape[0] == B and len(gens) == 2
    _one_step(net, opt, x_data, x_prior, gens)
    ranks = [torch.load(tmp_path / f"params.{r}") for r in (0, 1)]
    for p, p0, p1, b in zip(net.parameters(), *ranks, before):
        torch.testing.assert_close(p0, p1, rtol=0, atol=0)  # DDP keeps the ranks identical
        torch.testing.assert_close(p0, p.detach(), rtol=0, atol=1e-6)
        assert not torch.equal(p0, b)  # the step did something


def test_one_rank_draws_what_the_trainer_drew_before_distribution():
    """world 1 draws the same batch, particles and noise stream as the pre-distributed trainer,
    so single-process runs (and their resumes) are unchanged."""
    from fdrl import seeding

    data, prior = ToyDistribution("swissroll"), GaussianPrior.isotropic([0.0, 0.0], 1.0)
    x_data, x_prior, gen = distributed.draw_step(data, prior, STEP, B, SEED, 1, [0])
    assert torch.equal(x_data, data.batch(STEP, B, SEED))
    assert torch.equal(x_prior, prior.sample(B, seeding.generator(SEED, "prior", STEP)))
    assert torch.equal(torch.randn(3, generator=gen), torch.randn(3, generator=seeding.generator(SEED, "flow", STEP)))
    with pytest.raises(ValueError, match="does not split"):
        distributed.draw_step(data, prior, STEP, 33, SEED, 2, [0])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_smoke_run_on_two_cpu_ranks(tmp_path):
    """`torchrun --nproc_per_node=2 fdrl train ...` (gloo): runs, rank 0 alone writes the run
    directory, and a second launch resumes it."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "run"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "fdrl.cli", "train", "swissroll", "--device", "cpu",
           "--out", str(out), "--quiet", "train.steps=4", "train.batch_size=32", "flow.steps=3",
           "train.log_every=2", "train.checkpoint_every=2", "train.sample_every=1000", "train.sample_n=64",
           "train.eval_n=64", "model.params.width=16", "model.params.depth=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=120)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4]  # logged once, by rank 0
    assert (out / "checkpoints").exists()
    state = torch.load(sorted((out / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    assert state["step"] == 4
    subprocess.run([*cmd, "train.steps=6"], check=True, env=env, capture_output=True, timeout=120)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resumed" and r["step"] == 4 for r in records)
    assert records[-1]["step"] == 6
