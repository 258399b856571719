"""Data-parallel training with torch DDP, launched by ``torchrun``.

``torchrun --nproc_per_node N -m fmuia_lib.cli train --config run.yaml`` starts N
processes and sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`setup` reads them,
joins the process group (NCCL on GPUs, Gloo on CPU) and picks the device. A plain
``python``/notebook run sees no ``WORLD_SIZE`` and trains in one process.

Each process takes a different batch of the same global batch stream (rank ``r`` takes
batches ``r, r + N, r + 2N, ...``), DDP averages the gradients, and every replica makes
the same update, so the weights stay identical. Only rank 0 validates and writes files.
Tasks differ between ranks within a step, so DDP runs with ``find_unused_parameters``
(a head that one rank did not use contributes a zero gradient there).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def resolve_device(preference: str | None, context: DistributedContext) -> torch.device:
    """``preference`` (e.g. "cpu", "cuda:1") or the best device; one GPU per local rank under DDP."""
    if preference is not None:
        device = torch.device(preference)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={preference!r} asked for, but CUDA is not available")
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and context.enabled:
        device = torch.device("cuda", context.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def setup(preference: str | None) -> tuple[DistributedContext, torch.device]:
    """Join the process group when launched by torchrun; return the context and device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        context = DistributedContext()
        return context, resolve_device(preference, context)
    context = DistributedContext(rank=int(os.environ["RANK"]), world_size=world_size,
                                 local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(preference, context)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return context, device


def sync_buffers(module: torch.nn.Module, context: DistributedContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP keeps the parameters identical, and copies rank 0's buffers at the start of
    each forward pass; after the last step each rank holds its own, so copy once more.
    """
    if context.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def teardown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
