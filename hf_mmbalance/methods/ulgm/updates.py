"""Unimodal label generation and its loss (SUGRM §3.3-3.4; Self-MM, thuiar/MMSA `SELF_MM.py`).

Pure functions on tensors: no Trainer, no model, no banks. The caller keeps the per-sample feature and
label banks (METHODS.md §2) and passes the relevant rows. Distances are Euclidean (L2) norms over the last
dimension. Everything that computes labels runs in float32 (also for bf16/fp16 features) and without
gradient: generated labels are targets, not trained quantities.

Names follow the paper: `y_m` is the multimodal (fused) label in [-H, H], F*_m the fused feature and F*_s
a unimodal feature, both in the common d_c space for SUGRM; D_max the distance between the mean fused
features of the samples labelled +H and -H.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

EPS = 1e-8  # the MIN = 1e-8 of the released code, used to guard divisions


def _as_float(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().float()


def _check_features(name: str, features: torch.Tensor, batch: int | None = None) -> None:
    if features.ndim != 2:
        raise ValueError(f"{name} must have shape (batch, dim), got {tuple(features.shape)}")
    if batch is not None and features.shape[0] != batch:
        raise ValueError(f"{name} has {features.shape[0]} rows, expected {batch}")


def _check_H(H: float) -> None:
    if not (math.isfinite(H) and H > 0):
        raise ValueError(f"H must be a finite number > 0, got {H!r}")


def _extreme_mask(labels: torch.Tensor, exact_value: float, largest: bool, extreme_quantile: float) -> torch.Tensor:
    """Samples labelled exactly `exact_value`; if there are none, the ceil(q*N) largest (or smallest) labels,
    at least one, plus every sample tied with the last of them (so the choice is deterministic)."""
    exact = labels == exact_value
    if bool(exact.any()):
        return exact
    count = max(1, math.ceil(extreme_quantile * labels.numel()))
    ordered = torch.sort(labels, descending=largest).values
    boundary = ordered[count - 1]
    return labels >= boundary if largest else labels <= boundary


def extreme_centres(
    fused_features: torch.Tensor, labels: torch.Tensor, H: float, extreme_quantile: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean F*_m of the samples with y = +H, mean F*_m of those with y = -H) over the stored fused features.

    These are the centres of SUGRM §3.3 "Magnitude of offset" (D_max = ||mean F*_m^{+H} - mean F*_m^{-H}||).
    The released code takes the samples labelled exactly +/-H and crashes (mean of nothing) when there are
    none; here, per side independently (METHODS.md §2), when no label equals +H exactly the samples in the top
    `extreme_quantile` of labels are used instead (the ceil(q*N) largest labels, at least one, ties with the
    last one included), and likewise the bottom quantile for -H. Never crashes on non-empty input.

    Args: fused_features `(N, d)`, labels `(N,)` (or `(N, 1)`), H > 0, extreme_quantile in (0, 1].
    Returns two float32 tensors of shape `(d,)`.
    """
    _check_H(H)
    if not (0.0 < extreme_quantile <= 1.0):
        raise ValueError(f"extreme_quantile must be in (0, 1], got {extreme_quantile!r}")
    features = _as_float(fused_features)
    labels = _as_float(labels).reshape(-1)
    _check_features("fused_features", features)
    if features.shape[0] == 0 or labels.numel() == 0:
        raise ValueError("extreme_centres needs at least one stored sample, got an empty feature bank")
    if labels.numel() != features.shape[0]:
        raise ValueError(f"got {labels.numel()} labels for {features.shape[0]} feature rows")
    positive = _extreme_mask(labels, float(H), True, extreme_quantile)
    negative = _extreme_mask(labels, -float(H), False, extreme_quantile)
    return features[positive].mean(dim=0), features[negative].mean(dim=0)


def max_distance(pos_centre: torch.Tensor, neg_centre: torch.Tensor) -> torch.Tensor:
    """D_max^F = ||mean F*_m^{+H} - mean F*_m^{-H}|| (SUGRM §3.3), a float32 scalar tensor."""
    return torch.linalg.vector_norm(_as_float(pos_centre) - _as_float(neg_centre))


def sugrm_magnitude(fused: torch.Tensor, unimodal: torch.Tensor, d_max: torch.Tensor | float, H: float) -> torch.Tensor:
    """D^L_{m->s} = 2H * min(||F*_m - F*_s||, D_max) / D_max, per sample (SUGRM §3.3, the clipped distance and
    D^F/D_max = D^L/D^L_{-H->+H} with D^L_{-H->+H} = 2H).

    A unimodal feature farther than D_max gets exactly 2H. D_max = 0 (the +H and -H centres coincide, e.g.
    at initialisation) gives a magnitude of 0 for every sample, never NaN. Returns float32 `(B,)`.
    """
    _check_H(H)
    fused, unimodal = _as_float(fused), _as_float(unimodal)
    _check_features("fused", fused)
    _check_features("unimodal", unimodal, fused.shape[0])
    d_max = torch.as_tensor(d_max, dtype=torch.float32, device=fused.device).detach()
    distance = torch.linalg.vector_norm(fused - unimodal, dim=-1)
    if not bool(d_max > 0):
        return torch.zeros_like(distance)
    return 2.0 * H * torch.minimum(distance, d_max) / d_max


