"""Models: config validation, fusions, losses, save/load round trips, Auto classes, remote code."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, BertConfig, BertModel

from hf_mmbalance import (
    MMBalanceConfig,
    MMBalanceConfigError,
    MMBalanceForClassification,
    MMBalanceForRegression,
    MMBalanceModel,
)

MODALITIES = {
    "zeta": 5,  # deliberately not alphabetical: the order must survive JSON's sorted keys
    "alpha": {"input_size": 3, "feature_size": 8, "hidden_sizes": [16, 12]},
    "seq": {"input_size": 4, "encoder": "transformer", "feature_size": 8, "max_length": 10},
}


def make_inputs(batch=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 7, dtype=torch.long)
    mask[0, 4:] = 0
    return {
        "zeta": torch.randn(batch, 5, generator=generator),
        "alpha": torch.randn(batch, 3, generator=generator),
        "seq": torch.randn(batch, 7, 4, generator=generator),
        "seq_attention_mask": mask,
    }


def make_model(fusion="concat", **kwargs):
    torch.manual_seed(0)
    return MMBalanceForClassification(MMBalanceConfig(modalities=MODALITIES, num_labels=3, fusion=fusion, **kwargs))


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated"])
def test_modality_logits_are_additive_shares_of_the_fused_logits(fusion):
    model = make_model(fusion)
    out = model(**make_inputs())
    assert out.logits.shape == (6, 3)
    assert list(out.modality_logits) == ["zeta", "alpha", "seq"]
    torch.testing.assert_close(sum(out.modality_logits.values()), out.logits, atol=1e-5, rtol=1e-5)
    assert {k: v.shape for k, v in out.features.items()} == {"zeta": (6, 32), "alpha": (6, 8), "seq": (6, 8)}
    assert {k: v.shape for k, v in out.unimodal_logits.items()} == {k: (6, 3) for k in MODALITIES}


def test_concat_share_matches_released_ogm_ge_split():
    model = make_model("concat")
    out = model(**make_inputs())
    weight, bias = model.fusion.classifier.weight, model.fusion.classifier.bias
    z = out.features["alpha"]
    expected = z @ weight[:, 32:40].T + bias / 3  # W_m z_m + b / M
    torch.testing.assert_close(out.modality_logits["alpha"], expected)


def test_attention_mask_hides_padded_positions():
    model = make_model().eval()
    inputs = make_inputs()
    changed = dict(inputs, seq=inputs["seq"].clone())
    changed["seq"][0, 5:] = 100.0  # sample 0 is masked from position 4 on
    torch.testing.assert_close(model(**inputs).features["seq"][0], model(**changed).features["seq"][0])


def test_default_loss_is_the_mean_of_fused_and_unimodal_ce_bmmal_eq1():
    model = make_model()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(labels=labels, **make_inputs())
    terms = [F.cross_entropy(out.logits, labels)] + [F.cross_entropy(out.unimodal_logits[m], labels) for m in MODALITIES]
    torch.testing.assert_close(out.loss, torch.stack(terms).mean())
    assert set(out.loss_terms) == {"fused", *MODALITIES}


def test_loss_weights_weight_each_term():
    model = make_model(loss_weights={"fused": 1.0, "zeta": 0.5, "alpha": 0.0, "seq": 2.0})
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(labels=labels, **make_inputs())
    t = out.loss_terms
    torch.testing.assert_close(out.loss, t["fused"] + 0.5 * t["zeta"] + 2.0 * t["seq"])


def test_regression_model_uses_l1_on_every_head():
    torch.manual_seed(0)
    model = MMBalanceForRegression(MMBalanceConfig(modalities={"a": 4, "b": 2}, task="regression"))
    inputs = {"a": torch.randn(5, 4), "b": torch.randn(5, 2)}
    labels = torch.randn(5)
    out = model(labels=labels, **inputs)
    assert model.config.num_labels == 1 and out.logits.shape == (5, 1)
    expected = torch.stack(
        [F.l1_loss(out.logits[:, 0], labels)] + [F.l1_loss(out.unimodal_logits[m][:, 0], labels) for m in "ab"]
    ).mean()
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"fusion": "attention"}, "fusion"),
        ({"task": "ranking"}, "task"),
        ({"modalities": {"a": {"input_size": 3, "encoder": "cnn"}}}, "encoder"),
        ({"modalities": {"a": 0}}, "input_size"),
        ({"modalities": {"a": "big"}}, "modalities"),
        ({"modalities": {"a": {"encoder": "auto"}}}, "backbone"),
        ({"loss_weights": {"fused": 1.0, "video": 1.0}}, "loss_weights"),
        ({"loss_weights": {"fused": -1.0}}, "loss_weights"),
        ({"num_labels": 1}, "num_labels"),
    ],
)
def test_bad_config_values_name_the_field(kwargs, field):
    arguments = {"modalities": {"a": 3}, "num_labels": 3, **kwargs}
    with pytest.raises(MMBalanceConfigError, match=field):
        MMBalanceConfig(**arguments)


def test_bad_forward_inputs_name_the_modality():
    model = make_model()
    inputs = make_inputs()
    with pytest.raises(ValueError, match="missing modality inputs \\['alpha'\\]"):
        model(**{k: v for k, v in inputs.items() if k != "alpha"})
    with pytest.raises(ValueError, match="modality 'zeta'.*features=5.*\\(6, 4\\)"):
        model(**dict(inputs, zeta=torch.randn(6, 4)))
    with pytest.raises(ValueError, match="unexpected model inputs \\['video'\\]"):
        model(video=torch.randn(6, 2), **inputs)
    with pytest.raises(ValueError, match="labels must lie in \\[0, 3\\).*\\[0, 3\\]"):
        model(labels=torch.tensor([0, 1, 2, 3, 0, 1]), **inputs)
    with pytest.raises(ValueError, match="labels must be integer"):
        model(labels=torch.zeros(6), **inputs)


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated"])
def test_save_and_load_round_trip_gives_identical_outputs(tmp_path, fusion):
    model = make_model(fusion).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    assert json.loads((tmp_path / "config.json").read_text())["modality_order"] == ["zeta", "alpha", "seq"]
    loaded = MMBalanceForClassification.from_pretrained(tmp_path).eval()
    assert list(loaded.config.modalities) == ["zeta", "alpha", "seq"]
    inputs = make_inputs()
    assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(auto, MMBalanceForClassification)
    assert torch.equal(model(**inputs).logits, auto(**inputs).logits)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MMBalanceConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), MMBalanceModel)


def _tiny_bert(path):
    torch.manual_seed(1)
    config = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    bert = BertModel(config)
    bert.save_pretrained(path)
    return bert


def test_auto_backbone_encoder_loads_pretrained_weights_and_round_trips(tmp_path):
    bert = _tiny_bert(tmp_path / "bert")
    config = MMBalanceConfig(
        modalities={"text": {"encoder": "auto", "backbone": str(tmp_path / "bert"), "feature_size": 6}, "audio": 4},
        num_labels=2,
    )
    assert config.modalities["text"]["backbone_config"]["model_type"] == "bert"
    model = MMBalanceForClassification(config)
    model.load_backbone_weights()
    for name, tensor in bert.state_dict().items():
        assert torch.equal(model.encoders["text"].backbone.state_dict()[name], tensor), name
    model.eval().save_pretrained(tmp_path / "mm")
    inputs = {"text": torch.randint(0, 30, (3, 5)), "text_attention_mask": torch.ones(3, 5, dtype=torch.long), "audio": torch.randn(3, 4)}
    # the backbone's folder is gone: the checkpoint alone must rebuild it
    for file in (tmp_path / "bert").iterdir():
        file.unlink()
    loaded = MMBalanceForClassification.from_pretrained(tmp_path / "mm").eval()
    assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)
    assert model(**inputs).features["text"].shape == (3, 6)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    inputs = {k: torch.tensor(v) for k, v in json.load(open(sys.argv[2])).items()}
    logits = model(**inputs).logits
    print(json.dumps({"logits": logits.tolist(), "class": type(model).__name__,
                      "imported": sorted(m for m in sys.modules if m.startswith("hf_mmbalance"))}))
    """
)


