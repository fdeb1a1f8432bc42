"""Ada2I fusions (AMW Eq. 8-9, AFW Eq. 3-7 and 11-12), their loss terms, and cosine shares of every fusion.

Each expected value is computed here from the module's parameters with explicit loops, independently of the
vectorized code under test.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from hf_mmbalance import MMBalanceConfig, MMBalanceConfigError, MMBalanceForClassification
from hf_mmbalance.modeling.fusion import class_cosines

# tanh encoders: features are never exactly zero, so the hand-computed cosines below need no eps.
MODALITIES = {
    "text": {"input_size": 4, "feature_size": 5, "hidden_sizes": [6], "activation": "tanh"},
    "audio": {"input_size": 3, "feature_size": 4, "hidden_sizes": [5], "activation": "tanh"},
    "video": {"input_size": 2, "feature_size": 3, "hidden_sizes": [4], "activation": "tanh"},
}
LABELS = torch.tensor([0, 1, 2, 0, 1])


def make_inputs(names=tuple(MODALITIES), batch=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, MODALITIES[name]["input_size"], generator=generator) for name in names}


def make_model(fusion, names=tuple(MODALITIES), **kwargs):
    torch.manual_seed(0)
    modalities = {name: MODALITIES[name] for name in names}
    return MMBalanceForClassification(MMBalanceConfig(modalities=modalities, num_labels=3, fusion=fusion, **kwargs))


def cosine_loop(inputs, weight):
    """cos(W_k, a_i) for every sample i and class k, one pair at a time."""
    out = torch.empty(inputs.shape[0], weight.shape[0])
    for i in range(inputs.shape[0]):
        for k in range(weight.shape[0]):
            out[i, k] = torch.dot(weight[k], inputs[i]) / (weight[k].norm() * inputs[i].norm())
    return out


def softmax_rows(matrix):
    exp = torch.exp(matrix - matrix.max(dim=-1, keepdim=True).values)
    return exp / exp.sum(dim=-1, keepdim=True)


# ----- cosine shares of the linear fusions -----
def test_cosine_shares_of_concat_sum_and_gated_fusions_match_eq16_by_hand():
    with torch.no_grad():
        concat = make_model("concat")
        out = concat(**make_inputs())
        weight, bias = concat.fusion.classifier.weight, concat.fusion.classifier.bias
        start = 0
        for name in MODALITIES:
            size = MODALITIES[name]["feature_size"]
            expected = cosine_loop(out.features[name], weight[:, start : start + size]) + bias / 3
            torch.testing.assert_close(out.modality_cosine_logits[name], expected)
            start += size

        summed = make_model("sum")
        out = summed(**make_inputs())
        for name in MODALITIES:
            head = summed.fusion.heads[name]
            expected = cosine_loop(out.features[name], head.weight) + head.bias  # that head's full bias
            torch.testing.assert_close(out.modality_cosine_logits[name], expected)

        gated = make_model("gated")
        out = gated(**make_inputs())
        fusion = gated.fusion
        z = torch.cat([out.features[name] for name in MODALITIES], dim=-1)
        hidden = fusion.classifier.weight.shape[1]
        gates = torch.sigmoid(z @ fusion.gate.weight.T + fusion.gate.bias)
        for index, name in enumerate(MODALITIES):
            projected = out.features[name] @ fusion.projections[name].weight.T + fusion.projections[name].bias
            gated_value = gates[:, index * hidden : (index + 1) * hidden] * projected  # a_m = g_m * p_m
            expected = cosine_loop(gated_value, fusion.classifier.weight) + fusion.classifier.bias / 3
            torch.testing.assert_close(out.modality_cosine_logits[name], expected)
            torch.testing.assert_close(
                out.modality_logits[name], gated_value @ fusion.classifier.weight.T + fusion.classifier.bias / 3
            )


def test_cosine_of_a_zero_vector_is_zero_with_finite_gradients():
    inputs = torch.zeros(2, 3, requires_grad=True)
    weight = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    cosines = class_cosines(inputs, weight)
    assert torch.equal(cosines, torch.zeros(2, 2))
    cosines.sum().backward()
    assert torch.isfinite(inputs.grad).all() and torch.isfinite(weight.grad).all()


def test_cosine_logits_stay_out_of_inference_outputs():
    assert "modality_cosine_logits" in MMBalanceConfig.keys_to_ignore_at_inference


# ----- AMW (Eq. 8-9) -----
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_amw_matches_eq8_and_eq9_by_hand_and_shares_sum_to_the_auxiliary_logits(scale):
    model = make_model("amw", amw_scale=scale)
    with torch.no_grad():
        out = model(**make_inputs())
        fusion = model.fusion
        weight, bias = fusion.modality_weights.weight, fusion.modality_weights.bias
        adapted = bias.expand(5, 3).clone()
        start = 0
        for name in MODALITIES:
            size = MODALITIES[name]["feature_size"]
            cosine = cosine_loop(out.features[name], weight[:, start : start + size])
            adapted += scale * cosine  # Eq. 8
            torch.testing.assert_close(out.modality_logits[name], scale * cosine + bias / 3)
            torch.testing.assert_close(out.modality_cosine_logits[name], cosine + bias / 3)
            start += size
        first, second = fusion.mlp[0], fusion.mlp[2]
        assert first.out_features == 5  # default hidden size: the largest feature size
        expected_logits = torch.relu(adapted @ first.weight.T + first.bias) @ second.weight.T + second.bias  # Eq. 9
        fusion_out = fusion(out.features)
    torch.testing.assert_close(fusion_out.auxiliary_logits, adapted)
    torch.testing.assert_close(out.fused_features, adapted)
    torch.testing.assert_close(out.logits, expected_logits)
    torch.testing.assert_close(sum(fusion_out.modality_logits.values()), fusion_out.auxiliary_logits)
    assert fusion_out.auxiliary_losses == {}


def test_amw_hidden_size_follows_fusion_hidden_size():
    assert make_model("amw", fusion_hidden_size=7).fusion.mlp[0].out_features == 7


# ----- AFW (Eq. 3-7, 11-12) -----
@pytest.mark.parametrize("names", [("text", "audio"), ("text", "audio", "video")])
def test_afw_matches_eq4_to_eq7_and_eq12_by_hand(names):
    rank, beta = 3, 0.3
    model = make_model("afw", names=names, afw_rank=rank, afw_beta=beta)
    weighting = model.fusion.feature_weighting
    with torch.no_grad():
        features = model.encode(make_inputs(names))
        result = weighting(features)
        batch = 5
        thetas = {}
        for name in names:
            w = weighting.query_key[name].weight  # rows: W_Q^(1), W_Q^(2), W_K^(1), W_K^(2)
            theta = torch.empty(batch, rank, rank)
            for i in range(batch):
                p = [w[j * rank : (j + 1) * rank] @ features[name][i] for j in range(4)]
                g_q = torch.outer(p[0], p[1])  # Eq. 5, one sample
                g_k = torch.outer(p[2], p[3])
                theta[i] = softmax_rows(g_q * g_k / math.sqrt(rank))  # Eq. 4
            thetas[name] = theta
            assert result.coefficients[name].shape == (batch, rank, rank)
            torch.testing.assert_close(result.coefficients[name], theta)
            torch.testing.assert_close(result.coefficients[name].sum(dim=-1), torch.ones(batch, rank))
        loss = torch.zeros(())
        for name in names:
            size = MODALITIES[name]["feature_size"]
            linear = weighting.attention_output[name]
            mapping = weighting.attention_mapping[name]
            z = features[name]
            for i in range(batch):
                chain = torch.linalg.multi_dot([thetas[name][i]] + [thetas[other][i] for other in names])  # Eq. 6
                att = linear.weight @ chain.reshape(-1) + linear.bias
                torch.testing.assert_close(result.attention[name][i], att)
                hidden = torch.relu(mapping[0].weight @ z[i] + mapping[0].bias)
                att_hat = mapping[2].weight @ hidden + mapping[2].bias  # Eq. 11
                torch.testing.assert_close(result.predicted_attention[name][i], att_hat)
                loss += (att - att_hat).abs().sum() / batch  # Eq. 12
            assert result.adapted_features[name].shape == (batch, size)
            # Eq. 7, from the module's own Att
            torch.testing.assert_close(result.adapted_features[name], result.attention[name] * z + beta * z)
        torch.testing.assert_close(result.feature_loss, loss)
        out = model.fusion(features)
        amw_out = model.fusion.modality_weighting(result.adapted_features)
    assert set(out.auxiliary_losses) == {"feature"}
    torch.testing.assert_close(out.auxiliary_losses["feature"], loss)
    torch.testing.assert_close(out.logits, amw_out.logits)  # AFW feeds AMW
    torch.testing.assert_close(sum(out.modality_logits.values()), out.auxiliary_logits)


# ----- losses -----
@pytest.mark.parametrize("fusion", ["amw", "afw"])
def test_default_loss_is_mean_of_prediction_terms_plus_modal_and_feature(fusion):
    model = make_model(fusion)
    out = model(labels=LABELS, **make_inputs())
    prediction = [F.cross_entropy(out.logits, LABELS)]
    prediction += [F.cross_entropy(out.unimodal_logits[m], LABELS) for m in MODALITIES]
    modal = F.cross_entropy(out.fused_features, LABELS)  # Eq. 13 on Z^{m-adapt}
    expected = torch.stack(prediction).mean() + modal
    terms = {"fused", *MODALITIES, "modal"}
    if fusion == "afw":
        feature = model.fusion.feature_weighting(out.features).feature_loss
        expected = expected + feature
        terms.add("feature")
        torch.testing.assert_close(out.loss_terms["feature"], feature)
    assert set(out.loss_terms) == terms
    torch.testing.assert_close(out.loss_terms["modal"], modal)
    torch.testing.assert_close(out.loss, expected)


def test_loss_weights_weight_modal_and_feature():
    model = make_model("afw", loss_weights={"fused": 2.0, "modal": 0.5, "feature": 0.25, "text": 0.0})
    out = model(labels=LABELS, **make_inputs())
    t = out.loss_terms
    expected = 2.0 * t["fused"] + 0.5 * t["modal"] + 0.25 * t["feature"] + t["audio"] + t["video"]
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("fusion", ["amw", "afw"])
def test_backward_reaches_every_encoder_parameter(fusion):
    model = make_model(fusion)
    model(labels=LABELS, **make_inputs()).loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_feature_loss_alone_trains_the_encoders_and_the_attention():
    model = make_model("afw")
    model(labels=LABELS, **make_inputs()).loss_terms["feature"].backward()
    for name, parameter in model.named_parameters():
        if name.startswith(("encoders.", "fusion.feature_weighting.")):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


# ----- save / load -----
@pytest.mark.parametrize("fusion", ["amw", "afw"])
def test_save_and_load_round_trip_gives_identical_logits(tmp_path, fusion):
    model = make_model(fusion, afw_rank=2, afw_beta=0.75, amw_scale=4.0).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["fusion"], saved["afw_rank"], saved["afw_beta"], saved["amw_scale"]) == (fusion, 2, 0.75, 4.0)
    inputs = make_inputs()
    for loaded in (
        MMBalanceForClassification.from_pretrained(tmp_path),
        AutoModelForSequenceClassification.from_pretrained(tmp_path),
    ):
        loaded.eval()
        assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)
        assert torch.equal(model(**inputs).fused_features, loaded(**inputs).fused_features)


# ----- configuration -----
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"afw_beta": 1.5}, "afw_beta"),
        ({"afw_beta": -0.1}, "afw_beta"),
        ({"afw_rank": 0}, "afw_rank"),
        ({"afw_rank": 2.0}, "afw_rank"),
        ({"amw_scale": 0.0}, "amw_scale"),
        ({"fusion": "attention"}, r"fusion='attention' is unknown.*'amw', 'afw'"),
        ({"loss_weights": {"feature": 1.0}}, r"loss_weights.*\['feature'\].*fusion='concat'"),
        ({"loss_weights": {"modal": 1.0}, "fusion": "gated"}, r"loss_weights.*\['modal'\]"),
        ({"loss_weights": {"feature": 1.0}, "fusion": "amw"}, r"loss_weights.*\['feature'\].*fusion='amw'"),
        ({"fusion": "afw", "task": "regression"}, "classification only"),
        ({"fusion": "amw", "modalities": {"modal": 3, "b": 2}}, "named like"),
    ],
)
def test_bad_ada2i_config_values_name_the_field(kwargs, message):
    arguments = {"modalities": {"a": 3, "b": 2}, "num_labels": 3, **kwargs}
    with pytest.raises(MMBalanceConfigError, match=message):
        MMBalanceConfig(**arguments)


def test_a_modality_named_like_an_ada2i_term_is_fine_without_ada2i_fusion():
    config = MMBalanceConfig(modalities={"modal": 3, "b": 2}, num_labels=3, loss_weights={"modal": 2.0})
    assert config.auxiliary_loss_terms == ()
    assert MMBalanceConfig(modalities={"a": 3}, num_labels=3, fusion="afw").auxiliary_loss_terms == ("modal", "feature")
