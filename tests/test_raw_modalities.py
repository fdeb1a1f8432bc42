"""Raw images, audio and text end to end: files -> datasets -> processor -> backbones -> `MultimodalTrainer`, in
Python (collator on raw rows, lazy `set_transform`, ahead-of-time `map`) and as a recipe through the CLI."""

import csv
import json
import re

import datasets
import numpy as np
import pytest
import soundfile
import torch
import yaml
from PIL import Image
from tiny_backbones import auto_settings, bert_config, resnet_config, vit_config, wav2vec2_config
from transformers import BertTokenizerFast, TrainingArguments, ViTImageProcessor, Wav2Vec2FeatureExtractor

from hf_mmbalance import (
    MMBalanceConfig,
    MMBalanceForClassification,
    MultimodalDataCollator,
    MultimodalProcessor,
    MultimodalTrainer,
    load_multimodal_files,
)
from hf_mmbalance.cli.main import main

ROWS = 24
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "low", "mid", "high", "tone", "a"]


def write_media(folder, rows=ROWS):
    """PNG digits-like images (a bright band whose row is the class), WAV tones (the class sets the pitch, 8 kHz,
    lengths vary) and a caption; a CSV manifest with string labels."""
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True)
    (folder / "wav").mkdir()
    entries = []
    for i in range(rows):
        label = i % 3
        pixels = (rng.random((16, 16)) * 60).astype(np.uint8)
        pixels[label * 5 : label * 5 + 5] = 255
        Image.fromarray(pixels, "L").save(folder / "img" / f"{i}.png")
        t = np.arange(int(8000 * (0.05 + 0.03 * rng.random()))) / 8000
        soundfile.write(folder / "wav" / f"{i}.wav", 0.3 * np.sin(2 * np.pi * (300 + 300 * label) * t), 8000)
        entries.append({"image": f"img/{i}.png", "audio": f"wav/{i}.wav", "caption": f"a {WORDS[5 + label]} tone",
                        "labels": WORDS[5 + label]})
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(entries[0]))
        writer.writeheader()
        writer.writerows(entries)
    return folder / "manifest.csv"


def image_processor(channels=1):
    return ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * channels, image_std=[0.5] * channels)


def audio_processor():
    return Wav2Vec2FeatureExtractor(sampling_rate=8000)


@pytest.fixture
def tokenizer(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    return BertTokenizerFast(vocab=str(vocab))


def image_audio_model(seed=0):
    torch.manual_seed(seed)
    modalities = {"image": {"encoder": "auto", "backbone_config": resnet_config(num_channels=1)}, "audio": auto_settings("wav2vec2")}
    return MMBalanceForClassification(MMBalanceConfig(modalities=modalities, num_labels=3))


def make_args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=6, num_train_epochs=1, learning_rate=0.01,
                  optim="sgd", save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, seed=0)
    return TrainingArguments(**{**values, **overrides})


def test_raw_rows_train_through_the_processor_collator_and_match_processing_ahead_of_time(tmp_path):
    data = load_multimodal_files(write_media(tmp_path), {"image": "image", "audio": "audio"}, test_fraction=0.25,
                                 validation_fraction=0.0)
    processor = MultimodalProcessor({"image": image_processor(), "audio": audio_processor()})
    model = image_audio_model()
    trainer = MultimodalTrainer(model=model, args=make_args(tmp_path), train_dataset=data["train"],
                                eval_dataset=data["test"], processing_class=processor)
    assert isinstance(trainer.data_collator, MultimodalDataCollator)
    trainer.train()
    raw_metrics = trainer.evaluate()
    # the same rows processed ahead of time with `map` evaluate to the same numbers
    mapped = data["test"].map(processor.transform, batched=True, remove_columns=processor.raw_columns)
    mapped_metrics = MultimodalTrainer(model=model, args=make_args(tmp_path), eval_dataset=mapped,
                                       data_collator=MultimodalDataCollator(processor)).evaluate()
    assert raw_metrics["eval_loss"] == pytest.approx(mapped_metrics["eval_loss"], rel=1e-5)
    # and lazily, with set_transform (remove_unused_columns keeps the raw columns the processor reads)
    lazy = data["test"].with_transform(processor.transform)
    lazy_metrics = MultimodalTrainer(model=model, args=make_args(tmp_path), eval_dataset=lazy,
                                     processing_class=processor).evaluate()
    assert raw_metrics["eval_loss"] == pytest.approx(lazy_metrics["eval_loss"], rel=1e-5)


