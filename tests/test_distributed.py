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
from fdrl.data import build_data
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
    data = build_data("swissroll")
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
        # no rank tears gloo down while the other still talks to it: a rank that destroys the
        # group first can abort its peer ("terminate called without an active exception")
        dist.barrier()
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

    data, prior = build_data("swissroll"), GaussianPrior.isotropic([0.0, 0.0], 1.0)
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


def _tiny_model():
    from fdrl.model import FDRL

    torch.manual_seed(1)
    return FDRL(MLP((2,), width=16, depth=2), "lsif-chi2", GaussianPrior.isotropic([0.0, 0.0], 1.0), eta=0.05,
                noise=0.01, steps=4, refine_steps=1)


def _sample_rank(rank, world, init_file, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ctx = distributed.DistContext(rank, world)
        samples = distributed.sample_sharded(_tiny_model(), 37, ctx, seed=3, batch_size=5)
        assert (samples is None) == (rank != 0)
        if rank == 0:
            torch.save(samples, out)
        dist.barrier()  # as in _rank
    finally:
        dist.destroy_process_group()


def test_shards_of_sample_are_the_one_process_batches():
    model = _tiny_model()
    full = model.sample(23, seed=2, batch_size=4)
    shards = [model.sample(23, seed=2, batch_size=4, shard=(r, 3)) for r in range(3)]
    assert [len(s) for s in shards] == [8, 8, 7]  # batches 0,3 / 1,4 / 2,5 (the last has 3)
    torch.testing.assert_close(shards[1][:4], full[4:8], rtol=0, atol=0)
    torch.testing.assert_close(shards[0][4:], full[12:16], rtol=0, atol=0)
    with pytest.raises(ValueError, match="shard must be"):
        model.sample(4, shard=(2, 2))


def test_sample_sharded_over_two_ranks_equals_one_process(tmp_path):
    """Generation for evaluation under torchrun: batches dealt over 3 gloo ranks and gathered
    on rank 0 are exactly the one-process samples (7 uneven batches of 37 samples)."""
    mp.spawn(_sample_rank, args=(3, str(tmp_path / "init"), str(tmp_path / "samples.pt")), nprocs=3, join=True)
    torch.testing.assert_close(torch.load(tmp_path / "samples.pt"), _tiny_model().sample(37, seed=3, batch_size=5),
                               rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_evaluate_matches_one_process(tmp_path):
    """`torchrun --nproc_per_node=2 fdrl evaluate ...`: rank 0 alone writes metrics.json, with
    the value one process computes."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "fdrl.cli", "train", "swissroll", "--device", "cpu", "--out", str(run),
                    "--quiet", "train.steps=2", "train.batch_size=16", "flow.steps=3", "train.sample_every=1000",
                    "train.sample_n=16", "model.params.width=16", "model.params.depth=1"],
                   check=True, env=env, capture_output=True, timeout=120)
    evaluate = ["-m", "fdrl.cli", "evaluate", str(run), "--metric", "energy", "--num-samples", "50", "--batch", "8",
                "--device", "cpu", "--quiet"]
    subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", *evaluate], check=True, env=env,
                   capture_output=True, timeout=120)
    sharded = json.loads((run / "eval" / "metrics.json").read_text())["energy"]
    subprocess.run([sys.executable, *evaluate], check=True, env=env, capture_output=True, timeout=120)
    single = json.loads((run / "eval" / "metrics.json").read_text())["energy"]
    assert sharded["ranks"] == 2 and single["ranks"] == 1
    assert sharded["value"] == pytest.approx(single["value"], rel=1e-9, abs=1e-12)
