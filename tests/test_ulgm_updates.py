"""ULGM label generation (SUGRM §3.3-3.4, Self-MM) on tiny hand-made 2-D features."""

from __future__ import annotations

import math

import pytest
import torch

from hf_mmbalance.methods.ulgm.config import ULGMConfig
from hf_mmbalance.methods.ulgm.updates import (
    common_space_alignment_loss,
    extreme_centres,
    max_distance,
    momentum_update,
    selfmm_unimodal_labels,
    sugrm_direction,
    sugrm_magnitude,
    sugrm_unimodal_labels,
    ulgm_loss,
    unimodal_loss_weights,
)

H = 3.0
POS = torch.tensor([1.0, 0.0])  # mean fused feature of positive samples
NEG = torch.tensor([-1.0, 0.0])  # mean fused feature of negative samples
# D_max = ||POS - NEG|| = 2


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


# --- centres and D_max -------------------------------------------------------------------------------


def test_extreme_centres_use_exact_plus_minus_H_when_present():
    labels = torch.tensor([3.0, -3.0, 2.9, 3.0, -3.0, -2.9])
    features = t([2, 0], [-2, 0], [9, 9], [4, 2], [-4, -2], [7, 7])
    pos, neg = extreme_centres(features, labels, H)
    # +3 rows 0 and 3: ((2,0)+(4,2))/2 = (3,1); -3 rows 1 and 4: (-3,-1). 2.9 / -2.9 are ignored.
    assert torch.equal(pos, torch.tensor([3.0, 1.0]))
    assert torch.equal(neg, torch.tensor([-3.0, -1.0]))
    assert max_distance(pos, neg).item() == pytest.approx(math.sqrt(36 + 4))


def test_extreme_centres_fall_back_to_quantiles_without_exact_H():
    labels = torch.tensor([2.8, 2.6, -2.9, -2.4, 0.0, 1.0, -1.0, 0.5, -0.5, 2.0])
    features = torch.stack([torch.arange(10.0), torch.zeros(10)], dim=1)  # row i = (i, 0)
    # q = 0.05, N = 10: ceil(0.5) = 1 sample per side: the max 2.8 (row 0) and the min -2.9 (row 2).
    pos, neg = extreme_centres(features, labels, H)
    assert torch.equal(pos, torch.tensor([0.0, 0.0]))
    assert torch.equal(neg, torch.tensor([2.0, 0.0]))
    # q = 0.25: ceil(2.5) = 3 samples: top 2.8, 2.6, 2.0 (rows 0, 1, 9) -> x = 10/3; bottom -2.9, -2.4, -1.0
    # (rows 2, 3, 6) -> x = 11/3.
    pos, neg = extreme_centres(features, labels, H, extreme_quantile=0.25)
    assert pos.tolist() == pytest.approx([10 / 3, 0.0])
    assert neg.tolist() == pytest.approx([11 / 3, 0.0])


def test_extreme_centres_mixed_sides_ties_and_errors():
    # +3 present (rows 0, 1), -3 absent: negative side falls back to the minimum -1, tied on rows 2 and 3.
    labels = torch.tensor([3.0, 3.0, -1.0, -1.0, 0.0])
    features = t([1, 1], [3, 3], [0, -2], [0, -4], [5, 5])
    pos, neg = extreme_centres(features, labels, H)
    assert torch.equal(pos, torch.tensor([2.0, 2.0]))
    assert torch.equal(neg, torch.tensor([0.0, -3.0]))
    with pytest.raises(ValueError, match="empty"):
        extreme_centres(torch.zeros(0, 2), torch.zeros(0), H)
    with pytest.raises(ValueError, match="extreme_quantile"):
        extreme_centres(features, labels, H, extreme_quantile=0.0)
    with pytest.raises(ValueError, match="labels"):
        extreme_centres(features, labels[:3], H)


# --- SUGRM magnitude, direction, labels --------------------------------------------------------------


def test_direction_plus_minus_and_ties():
    fused = t([0, 0], [0, 0], [0, 0], [0.3, 0.7])
    # fused (0,0): D^p_m = D^n_m = 1 -> ratio_m = 1.
    unimodal = t(
        [0.5, 0],  # D^p_s = 0.5, D^n_s = 1.5 -> 1/3 < 1 -> +1
        [-0.5, 0],  # 1.5 / 0.5 = 3 > 1 -> -1
        [0, 2],  # sqrt(5) / sqrt(5) = 1 = ratio_m -> 0
        [0.3, 0.7],  # identical to its fused feature -> 0
    )
    assert sugrm_direction(fused, unimodal, POS, NEG).tolist() == [1.0, -1.0, 0.0, 0.0]
    # A tolerance turns a near-tie into a tie: (0.01, 0): 0.99/1.01 ~ 0.980 vs 1.
    near = t([0.01, 0])
    assert sugrm_direction(t([0, 0]), near, POS, NEG).tolist() == [1.0]
    assert sugrm_direction(t([0, 0]), near, POS, NEG, tie_tolerance=0.05).tolist() == [0.0]


