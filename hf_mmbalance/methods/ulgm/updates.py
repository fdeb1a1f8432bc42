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


def _check_features(name: str, features: torch.Tensor, batch: int | None = None, stacked: bool = False) -> None:
    """(batch, dim); with `stacked`, also (modalities, batch, dim)."""
    shapes = "(batch, dim) or (modalities, batch, dim)" if stacked else "(batch, dim)"
    if features.ndim != 2 and not (stacked and features.ndim == 3):
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(features.shape)}")
    if batch is not None and features.shape[-2] != batch:
        raise ValueError(f"{name} has {features.shape[-2]} rows, expected {batch}")


def _check_same_size(fused: torch.Tensor, unimodal: torch.Tensor) -> None:
    if fused.shape[-1] != unimodal.shape[-1]:
        raise ValueError(
            f"SUGRM measures F*_s against F*_m in one common space, got sizes {unimodal.shape[-1]} and "
            f"{fused.shape[-1]}: set MMBalanceConfig.common_space_size"
        )


def _as_centre(centre: torch.Tensor) -> torch.Tensor:
    """(dim,) -> (1, dim); a per-modality (modalities, dim) -> (modalities, 1, dim): broadcasts over the batch."""
    return _as_float(centre).unsqueeze(-2)


def _check_H(H: float) -> None:
    if not (math.isfinite(H) and H > 0):
        raise ValueError(f"H must be a finite number > 0, got {H!r}")


def quantile_count(quantile: float, total: int) -> int:
    """ceil(quantile * total), without float noise: 0.07 * 100 is 7.000000000000001 in binary floating point, whose
    ceil is 8; a product within 1e-9 (relative) of an integer counts as that integer, so q = 0.07 of N = 100 takes 7."""
    product = quantile * total
    nearest = round(product)
    if abs(product - nearest) <= 1e-9 * max(1.0, abs(product)):
        return int(nearest)
    return math.ceil(product)


def _extreme_side(labels: torch.Tensor, exact_value: float, largest: bool, extreme_quantile: float) -> torch.Tensor:
    """Samples labelled exactly `exact_value`; if there are none, the ceil(q*N) largest (or smallest) labels
    (`quantile_count`), at least one, plus every sample tied with the last of them (so the choice is deterministic)."""
    exact = labels == exact_value
    if bool(exact.any()):
        return exact
    count = max(1, quantile_count(extreme_quantile, labels.numel()))
    ordered = torch.sort(labels, descending=largest).values
    boundary = ordered[count - 1]
    return labels >= boundary if largest else labels <= boundary


