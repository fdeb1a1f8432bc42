"""Per-sample modality contributions for BMMAL (Eq. 5, 9-11, 13; METHODS.md §4).

Pure torch. The players of the Shapley game are the modality *features* z_m (not the raw inputs): a modality
outside the coalition S is replaced by a zero vector, and V(S) is the fused softmax probability of the pseudo-label
ŷ = argmax p_mm (the full-modality fused prediction). All 2^M coalitions are evaluated on cached features through
the fusion / heads only (no encoder runs), so the Shapley values are exact for any number of modalities M.

Pipeline: `subset_values` (V for every coalition) -> `shapley_values` (φ, Eq. 9; Eq. 10 for M = 2)
-> `modality_contributions` (Φ, Eq. 11) -> `dominance` (ρ, Eq. 5) / `modality_weights` (w, Eq. 13).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

ValueFn = Callable[[tuple[bool, ...]], torch.Tensor]


def subset_values(value_fn: ValueFn, num_modalities: int) -> dict[frozenset, torch.Tensor]:
    """V(S) `(N,)` for every coalition S ⊆ {0, …, M−1} (all 2^M of them, the empty one included).

    `value_fn(mask)` receives a tuple of M booleans, `mask[m]` True when modality m is in the coalition, and returns
    the per-sample value `(N,)`. Keys are `frozenset`s of modality indices.
    """
    if num_modalities < 1:
        raise ValueError(f"num_modalities must be >= 1, got {num_modalities}")
    values = {}
    for mask in itertools.product((False, True), repeat=num_modalities):
        coalition = frozenset(m for m, present in enumerate(mask) if present)
        values[coalition] = value_fn(tuple(mask))
    return values


def shapley_values(values_by_subset: Mapping[frozenset, torch.Tensor], num_modalities: int) -> torch.Tensor:
    """Exact Shapley values φ `(N, M)` (Eq. 9):

        φ_m = Σ_{S ⊆ M∖{m}} |S|! (M − |S| − 1)! / M! · [V(S ∪ {m}) − V(S)].

    For M = 2 this is Eq. 10, e.g. φ_1 = ½[(V(z_1, z_2) − V(0, z_2)) + (V(z_1, 0) − V(0, 0))]. The values satisfy
    efficiency, Σ_m φ_m = V(all) − V(∅). `values_by_subset` must hold all 2^M coalitions (see `subset_values`).
    """
    everyone = frozenset(range(num_modalities))
    missing = [s for s in _all_subsets(everyone) if s not in values_by_subset]
    if missing:
        raise ValueError(f"values_by_subset lacks {len(missing)} of the {2 ** num_modalities} coalitions, e.g. {set(missing[0])}")
    total = math.factorial(num_modalities)
    columns = []
    for m in range(num_modalities):
        phi = None
        for subset in _all_subsets(everyone - {m}):
            weight = math.factorial(len(subset)) * math.factorial(num_modalities - len(subset) - 1) / total
            term = weight * (values_by_subset[subset | {m}] - values_by_subset[subset])
            phi = term if phi is None else phi + term
        columns.append(phi)
    return torch.stack(columns, dim=-1)


def pseudo_labels(fusion_module: nn.Module, features: Mapping[str, torch.Tensor], batch_size: int | None = None) -> torch.Tensor:
    """ŷ = argmax of the full-modality fused prediction `(N,)` (run in eval mode under no_grad; mode restored)."""
    logits = _fused_logits(fusion_module, dict(features), batch_size)
    return logits.argmax(dim=-1).to(next(iter(features.values())).device)


def fused_value_fn(
    fusion_module: nn.Module,
    features: Mapping[str, torch.Tensor],
    pseudo_labels: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> ValueFn:
    """Value function of the modality game: V(mask) = softmax(fusion(z_S))[ŷ] `(N,)`, float32.

    `features`: the cached z_m `(N, d_m)` by modality name; the mask's order is the mapping's order. Modalities
    absent from the coalition are replaced by zeros of the same shape (features, not inputs: only `fusion_module`
    runs). `pseudo_labels` ŷ `(N,)`: default = `pseudo_labels(fusion_module, features)`, the argmax of the
    full-modality fused prediction. Every call runs under `torch.no_grad()` with the module in eval mode and
    restores the module's previous train/eval mode. Features are moved to the module's device and parameter
    dtype; the values come back on the features' device. `batch_size`: rows per fusion call (None = all at once).
    """
    features = dict(features)
    names = list(features)
    if not names:
        raise ValueError("features is empty: need at least one modality")
    sizes = {tensor.shape[0] for tensor in features.values()}
    if len(sizes) != 1:
        raise ValueError(f"all modalities must have the same number of rows, got {sorted(sizes)}")
    output_device = features[names[0]].device
    labels = pseudo_labels_of(fusion_module, features, batch_size) if pseudo_labels is None else pseudo_labels
    labels = labels.long().reshape(-1)
    if labels.shape[0] != sizes.pop():
        raise ValueError(f"pseudo_labels has {labels.shape[0]} rows, features have {features[names[0]].shape[0]}")

    def value_fn(mask: tuple[bool, ...]) -> torch.Tensor:
        if len(mask) != len(names):
            raise ValueError(f"mask has {len(mask)} entries, expected one per modality {names}")
        masked = {name: z if keep else torch.zeros_like(z) for name, z, keep in zip(names, features.values(), mask)}
        probabilities = torch.softmax(_fused_logits(fusion_module, masked, batch_size), dim=-1)
        index = labels.to(probabilities.device).unsqueeze(-1)
        return probabilities.gather(-1, index).squeeze(-1).to(output_device)

    return value_fn


# `fused_value_fn`'s argument shadows the helper inside it.
pseudo_labels_of = pseudo_labels


def modality_contributions(phi: torch.Tensor) -> torch.Tensor:
    """Φ_m = |φ_m| / Σ_j |φ_j| `(N, M)` (Eq. 11); each row sums to 1 (Eq. 4).

    Rows whose φ are all 0 (no modality changes the outcome) get the uniform 1/M, not NaN (the released code
    divides 0 by 0 there; METHODS.md §4).
    """
    magnitude = phi.abs()
    total = magnitude.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(magnitude, 1.0 / phi.shape[-1])
    return torch.where(total > 0, magnitude / torch.where(total > 0, total, torch.ones_like(total)), uniform)


def dominance(contributions: torch.Tensor) -> torch.Tensor:
    """Dominance degree ρ = Σ_i (max_j Φ_j − Φ_i) `(N,)` (Eq. 5); for M = 2, ρ = |Φ_1 − Φ_2| (§3.5)."""
    return (contributions.max(dim=-1, keepdim=True).values - contributions).sum(dim=-1)


def modality_weights(contributions: torch.Tensor) -> torch.Tensor:
    """Gradient-embedding weights w_m = 1 − (Φ_max − Φ_m) `(N, M)` (METHODS.md §4's form of Eq. 13).

    M = 2: this is Eq. 13 exactly, the stronger modality gets 1 and the weaker 1 − ρ with ρ = |Φ_1 − Φ_2|.
    Ties: Eq. 13 as printed gives m1 the weight 1 on Φ_1 = Φ_2 and the released code breaks the tie toward m2;
    either way ρ = 0 there, so 1 − ρ = 1 too, and here both modalities get weight 1 (same values). M > 2: the
    strongest modality keeps 1 and every other one is reduced by its own gap to the strongest, in [0, 1].
    """
    return 1.0 - (contributions.max(dim=-1, keepdim=True).values - contributions)


def _all_subsets(players: frozenset) -> list[frozenset]:
    items = sorted(players)
    return [frozenset(c) for r in range(len(items) + 1) for c in itertools.combinations(items, r)]


def _fused_logits(fusion_module: nn.Module, features: dict[str, torch.Tensor], batch_size: int | None) -> torch.Tensor:
    """Fused logits (float32) in eval mode under no_grad, in chunks of `batch_size` rows; mode restored."""
    parameter = next(fusion_module.parameters(), None)
    device = parameter.device if parameter is not None else next(iter(features.values())).device
    dtype = parameter.dtype if parameter is not None else None
    num_rows = next(iter(features.values())).shape[0]
    step = num_rows if not batch_size else batch_size
    modes = [(module, module.training) for module in fusion_module.modules()]
    fusion_module.eval()
    try:
        with torch.no_grad():
            chunks = []
            for start in range(0, max(num_rows, 1), max(step, 1)):
                chunk = {
                    name: z[start : start + step].to(device=device, dtype=dtype if z.is_floating_point() else None)
                    for name, z in features.items()
                }
                chunks.append(fusion_module(chunk).logits.float())
    finally:
        for module, mode in modes:  # per module: a partly frozen (mixed-mode) module comes back as it was
            module.training = mode
    return torch.cat(chunks)


__all__ = [
    "subset_values",
    "shapley_values",
    "pseudo_labels",
    "fused_value_fn",
    "modality_contributions",
    "dominance",
    "modality_weights",
]
