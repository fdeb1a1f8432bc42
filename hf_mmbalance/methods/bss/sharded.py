"""BSS scoring split across ranks: each rank measures a contiguous shard of the training set, the raw components are
gathered, and every rank normalizes the whole set itself (so all ranks hold the same scores, as one process would).

Why not score on rank 0 and broadcast: under FSDP a forward pass needs every rank (each layer all-gathers its
parameter shards), so rank-0-only scoring deadlocks; and under DDP it idles W - 1 ranks. Every rank runs the same
number of batches (the last shard is padded with repeats of a row and the padding is dropped after the gather), so
the collectives inside FSDP's forward pair up.
"""

from __future__ import annotations

from typing import Any

import torch

from ...trainer.distributed import all_gather_rows, is_distributed, padded_shard
from .measurer import criterion_parts, measure, min_max_normalize

COMPONENTS = ("similarity", "loss", "grad_norm")


def measure_sharded(model: torch.nn.Module, dataset: Any, criterion: str, **options: Any) -> dict[str, Any]:
    """`measure(model, dataset, criterion, **options)` over all N rows, each rank scoring ceil(N / W) of them: the
    same result on every rank (`score` from the gathered components, min-max over the whole set). One process: plain
    `measure`. `dataset` must support `select` (a `datasets.Dataset`)."""
    if not is_distributed():
        return measure(model, dataset, criterion, **options)
    total = len(dataset)
    local = measure(model, dataset.select(padded_shard(total)), criterion, **options)  # same batch count on every rank
    device = next(model.parameters()).device  # NCCL gathers device tensors; gloo takes CPU ones
    result: dict[str, Any] = {"criterion": criterion}
    for key in COMPONENTS:
        if key in local:
            result[key] = all_gather_rows(local[key].to(device)).cpu()[:total]
    result["score"] = balance_score(criterion, result)
    return result


def balance_score(criterion: str, components: dict[str, torch.Tensor]) -> torch.Tensor:
    """Norm(sim), -Norm(cost) or Norm(sim) - Norm(cost) over the whole set (BSS appendix Table 1), from the raw
    components `measure` returns."""
    similarity, cost = criterion_parts(criterion)
    reference = next(components[key] for key in COMPONENTS if key in components)
    score = torch.zeros_like(reference)
    if similarity is not None:
        score = score + min_max_normalize(components["similarity"])
    if cost is not None:
        score = score - min_max_normalize(components["loss" if cost == "loss" else "grad_norm"])
    return score


__all__ = ["balance_score", "measure_sharded"]
