"""Data-parallel training with torch.distributed: process-group set-up and per-rank draws.

Launch with torchrun (one process per GPU, or per CPU group with gloo); the trainer reads
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment::

    torchrun --nproc_per_node=8 $(which fdrl) train cifar10_lsif_chi2 --out runs/c10

``train.batch_size`` is the *global* batch: each of W ranks draws ``batch_size / W`` data
samples (``data.batch(step, n, seed, rank, world)``, which shards one global order) and
``batch_size / W`` prior particles from its own streams (``seeding.generator(seed, "prior" /
"flow", step, rank)``), flows them with the raw estimator under :func:`fdrl.flow.frozen` (no
DistributedDataParallel hooks, no communication during the flow) and takes one update through
DDP, which all-reduces (averages) the parameter gradients. Because the Bregman losses are
means over the data and over the particles, the averaged gradient is the gradient of one
process with the whole global batch: :func:`draw_step` with ``ranks=range(W)`` draws exactly
that union in one process, which is how the tests check it.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from fdrl import seeding


@dataclass(frozen=True)
class DistContext:
    """This process's place: ``rank`` of ``world``; ``local_rank`` picks its GPU;
    ``owns_group``: this object initialised the process group (and destroys it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def env_world() -> tuple[int, int, int]:
    """(rank, world, local_rank) from torchrun's environment, (0, 1, 0) outside it."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def setup(backend: str = "auto", device_type: str = "cpu") -> DistContext:
    """Join (or reuse) the default process group when there is more than one rank."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), env_world()[2], owns_group=False)
    rank, world, local_rank = env_world()
    if world <= 1:
        return DistContext()
    if backend == "auto":
        backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    ctx = DistContext(rank, world, local_rank, owns_group=True)
    atexit.register(teardown, ctx)
    return ctx


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def any_flag(ctx: DistContext, *flags: bool, device: torch.device | str = "cpu") -> list[bool]:
    """Each flag OR-ed over all ranks (one small all-reduce)."""
    if not ctx.active:
        return [bool(f) for f in flags]
    t = torch.tensor([float(bool(f)) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


def draw_step(data, prior, step: int, global_batch: int, seed: int, world: int, ranks: Sequence[int],
              device: torch.device | str = "cpu"):
    """The data batch, prior particles and flow-noise generator(s) of ``ranks`` at ``step``.

    One rank: its own shard (``global_batch / world`` samples) and one generator. Several
    ranks (``ranks=range(world)`` in one process, a "virtual world"): the concatenation of
    their shards and one generator per shard, for :func:`fdrl.flow.flow`, which draws each
    shard's noise from its own generator -- the same numbers the ranks draw.
    """
    if global_batch % world:
        raise ValueError(f"train.batch_size={global_batch} does not split over {world} ranks")
    per = global_batch // world
    xs: list[Tensor] = []
    ps: list[Tensor] = []
    gens: list[torch.Generator] = []
    for r in ranks:
        xs.append(data.batch(step, per, seed, r, world).to(device))
        ps.append(prior.sample(per, seeding.generator(seed, "prior", step, r), device))
        gens.append(seeding.generator(seed, "flow", step, r, device=device))
    if len(ranks) == 1:
        return xs[0], ps[0], gens[0]
    return torch.cat(xs), torch.cat(ps), gens


def sample_sharded(model: Any, n: int, ctx: DistContext, steps: int | None = None, seed: int = 0,
                   batch_size: int | None = None, progress: bool = False, standardized: bool = False) -> Tensor | None:
    """Algorithm 2 for ``n`` samples with the batches dealt round-robin over the ranks (batch
    i on rank i % W, each seeded by (seed, i) as in one process), gathered on rank 0: rank 0
    returns exactly ``model.sample(n, steps, seed, batch_size)`` with the same ``batch_size``
    (default ceil(n / W)), the other ranks None. This is how ``fdrl evaluate`` under torchrun
    lets many GPUs generate the 50000 FID samples. ``standardized``: as for ``model.sample``."""
    if not ctx.active:
        return model.sample(n, steps=steps, seed=seed, batch_size=batch_size, progress=progress,
                            standardized=standardized)
    batch_size = batch_size or -(-n // ctx.world)
    mine = model.sample(n, steps=steps, seed=seed, batch_size=batch_size, progress=progress and ctx.is_main,
                        shard=(ctx.rank, ctx.world), standardized=standardized)
    gathered: list[Tensor] | None = [None] * ctx.world if ctx.is_main else None  # type: ignore[list-item]
    dist.gather_object(mine, gathered, dst=0)
    if not ctx.is_main:
        return None
    sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    offsets = [0] * ctx.world
    out = []
    for i, size in enumerate(sizes):
        r = i % ctx.world
        out.append(gathered[r][offsets[r]:offsets[r] + size])
        offsets[r] += size
    return torch.cat(out)
