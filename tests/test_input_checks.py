"""Bad input refused up front with the field named, and checkpoints a kill interrupted never chosen for a resume."""

import json
import math

import datasets
import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from hf_mmbalance import (
    DatasetValidationError,
    MMBalanceConfig,
    MMBalanceConfigError,
    MMBalanceForClassification,
    MultimodalTrainer,
    make_synthetic_classification,
)
from hf_mmbalance.trainer.checkpoint_state import CheckpointStateError

DATA = make_synthetic_classification(num_samples=60, num_classes=3, modalities={"a": 4, "b": 3}, seed=0)


def make_model():
    torch.manual_seed(0)
    return MMBalanceForClassification(MMBalanceConfig(modalities={"a": 4, "b": 3}, num_labels=3))


def make_args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "run"), per_device_train_batch_size=8, max_steps=4, learning_rate=0.05,
                  optim="sgd", save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, seed=0)
    return TrainingArguments(**{**values, **overrides})


def with_value(dataset, column, row, value):
    """`dataset` with one cell of a vector column set to `value` (keeps the column's feature)."""
    table = dataset.select_columns([column]).with_format("numpy")[:][column].copy()
    table[row, 0] = value
    return dataset.remove_columns(column).add_column(column, list(table)).cast_column(column, dataset.features[column])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss_weights": {"fused": float("nan")}}, "loss_weights\\['fused'\\] must be a finite"),
        ({"modalities": {"a": {"input_size": 4, "hidden_sizes": [0]}}}, "modalities\\['a'\\].hidden_sizes"),
        ({"modalities": {"a": {"input_size": 4, "dropout": 1.5}}}, "modalities\\['a'\\].dropout must be a number in \\[0, 1\\)"),
        ({"modalities": {"labels": 4}}, "named like batch keys"),
        ({"modalities": {"sample_idx": 4}}, "named like batch keys"),
        ({"modalities": {"return_dict": 4}}, "named like batch keys"),
        ({"modalities": {"a": {"input_size": 4, "encoder": "transformer"}, "a_attention_mask": 3}}, "attention mask key"),
    ],
)
def test_bad_model_settings_name_the_field(kwargs, match):
    with pytest.raises(MMBalanceConfigError, match=match):
        MMBalanceConfig(**{"modalities": {"a": 4}, "num_labels": 3, **kwargs})


def test_an_attention_mask_of_the_wrong_length_names_the_modality():
    torch.manual_seed(0)
    model = MMBalanceForClassification(MMBalanceConfig(
        modalities={"s": {"input_size": 3, "encoder": "transformer", "feature_size": 8}}, num_labels=2))
    with pytest.raises(ValueError, match="modality 's': s_attention_mask has shape \\(2, 4\\), expected \\(2, 5\\)"):
        model(s=torch.randn(2, 5, 3), s_attention_mask=torch.ones(2, 4, dtype=torch.long))


def test_huge_features_and_an_empty_training_set_are_refused(tmp_path):
    with pytest.raises(DatasetValidationError, match="column 'a'.*magnitude >= 1e\\+10.*row 3.*standardize"):
        MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=with_value(DATA["train"], "a", 3, 1e30))
    with pytest.raises(DatasetValidationError, match="train_dataset is empty"):
        MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=DATA["train"].select([]))


def test_evaluate_and_predict_validate_the_dataset_they_are_given(tmp_path):
    trainer = MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=DATA["train"])
    bad = with_value(DATA["test"], "b", 2, float("nan"))
    with pytest.raises(DatasetValidationError, match="eval_dataset: .*column 'b'.*NaN.*row 2"):
        trainer.evaluate(bad)
    with pytest.raises(DatasetValidationError, match="test_dataset: .*column 'b'.*NaN.*row 2"):
        trainer.predict(bad)
    unlabelled = DATA["test"].remove_columns("labels")
    predictions = trainer.predict(unlabelled)  # a prediction set needs no labels
    assert predictions.predictions[0].shape == (len(unlabelled), 3)
    assert math.isfinite(trainer.evaluate(DATA["test"])["eval_loss"])


