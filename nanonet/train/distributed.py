"""torch.distributed for `torchrun`: NCCL on GPUs, gloo on CPUs; a no-op in one process."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as td
import torch.nn as nn


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup() -> Context:
    """Read torchrun's environment; join the process group when there is more than one rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not td.is_initialized():
        td.init_process_group(backend="nccl" if cuda else "gloo")
    return Context(rank, world, local, device)


def wrap(module: nn.Module, ctx: Context) -> nn.Module:
    """DDP around the cohort; unused parameters are expected (students idle during the teacher warm-up)."""
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        td.barrier()


def broadcast_object(obj, ctx: Context):
    """Rank 0's `obj` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_module(module: nn.Module, ctx: Context) -> None:
    """Rank 0's weights of `module` on every rank (in place)."""
    if not ctx.distributed:
        return
    for tensor in module.state_dict().values():
        td.broadcast(tensor, src=0)


def teardown(ctx: Context) -> None:
    if ctx.distributed and td.is_initialized():
        td.destroy_process_group()


def weights_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def gather_weight_digests(module: nn.Module, ctx: Context) -> list[dict]:
    """Every rank's sha256 of its weights: replicas that stayed in sync agree."""
    mine = {"rank": ctx.rank, "weights_sha256": weights_digest(module)}
    if not ctx.distributed:
        return [mine]
    everyone: list = [None] * ctx.world_size
    td.all_gather_object(everyone, mine)
    return everyone
