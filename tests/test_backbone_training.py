"""Backbone models through `MultimodalTrainer`: a few steps for every backbone, all-`auto` models, validation of
backbone columns before training, a learning rate per modality, activation checkpointing, columns kept."""

import functools

import datasets
import numpy as np
import pytest
import torch
from tiny_backbones import BACKBONES, auto_settings, bert_config, modality_batch
from transformers import TrainingArguments

from hf_mmbalance import DatasetValidationError, MMBalanceConfig, MMBalanceForClassification, MultimodalTrainer

NUM_ROWS = 12


def processed_dataset(names: dict[str, str], rows: int = NUM_ROWS, seed: int = 0) -> datasets.Dataset:
    """Processed tensors for each modality (modality -> tiny backbone name), labels and ids, as `map` would give."""
    columns = {}
    for modality, backbone in names.items():
        columns.update({key: value.numpy() for key, value in modality_batch(backbone, modality, rows, seed).items()})
    columns["labels"] = np.arange(rows) % 3
    columns["sample_idx"] = np.arange(rows)
    return datasets.Dataset.from_dict({key: list(value) for key, value in columns.items()})


def make_model(names: dict[str, str], seed: int = 0, **overrides):
    torch.manual_seed(seed)
    modalities = {m: auto_settings(b, **overrides.get(m, {})) for m, b in names.items()}
    return MMBalanceForClassification(MMBalanceConfig(modalities=modalities, num_labels=3))


def make_args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2, learning_rate=0.05, optim="sgd",
        lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=True, seed=0,
    )
    values.update(overrides)
    return TrainingArguments(**values)


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_every_backbone_trains_a_few_steps_through_the_trainer(tmp_path, backbone):
    names = {"x": backbone}
    model = make_model(names)
    before = {n: p.detach().clone() for n, p in model.encoders["x"].backbone.named_parameters()}
    trainer = MultimodalTrainer(model=model, args=make_args(tmp_path), train_dataset=processed_dataset(names))
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    changed = [n for n, p in model.encoders["x"].backbone.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} backbone tensors trained"


def test_an_image_and_audio_model_keeps_its_namespaced_columns_and_evaluates(tmp_path):
    names = {"image": "resnet", "audio": "wav2vec2"}
    data = processed_dataset(names).add_column("speaker", ["a"] * NUM_ROWS)
    trainer = MultimodalTrainer(model=make_model(names), args=make_args(tmp_path), train_dataset=data, eval_dataset=data)
    trainer.train()
    columns = trainer._remove_unused_columns(data).column_names
    assert set(columns) == {"image", "audio", "audio_attention_mask", "labels", "sample_idx"}
    metrics = trainer.evaluate()
    assert {"eval_accuracy", "eval_unimodal_image_accuracy", "eval_unimodal_audio_accuracy"} <= set(metrics)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d.remove_columns("image"), "missing modality column 'image'.*pixel_values"),
        (lambda d: d.map(lambda r: {"image": np.asarray(r["image"])[0, 0].tolist()}),
         "modality column 'image'.*pixel_values needs 2 or 3 dims per row, found 1"),
        (lambda d: d.remove_columns("audio").add_column("audio", [[1] * 400] * NUM_ROWS),
         "modality column 'audio'.*input_values must be floats"),
        (lambda d: d.cast_column("audio_attention_mask", datasets.List(datasets.Value("string"))),
         "column 'audio_attention_mask'.*attention_mask of modality 'audio'"),
        (lambda d: d.map(lambda r, i: {"audio": [float("nan")] * 400 if i == 3 else r["audio"]}, with_indices=True),
         "modality column 'audio'.*NaN"),
    ],
)
def test_bad_backbone_columns_are_refused_before_training_naming_the_column(tmp_path, change, match):
    names = {"image": "resnet", "audio": "wav2vec2"}
    with pytest.raises(DatasetValidationError, match=match):
        MultimodalTrainer(model=make_model(names), args=make_args(tmp_path), train_dataset=change(processed_dataset(names)))


def test_raw_columns_without_a_processor_are_refused_naming_the_column(tmp_path):
    names = {"text": "bert"}
    data = processed_dataset(names).remove_columns(["text", "text_attention_mask"]).add_column("text", ["a b"] * NUM_ROWS)
    with pytest.raises(DatasetValidationError, match="'text': holds raw text.*no processor handles it"):
        MultimodalTrainer(model=make_model(names), args=make_args(tmp_path), train_dataset=data)


