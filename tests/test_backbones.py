"""`encoder="auto"` over tiny backbones built from configs (no download): input routing, pooling against a direct
call of the backbone, frames, save/load, remote code in a process without the package, training controls."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers as T
from tiny_backbones import BACKBONES, auto_settings, bert_config, clip_config, modality_batch, resnet_config, whisper_config, wav2vec2_config

from hf_mmbalance import MMBalanceConfig, MMBalanceConfigError, MMBalanceForClassification
from hf_mmbalance.modeling.backbone import BackboneInputError


def make_model(name, seed=0, **settings):
    torch.manual_seed(seed)
    config = MMBalanceConfig(modalities={"x": auto_settings(name, **settings), "v": 4}, num_labels=3)
    return MMBalanceForClassification(config).eval()


def make_batch(name, batch_size=3, seed=0):
    generator = torch.Generator().manual_seed(seed + 100)
    return {**modality_batch(name, "x", batch_size, seed), "v": torch.randn(batch_size, 4, generator=generator)}


def direct_pooled(name, backbone, batch):
    """The pooled feature computed straight from the backbone, one model family at a time (the reference)."""
    main, mask = batch["x"], batch.get("x_attention_mask")
    if name in ("vit", "clip_vision", "ast"):
        return backbone(main).pooler_output
    if name in ("resnet",):
        return backbone(main).pooler_output.flatten(1)
    if name == "convnext":
        return backbone(main).pooler_output
    if name in ("bert", "clip_text"):
        return backbone(input_ids=main, attention_mask=mask).pooler_output
    if name == "wav2vec2":
        hidden = backbone(main, attention_mask=mask).last_hidden_state
        frame_mask = backbone._get_feature_vector_attention_mask(hidden.shape[1], mask).float()
        return (hidden * frame_mask[..., None]).sum(1) / frame_mask.sum(1, keepdim=True)
    if name in ("whisper", "videomae"):
        return backbone(main).last_hidden_state.mean(dim=1)
    if name == "vit_frames":
        b, t = main.shape[:2]
        return backbone(main.flatten(0, 1)).pooler_output.view(b, t, -1).mean(dim=1)
    raise KeyError(name)


EXPECTED_MODULES = {
    "vit": "ViTModel", "resnet": "ResNetModel", "convnext": "ConvNextModel", "clip_vision": "CLIPVisionModel",
    "clip_text": "CLIPTextModel", "wav2vec2": "Wav2Vec2Model", "ast": "ASTModel", "whisper": "WhisperEncoder",
    "bert": "BertModel", "vit_frames": "ViTModel", "videomae": "VideoMAEModel",
}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_auto_encoder_routes_the_main_input_and_pools_like_the_backbone(name):
    model = make_model(name)
    encoder = model.encoders["x"]
    assert type(encoder.backbone).__name__ == EXPECTED_MODULES[name]
    batch = make_batch(name)
    with torch.no_grad():
        outputs = model(**batch)
        reference = direct_pooled(name, encoder.backbone, batch)
    assert outputs.features["x"].shape == (3, encoder.feature_size)
    torch.testing.assert_close(outputs.features["x"], reference, rtol=1e-5, atol=1e-6)


def test_masked_positions_do_not_change_the_pooled_feature():
    model = make_model("bert", pooling="mean")
    batch = make_batch("bert")
    changed = dict(batch, x=batch["x"].clone())
    changed["x"][0, 5:] = 3  # padded positions of row 0
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).features["x"][0], model(**changed).features["x"][0])
        assert not torch.allclose(model(**batch).features["x"][1], model(**dict(batch, x=changed["x"].roll(1, 1))).features["x"][1])


def test_pooling_options_first_mean_and_max_over_frames():
    model = make_model("bert", pooling="first")
    batch = make_batch("bert")
    with torch.no_grad():
        hidden = model.encoders["x"].backbone(input_ids=batch["x"], attention_mask=batch["x_attention_mask"]).last_hidden_state
        torch.testing.assert_close(model(**batch).features["x"], hidden[:, 0])
    frames = make_model("vit_frames", temporal_pooling="max")
    batch = make_batch("vit_frames")
    with torch.no_grad():
        per_frame = frames.encoders["x"].backbone(batch["x"].flatten(0, 1)).pooler_output.view(3, 3, -1)
        torch.testing.assert_close(frames(**batch).features["x"], per_frame.amax(dim=1))


def test_a_spectrogram_goes_through_a_one_channel_resnet_as_a_one_channel_image():
    """The papers' audio stream: a log-mel map `(frames, mel bins)` from a feature extractor into ResNet-18."""
    model = make_model("resnet")
    spectrogram = torch.randn(3, 20, 16)
    batch = {"x": spectrogram, "v": torch.randn(3, 4)}
    with torch.no_grad():
        expected = model.encoders["x"].backbone(spectrogram.unsqueeze(1)).pooler_output.flatten(1)
        torch.testing.assert_close(model(**batch).features["x"], expected)
    with pytest.raises(ValueError, match="modality 'x'.*3 or 4 dims"):
        model(**dict(batch, x=torch.randn(3, 20)))
    with pytest.raises(ValueError, match="modality 'x'.*with 4 dims"):  # a 3-channel backbone needs the channels
        make_model("vit")(**dict(batch, x=torch.randn(3, 16, 16)))


