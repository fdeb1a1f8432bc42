"""SUGRM's model side: MRM input recalibration (§3.2.1) and the common space F*_m / F*_s (§3.2.1-3.2.2)."""

import pytest
import torch

from hf_mmbalance import MMBalanceConfig, MMBalanceConfigError, MMBalanceForRegression
from hf_mmbalance.modeling.recalibration import ModalityRecalibration

MODALITIES = {
    "text": {"input_size": 4, "encoder": "transformer", "feature_size": 8, "max_length": 6},
    "audio": 3,
}


def inputs(batch=5):
    generator = torch.Generator().manual_seed(0)
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[0, 3:] = 0
    return {"text": torch.randn(batch, 6, 4, generator=generator), "text_attention_mask": mask,
            "audio": torch.randn(batch, 3, generator=generator)}


def test_mrm_equals_the_squeeze_excitation_equations_for_sequences_and_vectors():
    torch.manual_seed(0)
    module = ModalityRecalibration({"text": 4, "audio": 3}, reduction=2)
    batch = inputs()
    out = module({"text": batch["text"], "audio": batch["audio"]}, {"text": batch["text_attention_mask"], "audio": None})
    for i in range(5):
        length = int(batch["text_attention_mask"][i].sum())
        s_text = batch["text"][i, :length].mean(0)  # masked global average pooling
        s_audio = batch["audio"][i]  # a vector is its own squeeze
        z = torch.relu(module.squeeze_to_joint.weight @ torch.cat([s_text, s_audio]) + module.squeeze_to_joint.bias)
        assert z.shape == (7 // 2,)
        gate_text = 2 * torch.sigmoid(module.excitations["text"].weight @ z + module.excitations["text"].bias)
        gate_audio = 2 * torch.sigmoid(module.excitations["audio"].weight @ z + module.excitations["audio"].bias)
        torch.testing.assert_close(out["text"][i], batch["text"][i] * gate_text)  # every position gated alike
        torch.testing.assert_close(out["audio"][i], batch["audio"][i] * gate_audio)


def test_common_space_heads_and_outputs():
    torch.manual_seed(0)
    model = MMBalanceForRegression(MMBalanceConfig(modalities=MODALITIES, task="regression", fusion="mrm",
                                                   common_space_size=5)).eval()
    out = model(**inputs(), labels=torch.zeros(5))
    assert out.projected_fused_features.shape == (5, 5) and set(out.projected_features) == {"text", "audio"}
    expected = model.fused_head(torch.relu(model.common_projections["fused"](out.fused_features)))
    torch.testing.assert_close(out.logits, expected)
    torch.testing.assert_close(out.unimodal_logits["audio"], model.unimodal_heads["audio"](out.projected_features["audio"]))
    assert out.modality_logits is None  # the fusion's own head is bypassed: no shares of these logits
    out.loss.backward()
    assert model.recalibration.squeeze_to_joint.weight.grad is not None


def test_save_and_load_keep_mrm_and_the_common_space(tmp_path):
    torch.manual_seed(0)
    model = MMBalanceForRegression(MMBalanceConfig(modalities=MODALITIES, task="regression", fusion="mrm",
                                                   common_space_size=5, mrm_reduction=2)).eval()
    model.save_pretrained(tmp_path)
    loaded = MMBalanceForRegression.from_pretrained(tmp_path).eval()
    assert loaded.config.mrm_reduction == 2 and loaded.config.common_space_size == 5
    torch.testing.assert_close(loaded(**inputs()).logits, model(**inputs()).logits, rtol=0, atol=0)


def test_bad_sugrm_settings_are_named():
    with pytest.raises(MMBalanceConfigError, match="common_space_size"):
        MMBalanceConfig(modalities={"a": 3, "b": 2}, task="regression", common_space_size=0)
    with pytest.raises(MMBalanceConfigError, match="mrm_reduction"):
        MMBalanceConfig(modalities={"a": 3, "b": 2}, fusion="mrm", mrm_reduction=0)