def test_magnitude_is_clipped_at_d_max():
    d_max = max_distance(POS, NEG)
    assert d_max.item() == 2.0
    fused = t([0, 0], [0, 0], [0, 0])
    unimodal = t([0.5, 0], [0, 2], [10, 0])
    # 2H * min(d, 2) / 2 with d = 0.5, 2, 10 -> 1.5, 6, 6 (= 2H, clipped)
    assert sugrm_magnitude(fused, unimodal, d_max, H).tolist() == [1.5, 6.0, 6.0]


def test_d_max_zero_gives_zero_magnitude_without_nan():
    features = t([1, 1], [1, 1])
    pos, neg = extreme_centres(features, torch.tensor([0.0, 0.0]), H)  # both sides fall back to all rows
    d_max = max_distance(pos, neg)
    assert d_max.item() == 0.0
    magnitude = sugrm_magnitude(t([0, 0]), t([5, 5]), d_max, H)
    assert magnitude.tolist() == [0.0]
    labels = sugrm_unimodal_labels(torch.tensor([1.2]), t([0, 0]), t([5, 5]), pos, neg, d_max, H)
    assert labels.tolist() == pytest.approx([1.2]) and not torch.isnan(labels).any()


def test_sugrm_labels_offset_and_clamp():
    d_max = max_distance(POS, NEG)
    y_m = torch.tensor([1.0, -1.0, 2.0, -2.0, 0.5])
    fused = torch.zeros(5, 2)
    unimodal = t(
        [0.5, 0],  # +1, magnitude 1.5 -> 1 + 1.5 = 2.5
        [-0.5, 0],  # -1, magnitude 1.5 -> -1 - 1.5 = -2.5
        [10, 0],  # ratio 9/11 < 1 -> +1, magnitude 6 (clipped) -> 8 -> clamp 3
        [-10, 0],  # ratio 11/9 > 1 -> -1, magnitude 6 -> -8 -> clamp -3
        [0, 2],  # tie -> y_m
    )
    labels = sugrm_unimodal_labels(y_m, fused, unimodal, POS, NEG, d_max, H)
    assert labels.tolist() == pytest.approx([2.5, -2.5, 3.0, -3.0, 0.5])


# --- Self-MM ---------------------------------------------------------------------------------------


def test_selfmm_label_by_hand():
    # unimodal (0.5, 0), its centres (1,0)/(-1,0): d_sp = 0.5, d_sn = 1.5 -> delta_s = 1 / 0.5 = 2.
    # fused (0, -0.5), its centres (0,1)/(0,-1): d_fp = 1.5, d_fn = 0.5 -> delta_f = -1 / 1.5 = -2/3.
    # alpha = 2 / (-2/3) = -3; y_f = 1: 0.5 * -3 * 1 + 0.5 * (1 + 2 + 2/3) = -1.5 + 11/6 = 1/3.
    label = selfmm_unimodal_labels(
        torch.tensor([1.0]), t([0, -0.5]), t([0.5, 0]), torch.tensor([0.0, 1.0]), torch.tensor([0.0, -1.0]), POS, NEG, H
    )
    assert label.tolist() == pytest.approx([1 / 3], rel=1e-5)


def test_selfmm_zero_delta_f_is_finite_and_clamped():
    # fused (0,0) is equidistant from its centres: delta_f = 0, alpha = 2 / 1e-8 -> huge, clamped to +H.
    label = selfmm_unimodal_labels(
        torch.tensor([1.0]), t([0, 0]), t([0.5, 0]), torch.tensor([0.0, 1.0]), torch.tensor([0.0, -1.0]), POS, NEG, H
    )
    assert torch.isfinite(label).all() and label.tolist() == [3.0]


# --- momentum ---------------------------------------------------------------------------------------


def test_momentum_sequence_epochs_1_to_4():
    y_m = torch.tensor([1.0])
    generated = {2: torch.tensor([3.0]), 3: torch.tensor([0.0]), 4: torch.tensor([-1.0])}
    y = momentum_update(torch.tensor([123.0]), y_m, epoch=1)  # e = 1: y^(1) = y_m, previous ignored
    assert y.tolist() == [1.0]
    expected = {2: 7 / 3, 3: 7 / 6, 4: 3 / 10}  # 1/3*1 + 2/3*3; 2/4*7/3 + 2/4*0; 3/5*7/6 + 2/5*(-1)
    for epoch in (2, 3, 4):
        y = momentum_update(y, generated[epoch], epoch)
        assert y.item() == pytest.approx(expected[epoch])
    # Equivalently weights 2k/(e(e+1)) = 0.1, 0.2, 0.3, 0.4 on the labels of epochs 1..4.
    assert y.item() == pytest.approx(0.1 * 1 + 0.2 * 3 + 0.3 * 0 + 0.4 * -1)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="epoch"):
            momentum_update(y, y, bad)


