"""MultimodalTrainer: the hooks the balancing methods use, exercised with small test-only callbacks."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Sampler
from datasets import Value
from transformers import TrainingArguments

from hf_mmbalance import (
    BalancingCallback,
    DatasetValidationError,
    MMBalanceConfig,
    MMBalanceForClassification,
    MultimodalTrainer,
    make_synthetic_classification,
)

DATA = make_synthetic_classification(
    num_samples=100, num_classes=3, modalities={"a": 6, "b": 4}, signal_strength={"a": 1.0, "b": 0.3}, seed=1
)
NUM_TRAIN = len(DATA["train"])


def make_model(seed=0):
    torch.manual_seed(seed)
    return MMBalanceForClassification(MMBalanceConfig(modalities={"a": 6, "b": 4}, num_labels=3))


def make_args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=10, num_train_epochs=2, learning_rate=0.1, optim="sgd",
        lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=True, seed=0,
    )
    values.update(overrides)
    return TrainingArguments(**values)


class Recorder(BalancingCallback):
    """Sees each training batch; optionally adds a constant loss term."""

    def __init__(self, constant=None):
        self.constant = constant
        self.batches = []

    def on_train_batch_outputs(self, args, state, *, model, inputs, outputs):
        self.batches.append(
            {"sample_idx": inputs["sample_idx"].tolist(), "labels": inputs["labels"].tolist(),
             "has_outputs": outputs.logits.shape[0] == len(inputs["labels"]) and set(outputs.features) == {"a", "b"}}
        )
        return None if self.constant is None else torch.tensor(self.constant)


def test_callbacks_see_every_training_batch_with_labels_and_ids(tmp_path):
    recorder = Recorder()
    trainer = MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=DATA["train"], callbacks=[recorder])
    trainer.train()
    assert len(recorder.batches) == 2 * NUM_TRAIN // 10
    assert all(batch["has_outputs"] for batch in recorder.batches)
    ids = [i for batch in recorder.batches[: NUM_TRAIN // 10] for i in batch["sample_idx"]]
    assert sorted(ids) == sorted(DATA["train"]["sample_idx"])  # one epoch = every training sample once
    label_of = dict(zip(DATA["train"]["sample_idx"], DATA["train"]["labels"]))
    assert all(label_of[i] == y for batch in recorder.batches for i, y in zip(batch["sample_idx"], batch["labels"]))


def test_added_loss_terms_are_part_of_the_trained_loss(tmp_path):
    plain = MultimodalTrainer(model=make_model(), args=make_args(tmp_path / "p"), train_dataset=DATA["train"])
    plain_loss = plain.train().training_loss
    shifted = MultimodalTrainer(model=make_model(), args=make_args(tmp_path / "s"), train_dataset=DATA["train"],
                                callbacks=[Recorder(constant=5.0)])
    assert shifted.train().training_loss == pytest.approx(plain_loss + 5.0, abs=1e-5)
    logged = [entry for entry in shifted.state.log_history if "loss_fused" in entry]
    assert logged and {"loss_a", "loss_b"} <= set(logged[0])


class ReversedSampler(Sampler):
    def __init__(self, size):
        self.size, self.epochs = size, []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __iter__(self):
        return iter(range(self.size - 1, -1, -1))

    def __len__(self):
        return self.size


class SamplerProvider(Recorder):
    def get_train_sampler(self, train_dataset, args):
        self.sampler = ReversedSampler(len(train_dataset))
        return self.sampler


def test_a_callback_can_provide_the_train_sampler(tmp_path):
    provider = SamplerProvider()
    trainer = MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=DATA["train"], callbacks=[provider])
    trainer.train()
    order = [i for batch in provider.batches for i in batch["sample_idx"]]
    expected = list(reversed(DATA["train"]["sample_idx"]))
    assert order == expected * 2
    assert sorted(set(provider.sampler.epochs)) == [0, 1]  # Trainer may call set_epoch more than once per epoch


def test_two_sampler_providers_are_refused(tmp_path):
    trainer = MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=DATA["train"],
                                callbacks=[SamplerProvider(), SamplerProvider()])
    with pytest.raises(ValueError, match="several callbacks provide a train sampler"):
        trainer.train()


class SeenCounter(BalancingCallback):
    """Per-sample state (how often each sample was trained on), saved with every checkpoint as JSON."""

    def __init__(self):
        self.counts = {}
        self.loaded_from = None

    def on_train_batch_outputs(self, args, state, *, model, inputs, outputs):
        for i in inputs["sample_idx"].tolist():
            self.counts[str(i)] = self.counts.get(str(i), 0) + 1

    def save_checkpoint_state(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "seen_counts.json"), "w") as handle:
            json.dump(self.counts, handle)

    def load_checkpoint_state(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "seen_counts.json")) as handle:
            self.counts = json.load(handle)
        self.loaded_from = checkpoint_dir


def test_resume_mid_epoch_restores_callback_state_and_gives_the_same_result(tmp_path):
    # 7 steps per epoch; a checkpoint at step 10 is in the middle of epoch 2.
    full = SeenCounter()
    trainer = MultimodalTrainer(model=make_model(), args=make_args(tmp_path / "full", num_train_epochs=3),
                                train_dataset=DATA["train"], callbacks=[full])
    trainer.train()
    full_params = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}

    first = SeenCounter()
    args = make_args(tmp_path / "cut", num_train_epochs=3, save_strategy="steps", save_steps=10, max_steps=10)
    MultimodalTrainer(model=make_model(), args=args, train_dataset=DATA["train"], callbacks=[first]).train()
    checkpoint = tmp_path / "cut" / "checkpoint-10"
    assert json.loads((checkpoint / "seen_counts.json").read_text()) == first.counts

    resumed = SeenCounter()
    args = make_args(tmp_path / "cut", num_train_epochs=3, save_strategy="no")
    trainer = MultimodalTrainer(model=make_model(seed=123), args=args, train_dataset=DATA["train"], callbacks=[resumed])
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.loaded_from == str(checkpoint)
    assert resumed.counts == full.counts and set(full.counts.values()) == {3}
    for name, value in trainer.model.named_parameters():
        torch.testing.assert_close(value, full_params[name], atol=1e-6, rtol=1e-5)
    assert (checkpoint / "model.safetensors").exists()
    assert set(load_file(checkpoint / "model.safetensors")) == set(full_params)


def test_evaluation_reports_fused_and_every_unimodal_head(tmp_path):
    trainer = MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=DATA["train"], eval_dataset=DATA["validation"])
    trainer.train()
    metrics = trainer.evaluate()
    for key in ("eval_accuracy", "eval_f1_macro", "eval_unimodal_a_accuracy", "eval_unimodal_b_f1_macro", "eval_loss"):
        assert key in metrics
    predictions = trainer.predict(DATA["test"])
    fused, unimodal = predictions.predictions
    assert fused.shape == (len(DATA["test"]), 3) and unimodal.shape == (len(DATA["test"]), 2, 3)
    assert metrics["eval_accuracy"] == pytest.approx((trainer.predict(DATA["validation"]).predictions[0].argmax(-1) == DATA["validation"]["labels"]).mean())


@pytest.mark.parametrize(
    "dataset, match",
    [
        (DATA["train"].remove_columns("b"), "'b'"),
        (DATA["train"].remove_columns("labels"), "labels"),
        (DATA["train"].cast_column("labels", Value("int64")).map(lambda row: {"labels": 7}), "labels.*\\[0, 3\\)"),
    ],
)
def test_bad_datasets_are_refused_before_training_with_the_field_named(tmp_path, dataset, match):
    with pytest.raises(DatasetValidationError, match=match):
        MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=dataset)


def test_non_mmbalance_models_are_refused(tmp_path):
    with pytest.raises(TypeError, match="MMBalanceConfig"):
        MultimodalTrainer(model=torch.nn.Linear(2, 2), args=make_args(tmp_path), train_dataset=DATA["train"])


def test_a_plain_transformers_trainer_trains_the_model_as_the_readme_says(tmp_path):
    from transformers import Trainer

    args = make_args(tmp_path, remove_unused_columns=False, label_names=["labels"])
    trainer = Trainer(model=make_model(), args=args, train_dataset=DATA["train"].with_format("torch"),
                      eval_dataset=DATA["validation"].with_format("torch"))
    assert trainer.train().training_loss > 0
    predictions = trainer.predict(DATA["test"].with_format("torch"))
    assert predictions.predictions.shape == (len(DATA["test"]), 3)  # fused logits only (keys_to_ignore_at_inference)


class LossReplacer(BalancingCallback):
    """Trains the fused head only, on twice its loss: a stand-in for ULGM's own loss."""

    def training_loss(self, args, state, *, model, inputs, outputs):
        return 2.0 * outputs.loss_terms["fused"]


def test_a_callback_can_replace_the_training_loss_and_others_still_add_terms(tmp_path):
    trainer = MultimodalTrainer(model=make_model(), args=make_args(tmp_path / "r"), train_dataset=DATA["train"],
                                callbacks=[LossReplacer(), Recorder(constant=1.0)])
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry and "loss_fused" in entry]
    assert all(entry["loss"] == pytest.approx(2.0 * entry["loss_fused"] + 1.0, rel=1e-4) for entry in logged)
    with pytest.raises(ValueError, match="several callbacks replace the training loss"):
        MultimodalTrainer(model=make_model(), args=make_args(tmp_path / "two"), train_dataset=DATA["train"],
                          callbacks=[LossReplacer(), type("Other", (LossReplacer,), {})()]).train()
