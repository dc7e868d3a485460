"""Data parallelism for the training loop: one process per GPU (or N CPU processes with gloo),
started by ``accelerate launch``; each process trains on its slice of the same global batch.

The global batch of step ``t`` stays a pure function of ``(seed, t)``: every process builds it,
keeps rows ``[rank·B/W, (rank+1)·B/W)`` and the loss is normalised by the *global* count, so W
processes take the same optimisation step as one process on the whole batch (up to float
summation order). Losses therefore come as ``(sum, count)``: a token-mean loss averaged per
process and then over processes would weight tokens differently from one process.
"""

from __future__ import annotations

import os

import torch


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a launched group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    """Only rank 0 writes outputs; the other ranks return once training is done."""
    return world()[0] == 0


def shard_batch(batch: dict, rank: int, world_size: int) -> dict:
    """Rows ``[rank·B/W, (rank+1)·B/W)`` of every tensor (all tensors share the batch dim 0).

    Non-tensor values pass through unchanged. A global batch that W does not divide is an error:
    uneven shards would weight the processes' gradients unequally.
    """
    if world_size == 1:
        return batch
    sizes = {k: v.shape[0] for k, v in batch.items() if torch.is_tensor(v) and v.ndim > 0}
    if not sizes:
        raise ValueError("the batch holds no tensor to split across processes")
    b = next(iter(sizes.values()))
    if any(s != b for s in sizes.values()):
        raise ValueError(f"batch tensors disagree on the batch size (dim 0): {sizes}")
    if b % world_size:
        raise ValueError(f"global batch {b} does not split evenly over {world_size} processes; "
                         f"use a batch size divisible by the number of GPUs")
    per = b // world_size
    lo = rank * per
    return {k: (v[lo:lo + per] if k in sizes else v) for k, v in batch.items()}


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of a (detached) tensor over all processes; the value itself in one process."""
    if world()[1] == 1:
        return value
    value = value.detach().clone()
    torch.distributed.all_reduce(value)
    return value


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (dim 0) over processes, keeping gradients to every process's slice
    (for contrastive losses whose negatives are the whole global batch)."""
    if world()[1] == 1:
        return x
    import warnings

    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of a private API; still the public one
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x.contiguous()), dim=0)