def test_feature_size_comes_from_the_backbone_config_and_a_projection_when_asked():
    assert make_model("resnet").encoders["x"].feature_size == 16  # hidden_sizes[-1]
    assert make_model("whisper").encoders["x"].feature_size == 16  # d_model
    projected = make_model("resnet", feature_size=5)
    assert projected(**make_batch("resnet")).features["x"].shape == (3, 5)


def test_backbone_config_may_be_a_config_object_or_its_dict():
    as_object = MMBalanceConfig(modalities={"x": {"encoder": "auto", "backbone_config": bert_config()}}, num_labels=2)
    as_dict = MMBalanceConfig(modalities={"x": {"encoder": "auto", "backbone_config": bert_config().to_dict()}}, num_labels=2)
    assert as_object.modalities["x"]["backbone_config"] == as_dict.modalities["x"]["backbone_config"]
    json.dumps(as_object.to_dict())  # serializable


def test_a_model_whose_modalities_are_all_auto_trains_a_step():
    torch.manual_seed(0)
    config = MMBalanceConfig(modalities={"image": auto_settings("resnet"), "audio": auto_settings("wav2vec2")}, num_labels=3)
    model = MMBalanceForClassification(config)
    batch = {**modality_batch("resnet", "image", 4), **modality_batch("wav2vec2", "audio", 4), "labels": torch.tensor([0, 1, 2, 0])}
    assert set(model.input_names) == {"image", "audio", "audio_attention_mask"}
    loss = model(**batch).loss
    loss.backward()
    assert all(p.grad is not None for p in model.encoders["image"].parameters())


@pytest.mark.parametrize(
    "name, bad, match",
    [
        ("vit", lambda b: dict(b, x=b["x"][:, 0]), "modality 'x'.*pixel_values.*4 dims.*\\(3, 16, 16\\)"),
        ("bert", lambda b: dict(b, x=b["x"].float()), "modality 'x'.*input_ids.*integer token ids"),
        ("wav2vec2", lambda b: dict(b, x=b["x"].long()), "modality 'x'.*input_values.*floating-point"),
        ("vit_frames", lambda b: dict(b, x=b["x"][:, 0]), "modality 'x'.*frames.*5 dims"),
        ("vit", lambda b: dict(b, x=b["x"][:, :1]), "modality 'x'.*3-channel images, got 1 channels.*image_mean"),
        ("videomae", lambda b: dict(b, x=b["x"][:, 0]), "modality 'x'.*pixel_values.*5 dims"),
        ("videomae", lambda b: dict(b, x=b["x"][:, :, :1]), "modality 'x'.*3-channel images, got 1"),
        ("bert", lambda b: dict(b, x_pixel_mask=b["x_attention_mask"]), "unexpected model inputs \\['x_pixel_mask'\\]"),
    ],
)
def test_bad_backbone_inputs_name_the_modality_before_torch_sees_them(name, bad, match):
    model = make_model(name)
    with pytest.raises(ValueError, match=match):
        model(**bad(make_batch(name)))


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"pooling": "median"}, "pooling='median'"),
        ({"tower": "audio"}, "tower='audio'.*audio_config"),
        ({"freeze": -1}, "freeze"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"frames": "yes"}, "frames must be true or false"),
        ({"temporal_pooling": "sum"}, "temporal_pooling='sum'"),
    ],
)
def test_bad_backbone_settings_name_the_field(settings, match):
    with pytest.raises(MMBalanceConfigError, match=match):
        MMBalanceConfig(modalities={"x": {"encoder": "auto", "backbone_config": clip_config().to_dict(), **settings}}, num_labels=2)