def sugrm_direction(
    fused: torch.Tensor,
    unimodal: torch.Tensor,
    pos_centre: torch.Tensor,
    neg_centre: torch.Tensor,
    tie_tolerance: float = 0.0,
) -> torch.Tensor:
    """Direction of the offset, +1 / -1 / 0 per sample (SUGRM §3.3 "Direction of offset").

    ratio_s = D^p_s / D^n_s and ratio_m = D^p_m / D^n_m, the distances of F*_s and F*_m to the mean fused
    features of the positive (`pos_centre`) and negative (`neg_centre`) samples. ratio_s < ratio_m: the
    unimodal feature lies relatively closer to the positive centre than the fused one, so +1 (y_m + D^L);
    ratio_s > ratio_m -> -1; equal -> 0. By default the comparison is exact (`tie_tolerance=0`); with
    `tie_tolerance > 0`, |ratio_s - ratio_m| <= tie_tolerance counts as equal. The denominators are guarded
    with max(D^n, 1e-8) (the released code's 1e-8; clamping rather than adding it keeps exact ties exact).
    Returns float32 `(B,)`.
    """
    if not (math.isfinite(tie_tolerance) and tie_tolerance >= 0):
        raise ValueError(f"tie_tolerance must be a finite number >= 0, got {tie_tolerance!r}")
    fused, unimodal = _as_float(fused), _as_float(unimodal)
    _check_features("fused", fused)
    _check_features("unimodal", unimodal, fused.shape[0])
    pos_centre, neg_centre = _as_float(pos_centre).reshape(1, -1), _as_float(neg_centre).reshape(1, -1)

    def ratio(features: torch.Tensor) -> torch.Tensor:
        d_pos = torch.linalg.vector_norm(features - pos_centre, dim=-1)
        d_neg = torch.linalg.vector_norm(features - neg_centre, dim=-1)
        return d_pos / d_neg.clamp_min(EPS)

    difference = ratio(unimodal) - ratio(fused)
    direction = -torch.sign(difference)  # ratio_s < ratio_m -> +1
    return torch.where(difference.abs() <= tie_tolerance, torch.zeros_like(direction), direction)


def sugrm_unimodal_labels(
    fused_labels: torch.Tensor,
    fused: torch.Tensor,
    unimodal: torch.Tensor,
    pos_centre: torch.Tensor,
    neg_centre: torch.Tensor,
    d_max: torch.Tensor | float,
    H: float,
    tie_tolerance: float = 0.0,
) -> torch.Tensor:
    """ŷ_s = clamp(y_m + direction * D^L_{m->s}, -H, H) (SUGRM §3.3, the y_s cases; clamp per METHODS.md §2).

    `pos_centre` / `neg_centre` are the direction centres (mean fused features of positive / negative
    samples); `d_max` comes from `max_distance(*extreme_centres(...))`. Returns float32 `(B,)`; this is the
    epoch's generated label, to be folded into the bank with `momentum_update`.
    """
    y_m = _as_float(fused_labels).reshape(-1)
    if y_m.numel() != fused.shape[0]:
        raise ValueError(f"got {y_m.numel()} fused labels for {fused.shape[0]} feature rows")
    direction = sugrm_direction(fused, unimodal, pos_centre, neg_centre, tie_tolerance)
    magnitude = sugrm_magnitude(fused, unimodal, d_max, H)
    return torch.clamp(y_m + direction * magnitude, -H, H)