def test_text_and_image_model_with_a_local_tokenizer(tmp_path, tokenizer):
    data = load_multimodal_files(write_media(tmp_path), {"image": "image", "caption": "text"}, test_fraction=0.25,
                                 validation_fraction=0.0)
    processor = MultimodalProcessor({"image": image_processor(), "text": tokenizer}, columns={"text": "caption"})
    torch.manual_seed(0)
    modalities = {"image": {"encoder": "auto", "backbone_config": vit_config(num_channels=1)}, "text": auto_settings("bert")}
    model = MMBalanceForClassification(MMBalanceConfig(modalities=modalities, num_labels=3))
    trainer = MultimodalTrainer(model=model, args=make_args(tmp_path, num_train_epochs=15, learning_rate=0.01, optim="adamw_torch"),
                                train_dataset=data["train"], eval_dataset=data["test"], processing_class=processor)
    trainer.train()
    # the caption names the class: the text head must learn it
    assert trainer.evaluate()["eval_unimodal_text_accuracy"] >= 0.8


def test_a_processor_saved_with_the_model_reloads_and_predicts_the_same(tmp_path):
    processor = MultimodalProcessor({"image": image_processor(), "audio": audio_processor()})
    model = image_audio_model().eval()
    data = load_multimodal_files(write_media(tmp_path), {"image": "image", "audio": "audio"}, test_fraction=0.25,
                                 validation_fraction=0.0)
    trainer = MultimodalTrainer(model=model, args=make_args(tmp_path), processing_class=processor)
    trainer.save_model(str(tmp_path / "saved"))
    reloaded_model = MMBalanceForClassification.from_pretrained(tmp_path / "saved").eval()
    reloaded_processor = MultimodalProcessor.from_pretrained(str(tmp_path / "saved"))
    rows = data["test"][:4]
    with torch.no_grad():
        expected = model(**{k: v for k, v in processor(rows).items() if k in model.input_names}).logits
        got = reloaded_model(**{k: v for k, v in reloaded_processor(rows).items() if k in model.input_names}).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def write_recipe(tmp_path, manifest, **overrides):
    recipe = {
        "dataset_name": str(manifest),
        "split_seed": 0,
        "modalities": {
            "image": {"encoder": "auto", "backbone_config": resnet_config(num_channels=1).to_dict(),
                      "processor": {"class": "ViTImageProcessor", "size": {"height": 16, "width": 16},
                                    "image_mean": [0.5], "image_std": [0.5]}},
            "audio": {"encoder": "auto", "backbone_config": wav2vec2_config().to_dict(),
                      "processor": {"class": "Wav2Vec2FeatureExtractor", "sampling_rate": 8000}},
        },
        "output_dir": str(tmp_path / "run"),
        "num_train_epochs": 1,
        "per_device_train_batch_size": 6,
        "learning_rate": 0.01,
        "eval_strategy": "epoch",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
    }
    recipe.update(overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_recipe_trains_an_image_and_audio_model_on_files_through_the_cli(tmp_path, capsys):
    manifest = write_media(tmp_path / "media")
    assert main(["train", "--config", str(write_recipe(tmp_path, manifest))]) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"test_accuracy", "test_unimodal_image_accuracy", "test_unimodal_audio_accuracy"} <= set(metrics)
    assert (run / "mmbalance_processor.json").is_file() and (run / "processor_audio").is_dir()
    card = (run / "README.md").read_text()
    assert "auto: resnet" in card and "auto: wav2vec2" in card and "MultimodalProcessor.from_pretrained" in card
    for written in [run / "README.md", run / "config.json", run / "mmbalance_processor.json"]:
        assert str(tmp_path) not in written.read_text(), f"{written.name} holds a local path"
    model = MMBalanceForClassification.from_pretrained(run)
    assert model.config.modalities["image"]["backbone_config"]["model_type"] == "resnet"
    processor = MultimodalProcessor.from_pretrained(str(run))
    rows = datasets.load_dataset("csv", data_files=str(manifest), split="train")[:2]
    rows = {k: [str(tmp_path / "media" / p) for p in v] if k in ("image", "audio") else v for k, v in rows.items()}
    with torch.no_grad():
        logits = model(**{k: v for k, v in processor(rows).items() if k in model.input_names}).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r["modalities"].pop("audio") and r["modalities"].update(sound=r["modalities"].get("image")),
         "'sound' not found"),
        (lambda r: r["modalities"]["image"].update(processor={"class": "os.system"}), "processor.class='os.system'"),
        (lambda r: r["modalities"]["image"].update(pooling="median"), "pooling='median'"),
        (lambda r: r.update(dataset_name="missing.csv"), "missing.csv"),
        (lambda r: r["modalities"]["image"]["processor"].update(image_mean=[0.5] * 3, image_std=[0.5] * 3),
         "modality 'image': the image processor makes 3-channel images.*backbone takes 1"),
    ],
)
def test_bad_recipe_modalities_print_one_line_and_exit_2(tmp_path, capsys, change, message):
    manifest = write_media(tmp_path / "media")
    path = write_recipe(tmp_path, manifest)
    recipe = yaml.safe_load(path.read_text())
    change(recipe)
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert re.search(message, error), error