def run_in_a_clean_process(script: str, tmp_path) -> dict:
    """Run `script ckpt inputs.json` offline in a process without hf_mmbalance on its path; its last JSON line."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "ckpt"), str(tmp_path / "inputs.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "model_class, fusion",
    [(MMBalanceForClassification, "gated"), (MMBalanceForRegression, "gated"), (MMBalanceForClassification, "afw"),
     (MMBalanceForRegression, "mrm")],
)
def test_checkpoint_loads_with_remote_code_in_a_process_without_the_package(tmp_path, model_class, fusion):
    task = "classification" if model_class is MMBalanceForClassification else "regression"
    torch.manual_seed(0)
    config = MMBalanceConfig(modalities=MODALITIES, num_labels=3 if task == "classification" else 1, task=task,
                             fusion=fusion, afw_rank=2, common_space_size=4 if fusion == "mrm" else None)
    model = model_class(config).eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert {"modeling_mmbalance.py", "configuration_mmbalance.py", "encoders.py", "fusion.py"} <= set(os.listdir(tmp_path / "ckpt"))
    inputs = make_inputs()
    (tmp_path / "inputs.json").write_text(json.dumps({k: v.tolist() for k, v in inputs.items()}))
    report = run_in_a_clean_process(REMOTE_SCRIPT, tmp_path)
    assert report["imported"] == [] and report["class"] == model_class.__name__
    # Not bit-equality: MKL may take another code path for a reloaded (differently aligned) weight (HF_NOTES.md).
    torch.testing.assert_close(torch.tensor(report["logits"]), model(**inputs).logits, rtol=1e-5, atol=1e-6)


AUTO_MODEL_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoModel
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    inputs = {k: torch.tensor(v) for k, v in json.load(open(sys.argv[2])).items()}
    print(json.dumps({"logits": model(**inputs).logits.tolist(), "class": type(model).__name__,
                      "imported": sorted(m for m in sys.modules if m.startswith("hf_mmbalance"))}))
    """
)


def test_automodel_loads_a_saved_classifier_with_remote_code_in_a_process_without_the_package(tmp_path):
    model = make_model().eval()
    model.save_pretrained(tmp_path / "ckpt")
    auto_map = json.loads((tmp_path / "ckpt" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_mmbalance.MMBalanceModel"
    inputs = make_inputs()
    (tmp_path / "inputs.json").write_text(json.dumps({k: v.tolist() for k, v in inputs.items()}))
    report = run_in_a_clean_process(AUTO_MODEL_SCRIPT, tmp_path)
    assert report["imported"] == [] and report["class"] == "MMBalanceModel"
    torch.testing.assert_close(torch.tensor(report["logits"]), model(**inputs).logits, rtol=1e-5, atol=1e-6)