def test_a_learning_rate_per_modality_sets_its_parameter_groups(tmp_path):
    names = {"image": "resnet", "audio": "wav2vec2"}
    model = make_model(names, image={"learning_rate": 0.01})
    args = make_args(tmp_path, max_steps=1, learning_rate=0.1, max_grad_norm=0)  # no clipping: the step is -lr * grad
    trainer = MultimodalTrainer(model=model, args=args, train_dataset=processed_dataset(names))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {}
    hooks = [p.register_hook(lambda g, n=n: grads.__setitem__(n, g.detach().clone())) for n, p in model.named_parameters()]
    trainer.train()
    for hook in hooks:
        hook.remove()
    rates = sorted({group["lr"] for group in trainer.optimizer.param_groups})
    assert rates == [0.01, 0.1]
    image_owned = {id(p) for p in model.encoders["image"].parameters()}
    for group in trainer.optimizer.param_groups:
        assert all((id(p) in image_owned) == (group["lr"] == 0.01) for p in group["params"])
    # plain SGD, one step: every parameter moved by exactly -lr * grad
    for name, parameter in model.named_parameters():
        if name in grads:
            rate = 0.01 if name.startswith("encoders.image.") else 0.1
            torch.testing.assert_close(parameter.detach(), before[name] - rate * grads[name], rtol=1e-5, atol=1e-7)


def test_activation_checkpointing_reaches_the_backbones_and_gives_the_same_gradients(tmp_path):
    names = {"text": "bert", "image": "vit"}
    data = processed_dataset(names)
    batch = {k: torch.as_tensor(np.asarray(data[:4][k])) for k in data.column_names if k != "sample_idx"}
    no_dropout = bert_config()
    no_dropout.hidden_dropout_prob = no_dropout.attention_probs_dropout_prob = 0.0  # recomputation then is exact
    build = functools.partial(make_model, names, text={"backbone_config": no_dropout})
    checkpointed = build()
    MultimodalTrainer(model=checkpointed, args=make_args(tmp_path, activation_checkpointing=True), train_dataset=data).train()
    assert all(b.is_activation_checkpointing for b in checkpointed._backbones())
    plain = build()
    plain.load_state_dict(checkpointed.state_dict())
    for model in (plain, checkpointed):
        model.train().zero_grad()
        model(**batch).loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_frozen_backbone_does_not_change_in_training(tmp_path):
    names = {"image": "vit", "audio": "wav2vec2"}
    model = make_model(names, image={"freeze": True})
    frozen = {n: p.detach().clone() for n, p in model.encoders["image"].named_parameters()}
    MultimodalTrainer(model=model, args=make_args(tmp_path), train_dataset=processed_dataset(names)).train()
    assert all(torch.equal(p, frozen[n]) for n, p in model.encoders["image"].named_parameters())


def test_variable_length_sequences_for_the_transformer_encoder_are_padded_with_masks(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 9, NUM_ROWS)
    data = datasets.Dataset.from_dict({
        "seq": [rng.standard_normal((n, 3)).astype(np.float32).tolist() for n in lengths],
        "vec": rng.standard_normal((NUM_ROWS, 4)).astype(np.float32).tolist(),
        "labels": np.arange(NUM_ROWS) % 3, "sample_idx": np.arange(NUM_ROWS),
    })
    torch.manual_seed(0)
    config = MMBalanceConfig(modalities={"seq": {"input_size": 3, "encoder": "transformer", "feature_size": 8}, "vec": 4}, num_labels=3)
    model = MMBalanceForClassification(config)
    trainer = MultimodalTrainer(model=model, args=make_args(tmp_path), train_dataset=data)
    batch = trainer.data_collator([data[i] for i in range(3)])
    assert batch["seq"].shape == (3, int(lengths[:3].max()), 3)
    assert batch["seq_attention_mask"].sum(dim=1).tolist() == lengths[:3].tolist()
    trainer.train()
    # a row's feature does not depend on how much padding its batch gave it
    model.eval()
    alone = trainer.data_collator([data[0]])
    with_others = trainer.data_collator([data[0], data[int(np.argmax(lengths))]])
    with torch.no_grad():
        keys = ["seq", "seq_attention_mask", "vec"]
        first = model(**{k: alone[k] for k in keys}).features["seq"][0]
        second = model(**{k: with_others[k] for k in keys}).features["seq"][0]
    torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-6)
