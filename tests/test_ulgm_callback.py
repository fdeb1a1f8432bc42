"""ULGMCallback inside MultimodalTrainer: banks, one update against the pure rules, loss, resume, export, errors."""

import math

import pytest
import torch
from transformers import TrainingArguments

from hf_mmbalance import MMBalanceConfig, MMBalanceForClassification, MMBalanceForRegression, MultimodalTrainer
from hf_mmbalance.data import make_synthetic_regression
from hf_mmbalance.methods.ulgm import ULGMCallback
from ulgm_checks import check_one_update

MODALITIES = {"text": 8, "audio": 6}
DATA = make_synthetic_regression(num_samples=120, modalities=MODALITIES, noise={"text": 0.3, "audio": 1.5}, seed=0)
TRAIN = DATA["train"]


def make_model(seed=0, **config):
    torch.manual_seed(seed)
    options = dict(modalities=MODALITIES, task="regression", common_space_size=4, fusion="mrm")
    options.update(config)
    return MMBalanceForRegression(MMBalanceConfig(**options))


def make_args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=12, num_train_epochs=3, learning_rate=0.01,
                  optim="adamw_torch", lr_scheduler_type="constant", save_strategy="no", report_to="none",
                  disable_tqdm=True, use_cpu=True, seed=0,
                  logging_strategy="epoch")
    values.update(overrides)
    return TrainingArguments(**values)


def train(tmp_path, callback, model=None, **overrides):
    trainer = MultimodalTrainer(model=model or make_model(), args=make_args(tmp_path, **overrides), train_dataset=TRAIN,
                                callbacks=[callback])
    trainer.train()
    return trainer


def test_banks_start_at_the_multimodal_label_and_epoch_one_trains_the_fused_loss_only(tmp_path):
    callback = ULGMCallback(variant="selfmm")
    train(tmp_path, callback, num_train_epochs=1)
    assert callback.names == ["text", "audio"]
    for name in callback.names:  # no label generated during epoch 1: y_s^(1) = y_m
        assert torch.equal(callback.labels[name], callback.labels["fused"])
    assert bool(callback.filled.all()) and callback.features["fused"].shape == (len(TRAIN), 4)


@pytest.mark.parametrize("variant", ["sugrm", "selfmm"])
def test_one_update_equals_the_pure_rules_with_momentum(tmp_path, variant):
    callback = ULGMCallback(variant=variant)
    trainer = train(tmp_path, callback, num_train_epochs=1)
    model = trainer.model.train()
    batch = TRAIN.with_format("torch")[:5]
    check_one_update(callback, model, batch, [*MODALITIES, "labels"], variant)


@pytest.mark.parametrize("variant", ["sugrm", "selfmm"])
def test_resume_mid_epoch_restores_the_banks_and_gives_the_same_result(tmp_path, variant):
    full = ULGMCallback(variant=variant)
    full_trainer = train(tmp_path / "full", full, num_train_epochs=3)
    steps = math.ceil(len(TRAIN) / 12)
    cut_at = steps + steps // 2  # in the middle of epoch 2
    train(tmp_path / "cut", ULGMCallback(variant=variant), num_train_epochs=3, save_strategy="steps", save_steps=cut_at,
          max_steps=cut_at)
    checkpoint = tmp_path / "cut" / f"checkpoint-{cut_at}"
    assert (checkpoint / "ulgm_banks.safetensors").is_file()
    resumed = ULGMCallback(variant=variant)
    trainer = MultimodalTrainer(model=make_model(seed=5), args=make_args(tmp_path / "cut", num_train_epochs=3),
                                train_dataset=TRAIN, callbacks=[resumed])
    trainer.train(resume_from_checkpoint=str(checkpoint))
    for key in full.labels:
        torch.testing.assert_close(resumed.labels[key], full.labels[key], atol=1e-5, rtol=1e-5)
    for name, value in full_trainer.model.named_parameters():
        torch.testing.assert_close(dict(trainer.model.named_parameters())[name], value, atol=1e-5, rtol=1e-4)


def test_diagnostics_export_and_plot(tmp_path):
    callback = ULGMCallback(variant="selfmm", export_labels=True)
    trainer = train(tmp_path, callback, num_train_epochs=2)
    logged = [e for e in trainer.state.log_history if "ulgm/corr_generated_text" in e]
    assert len(logged) == 2 and "ulgm/mean_abs_offset_audio" in logged[-1] and "ulgm/corr_multimodal_text" in logged[-1]
    rows = (tmp_path / "ulgm_labels_epoch2.csv").read_text().splitlines()
    assert rows[0] == "sample_idx,labels,text,audio" and len(rows) == len(TRAIN) + 1
    from PIL import Image

    paths = callback.plot_diagnostics(trainer.state.log_history, str(tmp_path / "plots"))
    assert Image.open(paths[0]).size[0] > 300