# --- loss -------------------------------------------------------------------------------------------


def test_loss_weights_and_ulgm_loss_by_hand():
    y_m = torch.tensor([1.0, 0.0])
    y_s = {"text": torch.tensor([1.0, 2.0]), "audio": torch.tensor([0.0, 0.0])}
    assert unimodal_loss_weights(y_s["text"], y_m).tolist() == pytest.approx([0.0, math.tanh(2.0)])
    fused_pred = torch.tensor([1.5, -1.0], requires_grad=True)
    preds = {
        "text": torch.tensor([5.0, 1.0], requires_grad=True),
        "audio": torch.tensor([[2.0], [7.0]], requires_grad=True),  # (B, 1) is accepted
    }
    loss = ulgm_loss(fused_pred, y_m, preds, y_s)
    # fused: (0.5 + 1) / 2 = 0.75; text: mean(0 * 4, tanh(2) * 1) = tanh(2)/2;
    # audio: weights tanh(|0-1|), tanh(0) = (tanh 1, 0): mean(tanh(1) * 2, 0 * 7) = tanh(1).
    assert loss.item() == pytest.approx(0.75 + math.tanh(2.0) / 2 + math.tanh(1.0), rel=1e-6)
    loss.backward()
    # d/dpred of tanh(2)/2 * |1 - 2| at pred 1 < target 2: -tanh(2)/2; the zero-weight sample gets 0.
    assert preds["text"].grad.tolist() == pytest.approx([0.0, -math.tanh(2.0) / 2])
    with pytest.raises(ValueError, match="names"):
        ulgm_loss(fused_pred, y_m, {"text": preds["text"]}, y_s)


def test_common_space_alignment_loss_by_hand():
    fused = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    unimodal = {"text": torch.tensor([[1.0, 1.0], [3.0, 2.0]], requires_grad=True),
                "audio": torch.tensor([[0.0, 0.0], [0.0, 0.0]], requires_grad=True)}
    loss = common_space_alignment_loss(fused, unimodal)
    # text: mean(1, 9) = 5; audio: mean(1, 4) = 2.5
    assert loss.item() == pytest.approx(7.5)
    loss.backward()
    assert fused.grad is None  # F*_m is the target: stop-gradient
    # d/dF_s of mean_i ||F_s - F_m||^2 = 2 (F_s - F_m) / B
    assert unimodal["text"].grad.tolist() == [[0.0, 1.0], [3.0, 0.0]]
    assert unimodal["audio"].grad.tolist() == [[-1.0, 0.0], [0.0, -2.0]]
    with pytest.raises(ValueError, match="common_space_size"):
        common_space_alignment_loss(fused, {"text": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="rows"):
        common_space_alignment_loss(fused, {"text": torch.zeros(3, 2)})


def test_alignment_weight_defaults_per_variant_and_bad_values_are_named():
    assert ULGMConfig().alignment_weight == 0.03  # sugrm
    assert ULGMConfig(variant="selfmm").alignment_weight == 0.0
    assert ULGMConfig(alignment_weight=0).alignment_weight == 0.0  # the paper's loss
    for bad in (-0.1, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="alignment_weight"):
            ULGMConfig(alignment_weight=bad)


def test_stacked_modalities_give_the_per_modality_labels():
    """The callback generates every modality at once from a (M, B, d) stack: the same numbers as one call each."""
    generator = torch.Generator().manual_seed(0)
    fused, y = torch.randn(6, 3, generator=generator), torch.tensor([3.0, -3.0, 1.0, -0.5, 2.0, 0.0])
    unimodal = torch.randn(2, 6, 3, generator=generator)
    pos, neg = torch.randn(3, generator=generator), torch.randn(3, generator=generator)
    uni_pos, uni_neg = torch.randn(2, 3, generator=generator), torch.randn(2, 3, generator=generator)
    stacked = sugrm_unimodal_labels(y, fused, unimodal, pos, neg, torch.tensor(1.5), H)
    selfmm = selfmm_unimodal_labels(y, fused, unimodal, pos, neg, uni_pos, uni_neg, H)
    assert stacked.shape == selfmm.shape == (2, 6)
    for m in range(2):
        torch.testing.assert_close(stacked[m], sugrm_unimodal_labels(y, fused, unimodal[m], pos, neg, torch.tensor(1.5), H))
        torch.testing.assert_close(selfmm[m], selfmm_unimodal_labels(y, fused, unimodal[m], pos, neg, uni_pos[m], uni_neg[m], H))
    with pytest.raises(ValueError, match="common_space_size"):
        sugrm_unimodal_labels(y, fused, torch.zeros(6, 4), pos, neg, 1.5, H)