def test_freezing_a_backbone_or_its_first_layers():
    frozen = make_model("bert", freeze=True)
    assert not any(p.requires_grad for p in frozen.encoders["x"].parameters())
    assert all(p.requires_grad for p in frozen.encoders["v"].parameters())
    partly = make_model("bert", freeze=1)
    trainable = {n for n, p in partly.encoders["x"].backbone.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("embeddings.", "encoder.layer.0.")) for n in trainable)
    assert any(n.startswith("encoder.layer.1.") for n in trainable) and any(n.startswith("pooler.") for n in trainable)
    # wav2vec2: the layers counted are the transformer's, the convolutional feature extractor comes before them
    audio = make_model("wav2vec2", freeze=2)
    trainable = {n for n, p in audio.encoders["x"].backbone.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("feature_extractor.", "encoder.layers.")) for n in trainable)
    with pytest.raises(BackboneInputError, match="only 2 layers"):
        make_model("bert", freeze=3)
    with pytest.raises(MMBalanceConfigError, match="needs encoder='auto'"):
        MMBalanceConfig(modalities={"v": {"input_size": 4, "freeze": 2}}, num_labels=2)


def _save_backbone(tmp_path, module, name):
    module.save_pretrained(tmp_path / name)
    return str(tmp_path / name)


@pytest.mark.parametrize(
    "kind, make_pretrained, tower, part",
    [
        ("resnet", lambda: T.ResNetModel(resnet_config()), None, lambda m: m),
        ("whisper", lambda: T.WhisperModel(whisper_config()), None, lambda m: m.get_encoder()),
        ("clip", lambda: T.CLIPModel(clip_config()), "vision", lambda m: m.vision_model),
        ("clip", lambda: T.CLIPModel(clip_config()), "text", lambda m: m.text_model),
    ],
)
def test_load_backbone_weights_for_every_kind(tmp_path, kind, make_pretrained, tower, part):
    torch.manual_seed(3)
    pretrained = make_pretrained()
    path = _save_backbone(tmp_path, pretrained, kind)
    settings = {"encoder": "auto", "backbone": path, **({"tower": tower} if tower else {})}
    model = MMBalanceForClassification(MMBalanceConfig(modalities={"x": settings}, num_labels=2))
    model.load_backbone_weights()
    loaded = model.encoders["x"].backbone.state_dict()
    reference = part(pretrained).state_dict()
    assert set(loaded) == set(reference)
    for key, value in loaded.items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_save_and_load_round_trip(tmp_path, name):
    model = make_model(name)
    model.save_pretrained(tmp_path)
    loaded = MMBalanceForClassification.from_pretrained(tmp_path).eval()
    batch = make_batch(name)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=1e-5, atol=1e-6)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoModelForSequenceClassification
    results = {}
    for folder in sys.argv[1:]:
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
        inputs = {k: torch.tensor(v) for k, v in json.load(open(folder + "/inputs.json")).items()}
        with torch.no_grad():
            results[folder] = model(**inputs).logits.tolist()
    results["imported"] = sorted(m for m in sys.modules if m.startswith("hf_mmbalance"))
    print(json.dumps(results))
    """
)


def test_every_backbone_checkpoint_loads_with_remote_code_in_a_process_without_the_package(tmp_path):
    expected = {}
    for name in BACKBONES:
        folder = tmp_path / name
        model = make_model(name)
        model.save_pretrained(folder)
        batch = make_batch(name)
        (folder / "inputs.json").write_text(json.dumps({k: v.tolist() for k, v in batch.items()}))
        with torch.no_grad():
            expected[str(folder)] = model(**batch).logits
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, *expected], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report.pop("imported") == []
    for folder, logits in expected.items():
        torch.testing.assert_close(torch.tensor(report[folder]), logits, rtol=1e-5, atol=1e-6)
