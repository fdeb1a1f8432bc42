"""Scores, disparity ratios and modulation coefficients (Ada2I Eq. 16-18; OGM-GE released code).

Pure functions on tensors: no Trainer, no model. `GradientModulationCallback` calls them once per optimizer
step on the scores summed over the step's micro-batches and over all ranks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

MODES = ("ada2i", "ogm_ge")


def modality_scores(modality_logits: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """s_m = sum_i softmax(out_m)_i[y_i] for each modality, in the mapping's order (Ada2I Eq. 16).

    `modality_logits[m]` is modality m's share of the fused logits, `(batch, num_classes)`: the dot-product
    share W_m z_m + b/M of the released OGM-GE and Ada2I code, or the cosine share of Eq. 16 as printed.
    Computed in float32 (also under bf16/fp16 autocast) and detached: the scores steer the update, they are
    not trained. Returns a float32 tensor of shape `(M,)`.
    """
    # One stacked softmax for all modalities, outside autograd (no detach per modality): this runs on every
    # micro-batch, where each small op counts (benchmarks/results/modulation_apply_overhead.md).
    with torch.no_grad():
        stacked = torch.stack(list(modality_logits.values())).float()
        probabilities = torch.softmax(stacked, dim=-1)
        index = labels.reshape(1, -1, 1).long().to(stacked.device).expand(stacked.shape[0], -1, 1)
        return probabilities.gather(2, index).sum(dim=(1, 2))


def disparity_ratios(scores: torch.Tensor, mode: str = "ada2i") -> torch.Tensor:
    """Disparity ratio of every modality from its score.

    * `ada2i` (Eq. 17, any M >= 2): rho_m = s_m / min_j s_j, so the weakest modality has rho = 1.
    * `ogm_ge` (M = 2, released OGM-GE code): rho_1 = s_1 / s_2 and rho_2 = s_2 / s_1; the stronger one has
      the same ratio as under `ada2i`, the weaker one gets 1/rho (< 1) instead of 1.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is unknown; expected one of {list(MODES)}")
    scores = scores.float()
    if scores.ndim != 1 or scores.numel() < 2:
        raise ValueError(f"scores must hold one value per modality (at least 2), got shape {tuple(scores.shape)}")
    if mode == "ogm_ge":
        if scores.numel() != 2:
            raise ValueError(f"mode='ogm_ge' is defined for exactly 2 modalities, got {scores.numel()}; use mode='ada2i'")
        return torch.stack([scores[0] / scores[1], scores[1] / scores[0]])
    return scores / scores.min()


def modulation_coefficients(ratios: torch.Tensor, alpha: float) -> torch.Tensor:
    """k_m = 1 - tanh(alpha * rho_m) if rho_m > 1, else 1 (Ada2I Eq. 18).

    Note tanh(alpha * rho), not tanh(alpha * (rho - 1)): both released codes use it, so a modality only
    slightly ahead is already slowed by about 1 - tanh(alpha).
    """
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    return torch.where(ratios > 1, 1 - torch.tanh(alpha * ratios), 1.0)


__all__ = ["MODES", "modality_scores", "disparity_ratios", "modulation_coefficients"]