def test_unsupported_set_ups_are_named(tmp_path):
    with pytest.raises(ValueError, match="variant='ulgm'"):
        ULGMCallback(variant="ulgm")
    with pytest.raises(ValueError, match="sample_idx"):
        MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=TRAIN.remove_columns("sample_idx"),
                          callbacks=[ULGMCallback()]).train()
    with pytest.raises(ValueError, match="unimodal_heads=True"):
        train(tmp_path, ULGMCallback(), model=make_model(unimodal_heads=False))
    duplicated = TRAIN.map(lambda row, index: {"sample_idx": index // 2}, with_indices=True)
    with pytest.raises(ValueError, match="unique `sample_idx`"):
        MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=duplicated,
                          callbacks=[ULGMCallback()]).train()
    with pytest.raises(ValueError, match=r"label_range\), got labels from"):
        MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=TRAIN,
                          callbacks=[ULGMCallback(label_range=1.0)]).train()
    # Self-MM with modalities of different feature sizes is supported (tests/test_ulgm_integrity.py); SUGRM, which
    # measures F*_s against F*_m in one space, refuses them at the first step.
    uneven = {"text": {"input_size": 8, "feature_size": 4}, "audio": {"input_size": 6, "feature_size": 5}}
    with pytest.raises(ValueError, match="common_space_size"):
        train(tmp_path, ULGMCallback(), model=make_model(modalities=uneven, common_space_size=None), num_train_epochs=1)
    with pytest.raises(ValueError, match="common_space_size"):  # SUGRM: F*_s and F*_m must share one space
        train(tmp_path, ULGMCallback(), model=make_model(common_space_size=None), num_train_epochs=2)
    callback = ULGMCallback()
    train(tmp_path, callback, num_train_epochs=1)
    with pytest.raises(ValueError, match="not in the training set"):
        callback.rows_of(torch.tensor([10**6]))
    from datasets import Value

    classification = TRAIN.map(lambda row: {"labels": int(row["labels"] > 0)}).cast_column("labels", Value("int64"))
    classifier = MMBalanceForClassification(MMBalanceConfig(modalities=MODALITIES, num_labels=2))
    with pytest.raises(ValueError, match="REGRESSION"):
        MultimodalTrainer(model=classifier, args=make_args(tmp_path), train_dataset=classification,
                          callbacks=[ULGMCallback()]).train()


@pytest.mark.parametrize("variant", ["sugrm", "selfmm"])
def test_the_ulgm_recipes_train_a_regression_model_from_the_cli(tmp_path, variant):
    import json
    from pathlib import Path

    from hf_mmbalance.cli.main import main

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "synthetic" / f"ulgm_{variant}.yaml"
    flags = ["--num_train_epochs", "2", "--output_dir", str(tmp_path), "--ulgm.export_labels", "true"]
    assert main(["train", "--config", str(recipe), *flags]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"test_mae", "test_pearson", "test_unimodal_video_mae"} <= set(metrics)
    assert json.loads((tmp_path / "config.json").read_text())["task"] == "regression"
    assert (tmp_path / "ulgm_labels_epoch2.csv").is_file() and (tmp_path / "ulgm_label_trajectories.png").is_file()


@pytest.mark.parametrize("variant", ["sugrm", "selfmm"])
def test_generated_labels_track_the_true_unimodal_labels_better_than_the_multimodal_label(tmp_path, variant):
    """Where the modalities disagree (y_m correlates ~0.7 with each true label), the generated labels of the two
    stronger modalities correlate better with their true labels than y_m does (benchmarks/results/ulgm.md)."""
    from hf_mmbalance import standardize

    modalities = {"text": 32, "audio": 16, "video": 16}
    data = standardize(make_synthetic_regression(num_samples=2000, seed=0, disagreement=3.0), list(modalities))
    torch.manual_seed(0)
    settings = {name: {"input_size": size, "hidden_sizes": [64], "feature_size": 32} for name, size in modalities.items()}
    model = MMBalanceForRegression(MMBalanceConfig(modalities=settings, task="regression", fusion="mrm", common_space_size=32))
    callback = ULGMCallback(variant=variant)
    args = make_args(tmp_path, per_device_train_batch_size=32, num_train_epochs=30, learning_rate=0.002)
    MultimodalTrainer(model=model, args=args, train_dataset=data["train"], callbacks=[callback]).train()
    y_m = callback.labels["fused"]
    for name in ("text", "audio"):
        truth = callback.true_labels[name]
        generated = torch.corrcoef(torch.stack([callback.labels[name], truth]))[0, 1]
        multimodal = torch.corrcoef(torch.stack([y_m, truth]))[0, 1]
        assert generated > multimodal + 0.05, (name, float(generated), float(multimodal))


def test_the_model_trains_without_labels_and_the_logged_terms_are_ulgm_s(tmp_path):
    """The ULGM loss replaces the model's, so the model is not asked for its own (labels are withheld in training)
    and the logged loss_<term> values are ULGM's: fused, each modality's weighted term and the alignment."""
    model = make_model()
    received_labels = []
    forward = model.forward
    model.forward = lambda **inputs: (received_labels.append("labels" in inputs), forward(**inputs))[1]
    trainer = train(tmp_path, ULGMCallback(), model=model, num_train_epochs=3)
    assert received_labels and not any(received_labels)
    logged = [e for e in trainer.state.log_history if "loss_alignment" in e]
    assert len(logged) == 3 and {"loss_fused", "loss_text", "loss_audio"} <= set(logged[0])
    # Epochs 1 and 2 train on y_s = y_m (epoch 2's batches are relabelled after their loss), weight tanh(0) = 0.
    assert logged[1]["loss_text"] == 0 and logged[1]["loss_audio"] == 0 and logged[1]["loss_alignment"] > 0
    assert logged[2]["loss_text"] > 0