def selfmm_unimodal_labels(
    y_f: torch.Tensor,
    fused: torch.Tensor,
    unimodal: torch.Tensor,
    fused_pos_centre: torch.Tensor,
    fused_neg_centre: torch.Tensor,
    uni_pos_centre: torch.Tensor,
    uni_neg_centre: torch.Tensor,
    H: float,
) -> torch.Tensor:
    """Self-MM's generated unimodal label (released code, thuiar/MMSA `SELF_MM.py`, `update_labels`).

    Each modality lives in its own space, with its own positive / negative centres:
    d_sp, d_sn = ||F_s - C_s^+||, ||F_s - C_s^-||; d_fp, d_fn likewise for the fused feature and centres;
    δ_s = (d_sn - d_sp) / (d_sp + 1e-8), δ_f = (d_fn - d_fp) / (d_fp + 1e-8), α = δ_s / (δ_f + 1e-8)
    (the released code's guard; a denominator that is still exactly 0 is replaced by 1e-8 so no inf/NaN),
    ŷ_s = 0.5·α·y_f + 0.5·(y_f + δ_s - δ_f), clamped to [-H, H]. `y_f` is the fused (multimodal) label.
    Returns float32 `(B,)`.
    """
    _check_H(H)
    y_f = _as_float(y_f).reshape(-1)
    fused, unimodal = _as_float(fused), _as_float(unimodal)
    _check_features("fused", fused, y_f.numel())
    _check_features("unimodal", unimodal, y_f.numel())

    def distances(features: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos, neg = _as_float(pos).reshape(1, -1), _as_float(neg).reshape(1, -1)
        return (
            torch.linalg.vector_norm(features - pos, dim=-1),
            torch.linalg.vector_norm(features - neg, dim=-1),
        )

    d_sp, d_sn = distances(unimodal, uni_pos_centre, uni_neg_centre)
    d_fp, d_fn = distances(fused, fused_pos_centre, fused_neg_centre)
    delta_s = (d_sn - d_sp) / (d_sp + EPS)
    delta_f = (d_fn - d_fp) / (d_fp + EPS)
    denominator = delta_f + EPS
    denominator = torch.where(denominator == 0, torch.full_like(denominator, EPS), denominator)
    alpha = delta_s / denominator
    labels = 0.5 * alpha * y_f + 0.5 * (y_f + delta_s - delta_f)
    return torch.clamp(labels, -H, H)


def momentum_update(previous: torch.Tensor, current: torch.Tensor, epoch: int) -> torch.Tensor:
    """y_s^(e) = (e-1)/(e+1)·y_s^(e-1) + 2/(e+1)·ŷ_s, e the 1-based epoch (SUGRM §3.3 "Unimodal Label Update
    Scheme", after Self-MM).

    At e = 1 the formula reduces to `current` (weight 0 on `previous`), which is how y_s^(1) = y_m holds:
    the bank is initialised with y_m and the first epoch's call passes ŷ = y_m (or simply skips the update).
    So e = 1 returns `current` unchanged, e >= 2 blends; e < 1 (or a non-integer) raises ValueError.
    The weights favour later epochs: after epochs 1..e, ŷ^(k) has weight 2k/(e(e+1)).
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ValueError(f"epoch must be an integer >= 1 (1-based), got {epoch!r}")
    if previous.shape != current.shape:
        raise ValueError(f"previous {tuple(previous.shape)} and current {tuple(current.shape)} differ in shape")
    if epoch == 1:
        return current.clone()
    return (epoch - 1) / (epoch + 1) * previous + 2.0 / (epoch + 1) * current


def unimodal_loss_weights(y_s: torch.Tensor, y_m: torch.Tensor) -> torch.Tensor:
    """w_s^i = tanh(|y_s^i - y_m^i|) (SUGRM §3.4, from Self-MM), detached: labels are targets. `(B,)`."""
    return torch.tanh((y_s.detach().reshape(-1) - y_m.detach().reshape(-1)).abs())


def ulgm_loss(
    fused_pred: torch.Tensor,
    y_m: torch.Tensor,
    unimodal_preds: Mapping[str, torch.Tensor],
    y_s: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """L = mean_i |ŷ_m^i - y_m^i| + Σ_s mean_i w_s^i·|ŷ_s^i - y_s^i|, w_s^i = tanh(|y_s^i - y_m^i|) (SUGRM §3.4).

    The weight is per sample, inside the mean over the batch: the paper's 1/N Σ_i (...) and the released
    Self-MM `weighted_loss` (mean of weight * |pred - label|). It is not renormalised by the weights' sum.
    Predictions may be `(B,)` or `(B, 1)`; `unimodal_preds` and `y_s` must name the same modalities.
    Differentiable in the predictions only.
    """
    if set(unimodal_preds) != set(y_s):
        raise ValueError(f"unimodal_preds names {sorted(unimodal_preds)} but y_s names {sorted(y_s)}")
    target_m = y_m.detach().reshape(-1).to(device=fused_pred.device, dtype=fused_pred.dtype)
    loss = (fused_pred.reshape(-1) - target_m).abs().mean()
    for name, prediction in unimodal_preds.items():
        target_s = y_s[name].detach().reshape(-1).to(device=prediction.device, dtype=prediction.dtype)
        weights = unimodal_loss_weights(target_s, target_m.to(prediction.device)).to(prediction.dtype)
        loss = loss + (weights * (prediction.reshape(-1) - target_s).abs()).mean()
    return loss


__all__ = [
    "EPS",
    "extreme_centres",
    "max_distance",
    "sugrm_magnitude",
    "sugrm_direction",
    "sugrm_unimodal_labels",
    "selfmm_unimodal_labels",
    "momentum_update",
    "unimodal_loss_weights",
    "ulgm_loss",
]