def test_a_bert_backbone_gets_pretrained_weights_when_the_recipe_names_a_folder(tmp_path, tokenizer):
    from transformers import BertModel

    torch.manual_seed(5)
    BertModel(bert_config()).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    manifest = write_media(tmp_path / "media")
    path = write_recipe(tmp_path, manifest)
    recipe = yaml.safe_load(path.read_text())
    recipe["modalities"] = {"caption": {"encoder": "auto", "backbone": str(tmp_path / "bert"), "processor": str(tmp_path / "bert")},
                            "image": recipe["modalities"]["image"]}
    recipe["learning_rate"] = 0.0
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(path)]) == 0
    model = MMBalanceForClassification.from_pretrained(tmp_path / "run")
    reference = BertModel.from_pretrained(tmp_path / "bert").state_dict()
    for key, value in model.encoders["caption"].backbone.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0)
    assert str(tmp_path) not in (tmp_path / "run" / "README.md").read_text()


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_the_image_audio_recipe_trains_two_resnet18s_from_files(tmp_path):
    manifest = write_media(tmp_path / "media")
    flags = ["--dataset_name", str(manifest), "--output_dir", str(tmp_path / "run"), "--max_steps", "2",
             "--per_device_train_batch_size", "6", "--eval_strategy", "no", "--save_strategy", "no",
             "--load_best_model_at_end", "false"]
    assert main(["train", "--config", str(ROOT / "recipes/raw/image_audio.yaml"), *flags]) == 0
    model = MMBalanceForClassification.from_pretrained(tmp_path / "run")
    for name in ("image", "audio"):  # ResNet-18: 2-2-2-2 basic blocks up to 512 channels
        backbone = model.encoders[name].backbone
        assert [len(stage.layers) for stage in backbone.encoder.stages] == [2, 2, 2, 2]
        assert model.encoders[name].feature_size == 512
    processor = MultimodalProcessor.from_pretrained(str(tmp_path / "run"))
    assert type(processor.modalities["audio"].processor).__name__ == "ASTFeatureExtractor"
    assert "test_accuracy" in json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_the_text_image_recipe_runs_with_local_backbones_in_place_of_its_hub_ids(tmp_path, tokenizer):
    from transformers import BertModel, ViTModel

    torch.manual_seed(0)
    for name, module, processor in (("bert", BertModel(bert_config()), tokenizer),
                                    ("vit", ViTModel(vit_config(image_size=16)), image_processor(channels=3))):
        module.save_pretrained(tmp_path / name)
        processor.save_pretrained(tmp_path / name)
    recipe = yaml.safe_load((ROOT / "recipes/raw/text_image.yaml").read_text())
    recipe["modalities"]["text"].update(backbone=str(tmp_path / "bert"), processor=str(tmp_path / "bert"))
    recipe["modalities"]["image"].update(backbone=str(tmp_path / "vit"), processor=str(tmp_path / "vit"), freeze=1)
    recipe.update(dataset_name=str(write_media(tmp_path / "media")), output_dir=str(tmp_path / "run"), max_steps=2,
                  warmup_steps=0, eval_strategy="no", save_strategy="no", use_cpu=True, disable_tqdm=True)
    path = tmp_path / "text_image.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(path)]) == 0
    model = MMBalanceForClassification.from_pretrained(tmp_path / "run")
    assert model.config.modalities["text"]["learning_rate"] == 2e-5
    pretrained = BertModel.from_pretrained(tmp_path / "bert").state_dict()
    embeddings = "embeddings.word_embeddings.weight"
    # two steps at 2e-5 move the pretrained weights a little, not back to a random start
    torch.testing.assert_close(model.encoders["text"].backbone.state_dict()[embeddings], pretrained[embeddings], rtol=0, atol=1e-3)
