"""What `diagnose` measures on one trained model (issue 17): features for the probes, the exact Shapley
contribution of each modality to the fused prediction, the disparity ratios over training and the BSS measurer's
unbalanced fraction. Pure functions of a model / a log history; the trainings live in `runs.py`.

* Features z_m: `methods.active.strategies.pool_outputs` (inference over a split, in row order, the trainer's
  collator for raw or variable-length columns).
* Shapley: BMMAL Eq. 9-11 (`methods/active/shapley.py`): a modality outside the coalition is a zero feature, all 2^M
  coalitions through the fusion / heads only. V(S) = the fused probability of the pseudo-label (classification,
  `modality_shapley_contributions`) or the fused prediction itself (regression: a probability of a 1-output head is
  always 1). Phi_m = |phi_m| / sum_j |phi_j| (Eq. 11), summarized by its mean, quantiles and a histogram.
* rho_m over training: Ada2I Eq. 17 as logged by `GradientModulationCallback(monitor_only=True)` (gradients untouched),
  one mean per logging interval.
* BSS: `methods.bss.measure` (appendix Table 1) on the train split with the joint model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..methods.active.shapley import modality_contributions, shapley_values, subset_values
from ..methods.active.strategies import modality_shapley_contributions, pool_outputs
from ..methods.bss import measure
from ..methods.modulation.diagnostics import LOG_PREFIX

HISTOGRAM_BINS = 20
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def split_features(model, dataset, batch_size: int, collate_fn=None) -> dict[str, torch.Tensor]:
    """Each modality's frozen feature z_m `(N, d_m)` (float32, CPU) on `dataset`, in row order."""
    return pool_outputs(model, dataset, batch_size, collate_fn)["features"]


def labels_of(dataset) -> np.ndarray:
    return dataset.select_columns(["labels"]).with_format("numpy")[:]["labels"]


def _fused_prediction(model, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The model's fused prediction from given features, as `forward` computes it after `encode` (the fusion's head,
    or the SUGRM common-space head when the model has one)."""
    fusion = model.fusion(dict(features))
    if model.common_projections is None:
        return fusion.logits
    return model.fused_head(torch.relu(model.common_projections["fused"](fusion.fused_features)))


def regression_shapley(model, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Exact Shapley values phi `(N, M)` (Eq. 9) of the modality features for V(S) = the fused prediction with the
    features outside S set to zero (eval mode, no grad; the model's train/eval flags restored)."""
    names = list(features)
    device = next(model.parameters()).device
    modes = {module: module.training for module in model.modules()}
    model.eval()

    def value(mask: tuple[bool, ...]) -> torch.Tensor:
        masked = {n: (z if keep else torch.zeros_like(z)).to(device) for n, z, keep in zip(names, features.values(), mask)}
        with torch.no_grad():
            return _fused_prediction(model, masked).float().reshape(len(next(iter(masked.values()))), -1).mean(-1).cpu()

    try:
        return shapley_values(subset_values(value, len(names)), len(names))
    finally:
        for module, training in modes.items():
            module.training = training


def shapley_summary(model, features: Mapping[str, torch.Tensor], task: str) -> dict[str, dict[str, Any]]:
    """Per modality: mean Phi_m, its quantiles and histogram on [0, 1], the fraction of samples where m has the
    largest Phi (m dominates), and for regression the mean signed phi_m."""
    names = list(features)
    signed = None
    if task == "classification":  # V = fused probability of the pseudo-label, through the fusion's head (BMMAL)
        contributions = modality_shapley_contributions(model, dict(features))
    else:
        signed = regression_shapley(model, features)
        contributions = modality_contributions(signed)
    contributions = contributions.double().numpy()
    winners = contributions.argmax(axis=1)
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    summary = {}
    for index, name in enumerate(names):
        column = contributions[:, index]
        counts, _ = np.histogram(column, bins=edges)
        summary[name] = {
            "mean": float(column.mean()),
            "std": float(column.std()),
            "quantiles": {f"q{int(q * 100):02d}": float(np.quantile(column, q)) for q in QUANTILES},
            "histogram": {"edges": edges.round(6).tolist(), "counts": counts.astype(int).tolist()},
            "dominant_fraction": float((winners == index).mean()),
        }
        if signed is not None:
            summary[name]["mean_phi"] = float(signed[:, index].double().mean())
    return summary


def rho_curves(log_history: Sequence[Mapping[str, Any]], names: Sequence[str],
               epoch_of: Callable[[Mapping[str, Any]], float | None]) -> dict[str, list[list[float]]]:
    """{modality: [[epoch, rho_m], ...]} from the `modulation/rho_<m>` entries of a training's log history;
    `epoch_of`: entry -> its epoch (`plotting.epoch_of_entry`)."""
    return {
        name: [[float(epoch_of(entry)), float(entry[f"{LOG_PREFIX}rho_{name}"])] for entry in log_history
               if f"{LOG_PREFIX}rho_{name}" in entry and epoch_of(entry) is not None]
        for name in names
    }


def bss_unbalanced(model, dataset, criterion: str, threshold: float, *, batch_size: int = 256,
                   collate_fn=None) -> dict[str, Any]:
    """The BSS measurer's balance score of every row of `dataset` under `criterion` (BSS appendix Table 1; higher =
    more balanced) and the fraction of rows whose score is below `threshold`."""
    result = measure(model, dataset, criterion, batch_size=batch_size, collate_fn=collate_fn)
    score = result["score"].double().numpy()
    summary = {
        "criterion": criterion,
        "threshold": float(threshold),
        "fraction_unbalanced": float((score < threshold).mean()),
        "score_quantiles": {f"q{int(q * 100):02d}": float(np.quantile(score, q)) for q in QUANTILES},
    }
    for key in ("similarity", "loss", "grad_norm"):
        if key in result:
            summary[f"mean_{key}"] = float(result[key].double().mean())
    return summary


__all__ = ["bss_unbalanced", "labels_of", "regression_shapley", "rho_curves", "shapley_summary", "split_features"]