def extreme_masks(labels: torch.Tensor, H: float, extreme_quantile: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks of the samples whose fused features make the +H and the -H centre of `extreme_centres`."""
    _check_H(H)
    if not (0.0 < extreme_quantile <= 1.0):
        raise ValueError(f"extreme_quantile must be in (0, 1], got {extreme_quantile!r}")
    labels = _as_float(labels).reshape(-1)
    if labels.numel() == 0:
        raise ValueError("extreme_masks needs at least one label, got none")
    return _extreme_side(labels, float(H), True, extreme_quantile), _extreme_side(labels, -float(H), False, extreme_quantile)


def extreme_centres(
    fused_features: torch.Tensor, labels: torch.Tensor, H: float, extreme_quantile: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean F*_m of the samples with y = +H, mean F*_m of those with y = -H) over the stored fused features.

    These are the centres of SUGRM §3.3 "Magnitude of offset" (D_max = ||mean F*_m^{+H} - mean F*_m^{-H}||).
    The released code takes the samples labelled exactly +/-H and crashes (mean of nothing) when there are
    none; here, per side independently (METHODS.md §2), when no label equals +H exactly the samples in the top
    `extreme_quantile` of labels are used instead (the ceil(q*N) largest labels, `quantile_count`, at least one,
    ties with the last one included), and likewise the bottom quantile for -H. Never crashes on non-empty input.

    Args: fused_features `(N, d)`, labels `(N,)` (or `(N, 1)`), H > 0, extreme_quantile in (0, 1].
    Returns two float32 tensors of shape `(d,)`.
    """
    features = _as_float(fused_features)
    labels = _as_float(labels).reshape(-1)
    _check_features("fused_features", features)
    if features.shape[0] == 0 or labels.numel() == 0:
        raise ValueError("extreme_centres needs at least one stored sample, got an empty feature bank")
    if labels.numel() != features.shape[0]:
        raise ValueError(f"got {labels.numel()} labels for {features.shape[0]} feature rows")
    positive, negative = extreme_masks(labels, H, extreme_quantile)
    return features[positive].mean(dim=0), features[negative].mean(dim=0)


def max_distance(pos_centre: torch.Tensor, neg_centre: torch.Tensor) -> torch.Tensor:
    """D_max^F = ||mean F*_m^{+H} - mean F*_m^{-H}|| (SUGRM §3.3), a float32 scalar tensor."""
    return torch.linalg.vector_norm(_as_float(pos_centre) - _as_float(neg_centre))


def sugrm_magnitude(fused: torch.Tensor, unimodal: torch.Tensor, d_max: torch.Tensor | float, H: float) -> torch.Tensor:
    """D^L_{m->s} = 2H * min(||F*_m - F*_s||, D_max) / D_max, per sample (SUGRM §3.3, the clipped distance and
    D^F/D_max = D^L/D^L_{-H->+H} with D^L_{-H->+H} = 2H).

    A unimodal feature farther than D_max gets exactly 2H. D_max = 0 (the +H and -H centres coincide, e.g.
    at initialisation) gives a magnitude of 0 for every sample, never NaN. `unimodal` is `(B, d)`, or
    `(M, B, d)` for M modalities at once. Returns float32 `(B,)` (or `(M, B)`).
    """
    _check_H(H)
    fused, unimodal = _as_float(fused), _as_float(unimodal)
    _check_features("fused", fused)
    _check_features("unimodal", unimodal, fused.shape[0], stacked=True)
    _check_same_size(fused, unimodal)
    d_max = torch.as_tensor(d_max, dtype=torch.float32, device=fused.device).detach()
    distance = torch.linalg.vector_norm(fused - unimodal, dim=-1)
    # A select, not `if d_max > 0`: no host sync per step (the divisor is 1 where D_max = 0, whose result is dropped).
    positive = d_max > 0
    magnitude = 2.0 * H * torch.minimum(distance, d_max) / torch.where(positive, d_max, torch.ones_like(d_max))
    return torch.where(positive, magnitude, torch.zeros_like(magnitude))


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
    `unimodal` is `(B, d)`, or `(M, B, d)` for M modalities at once. Returns float32 `(B,)` (or `(M, B)`).
    """
    if not (math.isfinite(tie_tolerance) and tie_tolerance >= 0):
        raise ValueError(f"tie_tolerance must be a finite number >= 0, got {tie_tolerance!r}")
    fused, unimodal = _as_float(fused), _as_float(unimodal)
    _check_features("fused", fused)
    _check_features("unimodal", unimodal, fused.shape[0], stacked=True)
    _check_same_size(fused, unimodal)
    pos_centre, neg_centre = _as_centre(pos_centre), _as_centre(neg_centre)

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
    samples); `d_max` comes from `max_distance(*extreme_centres(...))`. Returns float32 `(B,)` (`(M, B)` for a
    stacked `(M, B, d)` unimodal input); this is the epoch's generated label, to be folded into the bank with
    `momentum_update`.
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
    For M modalities at once, `unimodal` is `(M, B, d)` and its centres `(M, d)`. Returns float32 `(B,)` (or
    `(M, B)`).
    """
    _check_H(H)
    y_f = _as_float(y_f).reshape(-1)
    fused, unimodal = _as_float(fused), _as_float(unimodal)
    _check_features("fused", fused, y_f.numel())
    _check_features("unimodal", unimodal, y_f.numel(), stacked=True)

    def distances(features: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos, neg = _as_centre(pos), _as_centre(neg)
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
    """w_s^i = tanh(|y_s^i - y_m^i|) (SUGRM §3.4, from Self-MM), detached: labels are targets. `y_s` is `(B,)`
    (or `(M, B)` for M modalities); `y_m` is `(B,)`. Returns y_s's shape."""
    y_m, y_s = y_m.detach().reshape(-1), y_s.detach()
    if y_s.ndim == 1 or y_s.shape[-1] != y_m.numel():  # (B,) or (B, 1)
        y_s = y_s.reshape(-1)
    return torch.tanh((y_s - y_m).abs())


def ulgm_loss_terms(
    fused_pred: torch.Tensor,
    y_m: torch.Tensor,
    unimodal_preds: Mapping[str, torch.Tensor],
    y_s: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """The terms of SUGRM §3.4's loss: {"fused": mean_i |ŷ_m^i - y_m^i|, s: mean_i w_s^i·|ŷ_s^i - y_s^i|},
    w_s^i = tanh(|y_s^i - y_m^i|).

    The weight is per sample, inside the mean over the batch: the paper's 1/N Σ_i (...) and the released
    Self-MM `weighted_loss` (mean of weight * |pred - label|). It is not renormalised by the weights' sum.
    Predictions may be `(B,)` or `(B, 1)`; `unimodal_preds` and `y_s` must name the same modalities.
    Differentiable in the predictions only.
    """
    if set(unimodal_preds) != set(y_s):
        raise ValueError(f"unimodal_preds names {sorted(unimodal_preds)} but y_s names {sorted(y_s)}")
    # Every head as one (1 + M, B) stack, fused first with weight 1: a handful of kernels for all the terms.
    names = list(unimodal_preds)
    predictions = torch.stack([fused_pred.reshape(-1), *(unimodal_preds[name].reshape(-1) for name in names)])
    targets = torch.stack([y_m.detach().reshape(-1), *(y_s[name].detach().reshape(-1) for name in names)])
    targets = targets.to(predictions.device, predictions.dtype)
    weights = unimodal_loss_weights(targets, targets[0])
    weights[0] = 1.0
    return dict(zip(["fused", *names], (weights * (predictions - targets).abs()).mean(dim=-1).unbind()))


def ulgm_loss(
    fused_pred: torch.Tensor,
    y_m: torch.Tensor,
    unimodal_preds: Mapping[str, torch.Tensor],
    y_s: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """L = mean_i |ŷ_m^i - y_m^i| + Σ_s mean_i w_s^i·|ŷ_s^i - y_s^i| (SUGRM §3.4): the sum of `ulgm_loss_terms`."""
    return sum(ulgm_loss_terms(fused_pred, y_m, unimodal_preds, y_s).values())


def common_space_alignment_loss(fused: torch.Tensor, unimodal: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Σ_s mean_i ||F*_s^i - sg(F*_m^i)||², sg = stop-gradient: pulls each unimodal feature towards its sample's
    fused feature in the common space. NOT in SUGRM's loss (§3.4); `ULGMConfig.alignment_weight` adds it.

    Why: ULGM's rule measures F*_s against the fused features (the distance ||F*_m - F*_s|| and the fused
    positive / negative centres), which only means something if F*_s lies in the fused features' region — the
    paper's "common semantic feature space" hypothesis. Nothing in the paper's architecture puts it there: F*_s
    and F*_m come from independent projections (also in the released code), and the unimodal heads get no
    gradient in epoch 1 (tanh(|y_m - y_m|) = 0). An F*_s far from both centres has D^p_s / D^n_s ≈ 1, so every
    positive sample gets direction − and negative ones +, with the full magnitude 2H: the generated labels
    come out anti-correlated with the true ones (benchmarks/results/ulgm.md). Regressing F*_s onto the
    (detached) F*_m makes F*_s the fused feature predicted from modality s alone, whose position relative to
    the centres is the modality's own sentiment. Differentiable in `unimodal` only; float32 result.
    """
    target = _as_float(fused)
    _check_features("fused", target)
    for name, features in unimodal.items():
        _check_features(f"unimodal[{name!r}]", features, target.shape[0])
        if features.shape[-1] != target.shape[-1]:
            raise ValueError(
                f"the common-space alignment needs F*_s and F*_m of one size, got {name!r} {features.shape[-1]} "
                f"vs fused {target.shape[-1]}: set MMBalanceConfig.common_space_size"
            )
    if not unimodal:
        return target.new_zeros(())
    stacked = torch.stack([features.float() for features in unimodal.values()])  # (M, B, d)
    return (stacked - target).pow(2).sum(dim=-1).mean(dim=-1).sum()


__all__ = [
    "EPS",
    "common_space_alignment_loss",
    "extreme_centres",
    "extreme_masks",
    "quantile_count",
    "max_distance",
    "sugrm_magnitude",
    "sugrm_direction",
    "sugrm_unimodal_labels",
    "selfmm_unimodal_labels",
    "momentum_update",
    "unimodal_loss_weights",
    "ulgm_loss",
]
