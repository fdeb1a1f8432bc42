"""The few collective operations the balancing methods need, each a no-op in a single process.

Anything computed from a batch that changes the update (scores, orders, selections) must be identical on every
rank: the methods either reduce it over ranks or compute it on the main process and broadcast it. Under FSDP a
forward pass needs EVERY rank, so passes over the data are split across ranks and gathered (`shard_bounds`,
`all_gather_rows`), never run on one rank. The tensor collectives keep values on the device (no host sync).

`TrainingEngine` says which engine runs the step (one process, DDP, FSDP2, FSDP1, DeepSpeed) and what that means for a
method: whether the optimizer step runs inside backward (DeepSpeed) and whether `.grad` is whole, a shard or hidden.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

try:  # torch builds without distributed support have no DTensor: every tensor is then a plain one
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover
    DTensor = None


def is_sharded(tensor: torch.Tensor) -> bool:
    """True for a DTensor (FSDP2 parameters and their gradients)."""
    return DTensor is not None and isinstance(tensor, DTensor)


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor this rank holds: the local shard of a DTensor (a view: in-place ops change the DTensor), else itself."""
    return tensor.to_local() if is_sharded(tensor) else tensor


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


def shard_bounds(num_items: int, rank: int | None = None, world_size: int | None = None) -> tuple[int, int, int]:
    """(start, stop, padded_size) of this rank's contiguous shard of `num_items`: ranks take ceil(N / W) items each
    (the last ones fewer, possibly none); `padded_size` = ceil(N / W) is what every rank must process so that all run
    the same number of forward passes (FSDP's collectives inside forward pair up across ranks)."""
    distributed = is_distributed()
    if world_size is None:
        world_size = torch.distributed.get_world_size() if distributed else 1
    if rank is None:
        rank = torch.distributed.get_rank() if distributed else 0
    per_rank = -(-num_items // world_size)
    start = min(rank * per_rank, num_items)
    return start, min(start + per_rank, num_items), per_rank


def padded_shard(num_items: int) -> list[int]:
    """This rank's contiguous shard of `num_items` positions (`shard_bounds`), padded with repeats of a position to
    ceil(N / W), so every rank runs the same number of batches. Gathered in rank order, the real positions come first:
    only the last non-empty shard is short, so all the padding lies past position N (keep `[:num_items]`)."""
    start, stop, per_rank = shard_bounds(num_items)
    rows = list(range(start, stop))
    return rows + [rows[-1] if rows else num_items - 1] * (per_rank - len(rows))


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's `tensor` (same shape on every rank), concatenated along dim 0 in rank order, on every rank. A
    tensor collective: the values stay on their device (gloo: CPU; NCCL: the GPU)."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


ENGINES = ("single", "ddp", "fsdp", "fsdp1", "deepspeed")


@dataclass(frozen=True)
class TrainingEngine:
    """The engine that runs the training step, as the methods need to know it.

    Args:
        name: `single` (one process), `ddp`, `fsdp` (FSDP2, `fully_shard`: `.grad` is a DTensor shard, parameter names
            kept), `fsdp1` (flattened parameters: names and per-parameter gradients are not the module's) or
            `deepspeed` (ZeRO: `accelerator.backward` runs `engine.step()`, gradients are partitioned and never
            exposed to callbacks).
        world_size: number of processes.
    """

    name: str = "single"
    world_size: int = 1

    @property
    def optimizer_step_in_backward(self) -> bool:
        """True when the optimizer step runs inside backward, so `on_pre_optimizer_step` comes after the update."""
        return self.name == "deepspeed"

    @property
    def exposes_gradients(self) -> bool:
        """True when callbacks see each parameter's `.grad` (whole or as a DTensor shard) before the update."""
        return self.name in ("single", "ddp", "fsdp")


def detect_engine(args: Any = None, model: Any = None) -> TrainingEngine:
    """The engine of the current run, from accelerate's state (when an `Accelerator` exists), the TrainingArguments'
    `deepspeed` / `fsdp` settings and the model's parameters (DTensors: FSDP2). For callbacks that were not told by
    `MultimodalTrainer` (e.g. restored from a checkpoint, or under a plain `Trainer`)."""
    world_size = torch.distributed.get_world_size() if is_distributed() else 1
    name = None
    try:
        from accelerate.state import AcceleratorState
        from accelerate.utils import DistributedType

        if AcceleratorState._shared_state:  # an Accelerator was built in this process
            state = AcceleratorState()
            if state.distributed_type == DistributedType.DEEPSPEED:
                name = "deepspeed"
            elif state.distributed_type == DistributedType.FSDP:
                name = "fsdp" if getattr(state.fsdp_plugin, "fsdp_version", 1) == 2 else "fsdp1"
    except (ImportError, AttributeError):  # pragma: no cover - accelerate is a dependency
        pass
    if name is None and args is not None:
        if getattr(args, "deepspeed", None):
            name = "deepspeed"
        elif getattr(args, "fsdp", None):
            version = (getattr(args, "fsdp_config", None) or {}).get("fsdp_version", 1)
            name = "fsdp" if int(version) == 2 else "fsdp1"
    if name is None and model is not None and any(is_sharded(p) for p in model.parameters()):
        name = "fsdp"
    if name is None:
        name = "ddp" if world_size > 1 else "single"
    return TrainingEngine(name, world_size)


@contextmanager
def unsharded(model: torch.nn.Module):
    """Inside: every FSDP2 module of `model` holds its full parameters (`FSDPModule.unshard`, an all-gather that every
    rank must enter), so a submodule can run on its own (e.g. the fusion on cached features, outside the root's
    forward). Resharded on exit. DeepSpeed ZeRO-3 parameters (`ds_id`) are gathered with
    `deepspeed.zero.GatheredParameters` (untested here: DeepSpeed does not run on CPU; benchmarks/deepspeed_zero_gpu.py).
    Otherwise nothing happens."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover
        FSDPModule = ()
    modules = [module for module in model.modules() if isinstance(module, FSDPModule)]
    partitioned = [p for p in model.parameters() if hasattr(p, "ds_id")]
    for module in modules:
        module.unshard()
    try:
        if partitioned:
            import deepspeed

            with deepspeed.zero.GatheredParameters(partitioned):
                yield model
        else:
            yield model
    finally:
        for module in modules:
            module.reshard()


def load_full_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """`model.load_state_dict(state_dict)` for a full (unsharded) state dict, also into a model that FSDP2 has sharded
    since (its parameters are DTensors: each rank keeps its shard of the full values; every rank must call this)."""
    if not any(is_sharded(p) for p in model.parameters()):
        model.load_state_dict(state_dict)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True))


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


__all__ = ["ENGINES", "TrainingEngine", "all_gather_rows", "barrier", "broadcast_from_main", "detect_engine",
           "gather_from_ranks", "is_distributed", "is_main_process", "is_sharded", "load_full_state_dict", "local_part", "padded_shard", "shard_bounds", "sum_over_ranks", "unsharded"]
