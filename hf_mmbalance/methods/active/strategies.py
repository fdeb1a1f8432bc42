"""Acquisition strategies behind one interface: score the unlabeled pool once, pick `budget` of it.

`pool_outputs` runs the model over the unlabeled rows (inference only; under DDP each rank takes a contiguous
shard and the shards are gathered, so every rank holds the same outputs); `select` turns them into the pool
positions to label: random, entropy (highest first), BADGE (k-means++ on p − onehot(ŷ) ⊗ [z_1; …; z_M]) and
BMMAL (the same with each z_m weighted by w_m from the per-sample Shapley contributions, Eq. 9-14).
"""

from __future__ import annotations

from typing import Any

import torch

from ...progress import batches_of, progress, quiet_library_progress
from ...trainer.batches import ordered_batches
from ...trainer.distributed import gather_from_ranks, is_distributed, padded_shard
from .embeddings import gradient_embedding_factors
from .selection import entropy_scores, kmeans_plus_plus, random_indices, top_k_indices
from .shapley import fused_value_fn, modality_contributions, modality_weights, shapley_values, subset_values

def pool_outputs(model, dataset, batch_size: int, collate_fn=None, *, show_progress: bool = False,
                 desc: str = "scoring the pool") -> dict[str, Any]:
    """Fused probabilities `(n, K)` and features `{m: (n, d_m)}` of every row of `dataset`, in order; rows are
    batched by `collate_fn` (the trainer's collator, for raw or variable-length columns) or sliced from Arrow.
    `show_progress`: a bar over the batches on stderr (this rank's shard), titled `desc`."""
    shard = _rank_shard(len(dataset))
    total = len(dataset)
    was_training = model.training
    model.eval()
    names = model.config.modality_names
    input_keys = set(model.input_names)
    with quiet_library_progress():
        rows = dataset.select(shard)
    probabilities, features = [], {name: [] for name in names}
    try:
        with torch.no_grad():
            batches = progress(ordered_batches(model, rows, batch_size, collate_fn), total=batches_of(len(rows), batch_size),
                               desc=desc, disable=not show_progress, unit="batch", leave=False)
            for batch in batches:
                outputs = model(**{k: v.to(model.device) for k, v in batch.items() if k in input_keys})
                probabilities.append(torch.softmax(outputs.logits.float(), dim=-1).cpu())
                for name in names:
                    features[name].append(outputs.features[name].float().cpu())
    finally:
        model.train(was_training)
    local = {
        "probabilities": torch.cat(probabilities) if probabilities else torch.empty(0, model.config.num_labels),
        "features": {name: torch.cat(parts) if parts else torch.empty(0) for name, parts in features.items()},
    }
    return _gather_shards(local, total)


def modality_shapley_contributions(model, features: dict[str, torch.Tensor], *, show_progress: bool = False,
                                   desc: str = "Shapley values") -> torch.Tensor:
    """Phi `(n, M)`: |phi_m| / sum_j |phi_j| of the exact per-sample Shapley values (Eq. 9-10), computed on the
    cached features through the fusion only, V = fused probability of the pseudo-label. `show_progress`: a bar on
    stderr over the 2^M coalitions whose values are computed."""
    names = list(features)
    value_fn = fused_value_fn(model.fusion, features)
    with progress(total=2 ** len(names), desc=desc, disable=not show_progress, unit="coalition", leave=False) as bar:
        def counted(mask):
            value = value_fn(mask)
            bar.update(1)
            return value

        phi = shapley_values(subset_values(counted, len(names)), len(names))
    return modality_contributions(phi)


def select(strategy: str, model, outputs: dict[str, Any], budget: int, generator: torch.Generator, *,
           show_progress: bool = False, desc: str = "Shapley values") -> tuple[list[int], dict | None]:
    """Positions (into the scored rows) to acquire, and the mean Phi per modality (bmmal) for the round report.
    `show_progress`: bmmal's Shapley pass shows a bar on stderr, titled `desc`."""
    probabilities, features = outputs["probabilities"], outputs["features"]
    pool_size = probabilities.shape[0]
    if budget > pool_size:
        raise ValueError(f"budget {budget} is larger than the unlabeled pool ({pool_size} rows)")
    if strategy == "random":
        return [int(i) for i in random_indices(pool_size, budget, generator)], None
    if strategy == "entropy":
        return [int(i) for i in top_k_indices(entropy_scores(probabilities), budget)], None
    weights, mean_phi = None, None
    if strategy == "bmmal":
        contributions = modality_shapley_contributions(model, features, show_progress=show_progress, desc=desc)
        weights = modality_weights(contributions)
        mean_phi = dict(zip(features, contributions.mean(dim=0).tolist()))
    a, u = gradient_embedding_factors(probabilities, list(features.values()), weights)
    return [int(i) for i in kmeans_plus_plus(a, u, budget, generator)], mean_phi


def _rank_shard(size: int) -> list[int]:
    """This rank's contiguous share of `size` rows (all of them in a single process), padded to ceil(size / W):
    every rank runs the same number of forward passes (FSDP pairs the collectives inside them)."""
    return padded_shard(size) if is_distributed() else list(range(size))


def _gather_shards(local: dict[str, Any], size: int) -> dict[str, Any]:
    """Every rank's scored shard, concatenated in rank order (= pool order: the shards are contiguous), without the
    padding (which all lies past row `size`: only the last non-empty shard is short)."""
    if not is_distributed():
        return local
    shards = gather_from_ranks(local)
    return {
        "probabilities": torch.cat([s["probabilities"] for s in shards])[:size],
        "features": {name: torch.cat([s["features"][name] for s in shards])[:size] for name in shards[0]["features"]},
    }


__all__ = ["pool_outputs", "select", "modality_shapley_contributions"]
