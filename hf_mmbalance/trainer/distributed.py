"""The few collective operations the balancing methods need, each a no-op in a single process.

Anything computed from a batch that changes the update (scores, orders, selections) must be identical on every
rank: the methods either reduce it over ranks or compute it on the main process and broadcast it.
"""

from __future__ import annotations

from typing import Any

import torch


def is_distributed() -> bool:
    """True inside an initialized process group of more than one process."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def is_main_process() -> bool:
    return not is_distributed() or torch.distributed.get_rank() == 0


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over all ranks (a copy; the input is left alone)."""
    if not is_distributed():
        return tensor
    total = tensor.clone()
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
    return total


def broadcast_from_main(value: Any) -> Any:
    """The main process's `value` on every rank (other ranks pass anything, e.g. None)."""
    if not is_distributed():
        return value
    holder = [value]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_from_ranks(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not is_distributed():
        return [value]
    values = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value)
    return values


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


__all__ = ["is_distributed", "is_main_process", "sum_over_ranks", "broadcast_from_main", "gather_from_ranks", "barrier"]
