"""Data-parallel fine-tuning (DDP) with the same loop: what changes when ``WORLD_SIZE`` > 1.

A run started with ``--nproc N`` is executed by N processes that ``torchrun`` starts (through the
job runner). Each process runs the same :func:`repair.loop.finetune`; this module holds the few
places where they differ from a single process:

* :func:`init`: ``torch.distributed.init_process_group`` (NCCL on GPUs, Gloo on CPUs) from the
  environment ``torchrun`` sets; each rank uses ``cuda:LOCAL_RANK`` on a GPU machine;
* batches: every rank draws the same global order of the epoch (a seeded permutation, or for
  weighted sampling such as w-aug the same weighted draw) and takes the slice
  ``order[rank::world]``: the global batch of size B is split into ``B / world`` per rank, so the
  averaged DDP gradient is the single-process gradient of the whole batch;
* evaluation: each rank scores a shard of the eval split and the shards are gathered, so every
  rank holds the full outputs and the confusion counts are those of the whole split;
* BatchNorm running statistics are averaged across ranks after every epoch (w-bn wraps the model
  with ``broadcast_buffers=False``: its mixed statistics must not be overwritten by rank 0's);
* only rank 0 writes to the store (the other ranks report to nobody).

With one process every function here is a no-op.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(device: torch.device) -> torch.device:
    """Join the process group (once); returns this rank's device."""
    if world_size() <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not active():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def shard(order: np.ndarray) -> np.ndarray:
    """This rank's slice of a global order (all of it with one process)."""
    if world_size() <= 1:
        return order
    return order[rank()::world_size()]


def per_rank_batch(batch_size: int) -> int:
    if world_size() <= 1:
        return batch_size
    if batch_size % world_size():
        raise ValueError(f"batch size {batch_size} must be divisible by the {world_size()} processes")
    return batch_size // world_size()


def wrap(model: torch.nn.Module, device: torch.device, *, broadcast_buffers: bool = True) -> torch.nn.Module:
    """``DistributedDataParallel`` around the model when running distributed."""
    if not active():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=broadcast_buffers,
                                                     find_unused_parameters=False)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def average_batchnorm_statistics(model: torch.nn.Module) -> None:
    """Mean of every BatchNorm running mean/var over the ranks (after an epoch)."""
    if not active():
        return
    for m in unwrap(model).modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            for buf in (m.running_mean, m.running_var):
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf.div_(world_size())


def gather_outputs(parts: list):
    """Every rank's list of objects, concatenated in rank order (itself with one process)."""
    if not active():
        return parts
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, parts)
    return [item for rank_parts in gathered for item in rank_parts]


def agreed(should_stop):
    """A ``should_stop`` that all ranks answer together (any rank asked to stop: all stop), so a
    cancel never leaves a rank waiting in a collective."""
    def check() -> bool:
        flag = torch.tensor([1.0 if should_stop() else 0.0])
        if active():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    return check


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    if active():
        dist.destroy_process_group()