class TensorRows(torch.utils.data.Dataset):
    """A plain torch Dataset: no schema for the trainer to read."""

    def __init__(self, rows, nan_row=None, label_offset=0):
        self.rows, self.nan_row, self.label_offset = rows, nan_row, label_offset

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        row = self.rows[index]
        a = torch.tensor(row["a"], dtype=torch.float32)
        if index == self.nan_row:
            a[0] = float("nan")
        return {"a": a, "b": torch.tensor(row["b"], dtype=torch.float32), "labels": torch.tensor(row["labels"] + self.label_offset)}


def test_a_torch_dataset_is_read_once_and_checked(tmp_path):
    rows = list(DATA["train"])
    with pytest.raises(DatasetValidationError, match="train_dataset: 'a' contains NaN or inf in rows 0-"):
        MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=TensorRows(rows, nan_row=5))
    with pytest.raises(DatasetValidationError, match="train_dataset: 'labels' must be integer class ids in \\[0, 3\\)"):
        MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=TensorRows(rows, label_offset=2))
    trainer = MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=TensorRows(rows))
    assert math.isfinite(trainer.train().training_loss)


def test_resume_skips_a_checkpoint_whose_save_was_interrupted_and_refuses_it_by_name(tmp_path):
    args = make_args(tmp_path, max_steps=6, save_strategy="steps", save_steps=2)
    MultimodalTrainer(model=make_model(), args=args, train_dataset=DATA["train"]).train()
    run = tmp_path / "run"
    # a kill while checkpoint-8 was being written: the method state and part of the model, no trainer_state.json
    (run / "checkpoint-8").mkdir()
    (run / "checkpoint-8" / "bss_state.json").write_text(json.dumps({"orders": {}}))
    (run / "checkpoint-6" / "trainer_state.json").write_text('{"log_history": [')  # and checkpoint-6's last file torn
    resumed = MultimodalTrainer(model=make_model(), args=make_args(tmp_path, max_steps=6, save_strategy="no"),
                                train_dataset=DATA["train"])
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6  # resumed from checkpoint-4, the latest complete one
    with pytest.raises(CheckpointStateError, match="checkpoint-8 is incomplete.*checkpoint-4"):
        resumed.train(resume_from_checkpoint=str(run / "checkpoint-8"))


def test_label_smoothing_reaches_every_cross_entropy_term(tmp_path):
    model = make_model()
    MultimodalTrainer(model=model, args=make_args(tmp_path, label_smoothing_factor=0.2), train_dataset=DATA["train"])
    batch = DATA["train"].with_format("torch")[:6]
    outputs = model(a=batch["a"], b=batch["b"], labels=batch["labels"])

    def smoothed(logits):  # (1 - e) * CE + e * mean over classes of -log p, written out
        log_p = torch.log_softmax(logits, dim=-1)
        nll = -log_p[torch.arange(6), batch["labels"]]
        return ((1 - 0.2) * nll + 0.2 * (-log_p.mean(dim=-1))).mean()

    expected = torch.stack([smoothed(outputs.logits), *(smoothed(outputs.unimodal_logits[m]) for m in ("a", "b"))]).mean()
    torch.testing.assert_close(outputs.loss, expected)
    from hf_mmbalance import MMBalanceForRegression

    regression = MMBalanceForRegression(MMBalanceConfig(modalities={"a": 4, "b": 3}, task="regression"))
    data = DATA["train"].cast_column("labels", datasets.Value("float32"))
    with pytest.raises(ValueError, match="label_smoothing_factor=0.2: label smoothing needs a classification model"):
        MultimodalTrainer(model=regression, args=make_args(tmp_path, label_smoothing_factor=0.2), train_dataset=data)


def test_a_dict_of_eval_datasets_is_checked_part_by_part(tmp_path):
    trainer = MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=DATA["train"])
    metrics = trainer.evaluate({"val": DATA["validation"], "test": DATA["test"]})
    assert {"eval_val_loss", "eval_test_loss"} <= set(metrics)
    with pytest.raises(DatasetValidationError, match="eval_dataset\\['bad'\\]: .*column 'b'.*NaN"):
        trainer.evaluate({"val": DATA["validation"], "bad": with_value(DATA["test"], "b", 2, float("nan"))})
