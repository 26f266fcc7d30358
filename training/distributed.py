"""Data-parallel training under torchrun (torch.distributed, DistributedDataParallel).

`torchrun --nproc_per_node N -m seqrec.cli train ...` sets WORLD_SIZE/RANK/LOCAL_RANK; without
them (or with WORLD_SIZE=1) everything here is a no-op and training is the single-process loop.

What makes N processes equal to one: `batch_size` stays the GLOBAL batch. Every rank draws the
same seeded epoch order, takes its own contiguous slice of each global batch, and scales its loss
by (its loss elements x N / the batch's loss elements), so DDP's gradient average is the gradient
of the single-process mean loss over the whole batch (CLM averages over target positions, which
differ per slice). Gradients then differ from one process only by float summation order.
Randomness inside a step (dropout, MLM/RTD masks, PLM spans, sampled negatives) is drawn per rank
from seed + rank, so those runs match one process in distribution, not number for number.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """The one process that writes files and prints."""
        return self.rank == 0


SINGLE = Context()


def setup(backend: str = "gloo") -> Context:
    """Join the process group torchrun describes in the environment: gloo for CPU training,
    nccl when each rank trains on cuda:LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    ctx = Context(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return ctx


def teardown(ctx: Context, barrier: bool = True) -> None:
    if ctx.active and dist.is_initialized():
        if barrier:  # no rank leaves while another still uses the group
            dist.barrier()
        dist.destroy_process_group()


class _TaskLoss(nn.Module):
    """DDP synchronises gradients through forward(); the model's loss is a method, so this
    module makes it the forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, items: torch.Tensor, features: dict | None = None) -> torch.Tensor:
        return self.model.loss(items, features)


class StepLoss:
    """loss(global_batch_builder, n) -> (loss to backpropagate, its share of the batch mean)."""

    def __init__(self, model: nn.Module, ctx: Context):
        self.model, self.ctx = model, ctx
        # Unused parameters exist (e.g. HF word embeddings: seqrec feeds inputs_embeds).
        self.ddp = DistributedDataParallel(_TaskLoss(model), find_unused_parameters=True) if ctx.active else None

    def __call__(self, gather, n: int) -> tuple[torch.Tensor, float]:
        """`gather(index)` builds (items, side features or None) of the global batch's examples
        `index` (of n)."""
        if not self.ctx.active:
            loss = self.model.loss(*gather(torch.arange(n)))
            return loss, loss.item()
        task = self.model.task
        mine = torch.tensor_split(torch.arange(n), self.ctx.world_size)[self.ctx.rank]
        total = float(task.loss_elements(gather(torch.arange(n))[0]))
        if len(mine) == 0:  # a short last batch: this rank still takes part in the all-reduce
            loss = self.ddp(*gather(torch.arange(1))) * 0.0
            return loss, 0.0
        batch = gather(mine)
        share = float(task.loss_elements(batch[0])) / total
        loss = self.ddp(*batch)
        return loss * (share * self.ctx.world_size), loss.item() * share


def seed_rank(ctx: Context, seed: int) -> None:
    """Per-rank randomness inside a step (rank 0 keeps the single-process stream)."""
    if ctx.active and ctx.rank:
        torch.manual_seed(seed + ctx.rank)
        np.random.seed(seed + ctx.rank)


def all_sum(ctx: Context, values: list[float]) -> list[float]:
    if not ctx.active:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def shard(ctx: Context, items: list) -> list:
    """This rank's contiguous part of a list (all of it in a single process)."""
    bounds = np.linspace(0, len(items), ctx.world_size + 1).astype(int)
    return items[bounds[ctx.rank] : bounds[ctx.rank + 1]]


def sharded_mean(ctx: Context, fn, items: list) -> dict[str, float]:
    """fn(items) -> dict of per-item means, computed on each rank's shard and averaged over all
    items (evaluation split across ranks instead of repeated on each)."""
    if not ctx.active:
        return fn(items)
    part = shard(ctx, items)
    local = fn(part) if part else {}
    keys = broadcast(ctx, sorted(local))
    sums = all_sum(ctx, [local.get(k, 0.0) * len(part) for k in keys])
    # rank 0's view is the one every rank takes, so they all decide alike (early stopping)
    return broadcast(ctx, {k: s / len(items) for k, s in zip(keys, sums)})


def broadcast(ctx: Context, obj):
    """Rank 0's value on every rank."""
    if not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_weights(ctx: Context, model: nn.Module) -> None:
    """Rank 0's weights (e.g. the best checkpoint it loaded) into every rank's model."""
    if ctx.active:
        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)
