"""ULGM state integrity: banks keyed by `sample_idx` on resume, refused missing / corrupt / foreign / reconfigured state,
atomic writes, config and label-range checks, the quantile count, and Self-MM with modalities of different widths."""

import math
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainingArguments

from hf_mmbalance import MMBalanceConfig, MMBalanceForRegression, MultimodalTrainer
from hf_mmbalance.data import make_synthetic_regression
from hf_mmbalance.methods.ulgm import ULGMCallback, ULGMConfig, momentum_update, selfmm_unimodal_labels
from hf_mmbalance.methods.ulgm import callback as ulgm_callback
from hf_mmbalance.methods.ulgm.callback import META_FILE, STATE_FILE
from hf_mmbalance.methods.ulgm.updates import extreme_masks, quantile_count
from hf_mmbalance.trainer.checkpoint_state import CheckpointStateError

MODALITIES = {"text": 8, "audio": 6}
TRAIN = make_synthetic_regression(num_samples=120, modalities=MODALITIES, noise={"text": 0.3, "audio": 1.5}, seed=0)["train"]
N = len(TRAIN)  # 84 rows, 7 steps of 12 per epoch
IDS = torch.as_tensor(TRAIN["sample_idx"]).long()
BATCH = 12
CUT_AT = 10  # in the middle of epoch 2: the banks hold generated labels
H = 3.0
UNEVEN = {"text": {"input_size": 8, "feature_size": 4}, "audio": {"input_size": 6, "feature_size": 6}}


def make_model(seed=0, **config):
    torch.manual_seed(seed)
    options = dict(modalities=MODALITIES, task="regression", common_space_size=4, fusion="mrm")
    options.update(config)
    return MMBalanceForRegression(MMBalanceConfig(**options))


def make_args(output_dir, **overrides):
    values = dict(output_dir=str(output_dir), per_device_train_batch_size=BATCH, num_train_epochs=3, learning_rate=0.01,
                  optim="adamw_torch", lr_scheduler_type="constant", save_strategy="no", report_to="none",
                  disable_tqdm=True, use_cpu=True, seed=0, logging_strategy="no")
    values.update(overrides)
    return TrainingArguments(**values)


def cut_run(output_dir, callback, model):
    """Train 3 epochs' schedule up to CUT_AT steps and save a checkpoint there; return its folder."""
    args = make_args(output_dir, save_strategy="steps", save_steps=CUT_AT, max_steps=CUT_AT)
    MultimodalTrainer(model=model, args=args, train_dataset=TRAIN, callbacks=[callback]).train()
    return output_dir / f"checkpoint-{CUT_AT}"


def resume(checkpoint, output_dir, callback, dataset=TRAIN, model=None, trainer_options=None, **overrides):
    trainer = MultimodalTrainer(model=model or make_model(seed=5), args=make_args(output_dir, **overrides),
                                train_dataset=dataset, callbacks=[callback], **(trainer_options or {}))
    trainer.train(resume_from_checkpoint=str(checkpoint))
    return trainer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A SUGRM checkpoint in the middle of epoch 2 (banks with generated labels), trained on TRAIN in its order."""
    return cut_run(tmp_path_factory.mktemp("cut"), ULGMCallback(variant="sugrm"), make_model())


@pytest.fixture
def copy(checkpoint, tmp_path):
    """A private copy of the checkpoint to damage."""
    target = tmp_path / "checkpoint"
    shutil.copytree(checkpoint, target)
    return target


def banks_by_id(callback, ids):
    """Every bank of `callback` at the rows of `ids`."""
    rows = callback.rows_of(ids)
    banks = {f"labels.{k}": v[rows] for k, v in callback.labels.items()}
    banks.update({f"features.{k}": v[rows] for k, v in callback.features.items()})
    banks["filled"] = callback.filled[rows]
    return banks


# ----- defect 5: banks restored by id, not by row position -----


def test_resume_on_a_reordered_training_set_gives_every_sample_its_own_banks(checkpoint, tmp_path):
    saved = load_file(checkpoint / STATE_FILE)  # rows in TRAIN's order (the cut run's training set)
    reordered = TRAIN.select(np.random.default_rng(1).permutation(N))
    # Both load orders: the checkpoint before the training set (plain Trainer) and after it (FSDP / DeepSpeed).
    first = ULGMCallback(variant="sugrm")
    first.load_checkpoint_state(str(checkpoint))
    first.get_train_sampler(reordered, None)
    second = ULGMCallback(variant="sugrm")
    second.get_train_sampler(reordered, None)
    second.load_checkpoint_state(str(checkpoint))
    for callback in (first, second):
        assert torch.equal(callback.sample_ids, torch.as_tensor(reordered["sample_idx"]).long())
        restored = banks_by_id(callback, IDS)
        for key in ("labels.fused", "labels.text", "labels.audio", "features.fused", "features.text", "filled"):
            error = float((restored[key].float() - saved[key].float()).abs().max())
            assert error == 0, f"{key} misplaced by up to {error:.3g}"
        assert not torch.equal(saved["labels.text"], saved["labels.fused"])  # generated labels, not y_m copies

    # Through the Trainer: resume on the reordered set for ONE more step. Only that step's 12 samples may change.
    resumed = ULGMCallback(variant="sugrm")
    resume(checkpoint, tmp_path / "resumed", resumed, dataset=reordered, max_steps=CUT_AT + 1)
    after = banks_by_id(resumed, IDS)
    unchanged = torch.ones(N, dtype=torch.bool)
    for key in ("labels.text", "labels.audio", "features.fused"):
        same = after[key] == saved[key] if after[key].ndim == 1 else (after[key] == saved[key]).all(dim=1)
        unchanged &= same
    assert int(unchanged.sum()) >= N - BATCH, f"only {int(unchanged.sum())} of {N} samples kept their banks"
    # The new layout: the bank's `sample_idx` order is saved with the banks.
    assert torch.equal(saved["sample_idx"], IDS)


def test_a_callback_trained_again_on_another_order_keeps_its_banks_by_id(checkpoint):
    """A second `train()` with the same instance on a reordered training set (no checkpoint involved)."""
    callback = ULGMCallback(variant="sugrm")
    callback.load_checkpoint_state(str(checkpoint))
    callback.get_train_sampler(TRAIN, None)
    before = banks_by_id(callback, IDS)
    callback.get_train_sampler(TRAIN.select(np.arange(N)[::-1]), None)
    after = banks_by_id(callback, IDS)
    assert all(torch.equal(after[key], before[key]) for key in before)
    with pytest.raises(ValueError, match=r"previous training run holds banks for 84 samples .* use a new ULGMCallback"):
        callback.get_train_sampler(TRAIN.select(range(40)), None)


def test_resume_on_other_sample_ids_or_labels_is_refused_naming_the_file_and_the_count(checkpoint, tmp_path):
    shifted = TRAIN.map(lambda row, i: {"sample_idx": row["sample_idx"] + (10_000 if i < 5 else 0)}, with_indices=True)
    with pytest.raises(CheckpointStateError, match=r"ulgm_banks\.safetensors holds banks for 84 samples and the "
                                                   r"training set has 84: 5 of the training set's `sample_idx` values "
                                                   r"are not in it and 5 of its ids are not in the training set"):
        resume(checkpoint, tmp_path / "shifted", ULGMCallback(variant="sugrm"), dataset=shifted)
    fewer = ULGMCallback(variant="sugrm")
    fewer.load_checkpoint_state(str(checkpoint))
    with pytest.raises(CheckpointStateError, match=r"has 80: 0 of .* and 4 of its ids are not in the training set"):
        fewer.get_train_sampler(TRAIN.select(range(80)), None)
    # Same ids, other multimodal labels: the generated labels belong to the old ones.
    nonzero = [i for i, y in enumerate(TRAIN["labels"]) if abs(float(y)) > 0.1][:3]
    relabelled = TRAIN.map(lambda row, i: {"labels": row["labels"] * (0.5 if i in nonzero else 1.0)}, with_indices=True)
    callback = ULGMCallback(variant="sugrm")
    callback.load_checkpoint_state(str(checkpoint))
    with pytest.raises(CheckpointStateError, match=r"multimodal labels \(`labels`\) of 3 training samples differ .*"
                                                   r"ulgm_banks\.safetensors"):
        callback.get_train_sampler(relabelled, None)


# ----- defect 6: missing, corrupt or reconfigured state is refused by name -----


def test_missing_state_files_are_refused_by_name_and_restart_starts_fresh(copy, tmp_path):
    (copy / STATE_FILE).rename(tmp_path / "banks.bak")
    with pytest.raises(CheckpointStateError, match=r"no ulgm_banks\.safetensors .*method_state_on_resume='restart'"):
        resume(copy, tmp_path / "no_banks", ULGMCallback(variant="sugrm"))
    fresh = ULGMCallback(variant="sugrm")  # the explicit way out: the method starts fresh, training resumes
    trainer = resume(copy, tmp_path / "restart", fresh, trainer_options={"method_state_on_resume": "restart"},
                     max_steps=CUT_AT + 1)
    assert trainer.state.global_step == CUT_AT + 1 and fresh.names == ["text", "audio"]
    assert int(fresh.filled.sum()) == BATCH  # a fresh bank: only the one step's samples are stored
    (tmp_path / "banks.bak").rename(copy / STATE_FILE)
    (copy / META_FILE).unlink()
    with pytest.raises(CheckpointStateError, match=r"no ulgm_state\.json"):
        ULGMCallback(variant="sugrm").load_checkpoint_state(str(copy))


def test_corrupt_or_foreign_state_files_are_refused_by_name(copy):
    def load():
        ULGMCallback(variant="sugrm").load_checkpoint_state(str(copy))

    good_banks, good_meta = (copy / STATE_FILE).read_bytes(), (copy / META_FILE).read_text()
    (copy / STATE_FILE).write_bytes(good_banks[: len(good_banks) // 2])  # truncated
    with pytest.raises(CheckpointStateError, match=r"cannot read .*ulgm_banks\.safetensors"):
        load()
    (copy / STATE_FILE).write_bytes(good_banks)
    (copy / META_FILE).write_text(good_meta[:-7])
    with pytest.raises(CheckpointStateError, match=r"cannot read .*ulgm_state\.json: JSONDecodeError"):
        load()
    (copy / META_FILE).write_text(good_meta)
    tensors = load_file(copy / STATE_FILE)
    old_layout = {k: v for k, v in tensors.items() if k != "sample_idx"}  # banks by row position
    save_file(old_layout, copy / STATE_FILE)
    with pytest.raises(CheckpointStateError, match=r"ulgm_banks\.safetensors lacks \['sample_idx'\]"):
        load()
    save_file({**tensors, "labels.text": tensors["labels.text"][:-1].clone()}, copy / STATE_FILE)
    with pytest.raises(CheckpointStateError, match=r"ulgm_banks\.safetensors is inconsistent: labels\.text"):
        load()
    save_file(tensors, copy / STATE_FILE)
    load()  # the repaired files load


def test_a_changed_method_config_is_refused_naming_the_fields(checkpoint):
    with pytest.raises(CheckpointStateError, match=r"ulgm_state\.json\) was saved with another config "
                                                   r"\(alignment_weight: saved 0\.03, now 0\.1\)"):
        ULGMCallback(variant="sugrm", alignment_weight=0.1).load_checkpoint_state(str(checkpoint))
    with pytest.raises(CheckpointStateError, match=r"alignment_weight: saved 0\.03, now 0\.0.*variant: saved 'sugrm', "
                                                   r"now 'selfmm'"):
        ULGMCallback(variant="selfmm").load_checkpoint_state(str(checkpoint))
    with pytest.raises(CheckpointStateError, match=r"extreme_quantile: saved 0\.05, now 0\.1"):
        ULGMCallback(variant="sugrm", extreme_quantile=0.1).load_checkpoint_state(str(checkpoint))
    # Only what is written for inspection may change on resume.
    ULGMCallback(variant="sugrm", export_labels=True).load_checkpoint_state(str(checkpoint))


def test_state_files_are_written_through_a_temporary_file_and_os_replace(checkpoint, tmp_path, monkeypatch):
    callback = ULGMCallback(variant="sugrm")
    callback.load_checkpoint_state(str(checkpoint))
    callback.get_train_sampler(TRAIN, None)
    target = tmp_path / "save"
    target.mkdir()
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((str(src), str(dst))), real_replace(src, dst))[1])
    callback.save_checkpoint_state(str(target))
    assert {dst for _, dst in replaced} == {str(target / STATE_FILE), str(target / META_FILE)}
    assert all(src.endswith(".tmp") for src, _ in replaced) and sorted(os.listdir(target)) == [STATE_FILE, META_FILE]
    # A save that dies while writing leaves the previous file intact.
    before = (target / STATE_FILE).read_bytes()
    import safetensors.torch

    def dies(tensors, path):
        open(path, "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", dies)
    callback.labels["text"][:] = 0.0
    with pytest.raises(KeyboardInterrupt):
        callback.save_checkpoint_state(str(target))
    assert (target / STATE_FILE).read_bytes() == before
    ULGMCallback(variant="sugrm").load_checkpoint_state(str(target))  # still loads


# ----- defect 11: config fields and the label range -----


def test_negative_or_non_integer_track_samples_and_infinite_label_range_are_refused():
    for bad in (-1, -5, 2.5, True, "3"):
        with pytest.raises(ValueError, match=r"ULGMConfig\.track_samples must be an integer >= 0"):
            ULGMConfig(track_samples=bad)
    assert ULGMConfig(track_samples=0).track_samples == 0
    for bad in (float("inf"), float("nan"), 0.0, -3.0, True):
        with pytest.raises(ValueError, match=r"ULGMConfig\.label_range"):
            ULGMConfig(label_range=bad)


def test_a_label_range_far_wider_than_the_labels_is_refused_at_train_start(tmp_path):
    """H = 1000 on labels in [-3, 3]: SUGRM's offsets scale with 2H, the labels hit the clamp (+-H) in epoch 2 and
    momentum leaves 1/6 y_m + 5/6 H = +-834 after epoch 3. Refused before the first step, naming both ranges."""
    trainer = MultimodalTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=TRAIN,
                                callbacks=[ULGMCallback(label_range=1000.0)])
    low, high = float(min(TRAIN["labels"])), float(max(TRAIN["labels"]))
    with pytest.raises(ValueError, match=rf"ULGMConfig\.label_range=1000 is far wider than the training labels, which "
                                         rf"lie in \[{low:g}, {high:g}\] \(largest \|y\| 3 < label_range / 2 = 500\)"):
        trainer.train()
    assert trainer.state.global_step == 0
    # The rule: largest |y| >= H / 2. 3 >= 5.9 / 2 is accepted, 3 < 6.5 / 2 is not.
    model = make_model()
    accepted = ULGMCallback(label_range=5.9)
    accepted.get_train_sampler(TRAIN, None)
    accepted.on_train_begin(None, None, None, model=model)
    refused = ULGMCallback(label_range=6.5)
    refused.get_train_sampler(TRAIN, None)
    with pytest.raises(ValueError, match="label_range=6.5 is far wider"):
        refused.on_train_begin(None, None, None, model=model)


# ----- defect 12: the quantile count, and Self-MM with modalities of different widths -----


def test_extreme_quantile_0_07_of_100_labels_takes_7_per_side():
    assert 0.07 * 100 != 7 and math.ceil(0.07 * 100) == 8  # the float noise being fixed
    labels = torch.linspace(-2.9, 2.9, 100)[torch.randperm(100, generator=torch.Generator().manual_seed(0))]
    positive, negative = extreme_masks(labels, H, extreme_quantile=0.07)
    assert int(positive.sum()) == 7 and int(negative.sum()) == 7
    assert float(labels[positive].min()) == pytest.approx(float(torch.linspace(-2.9, 2.9, 100)[93]))
    assert quantile_count(0.14, 50) == 7 and quantile_count(0.07, 200) == 14
    assert quantile_count(0.071, 100) == 8 and quantile_count(0.05, 10) == 1  # real fractions still round up


def uneven_model(seed=0):
    return make_model(seed=seed, modalities=UNEVEN, common_space_size=None)


class SecondEpoch:
    epoch = 1.0  # 0-based 1 -> the 1-based epoch 2


def test_selfmm_with_features_of_different_sizes_updates_each_modality_by_the_pure_rule(tmp_path, monkeypatch):
    callback = ULGMCallback(variant="selfmm")
    trainer = MultimodalTrainer(model=uneven_model(), args=make_args(tmp_path, num_train_epochs=1), train_dataset=TRAIN,
                                callbacks=[callback])
    trainer.train()
    assert not callback.stacked and bool(callback.filled.all())
    assert callback.features["text"].shape == (N, 4) and callback.features["audio"].shape == (N, 6)

    model = trainer.model.train()
    batch = TRAIN.with_format("torch")[5:11]
    outputs = model(**{key: batch[key] for key in MODALITIES})
    assert outputs.projected_features is None  # each modality in its own space
    rows = callback.rows_of(batch["sample_idx"])
    y_bank, fused_bank = callback.labels["fused"].clone(), callback.features["fused"].clone()
    before = {name: callback.labels[name].clone() for name in callback.names}
    uni_banks = {name: callback.features[name].clone() for name in callback.names}
    callback.training_loss(None, SecondEpoch(), model=model, inputs=batch, outputs=outputs)
    positive, negative = fused_bank[y_bank > 0].mean(0), fused_bank[y_bank < 0].mean(0)
    moved = 0
    for name in callback.names:
        y_s = before[name]
        generated = selfmm_unimodal_labels(y_bank[rows], outputs.fused_features.detach(), outputs.features[name].detach(),
                                           positive, negative, uni_banks[name][y_s > 0].mean(0),
                                           uni_banks[name][y_s < 0].mean(0), H)
        torch.testing.assert_close(callback.labels[name][rows], momentum_update(y_s[rows], generated, 2))
        others = torch.ones(N, dtype=torch.bool)
        others[rows] = False
        assert torch.equal(callback.labels[name][others], y_s[others])
        torch.testing.assert_close(callback.features[name][rows], outputs.features[name].detach())
        moved += int((callback.labels[name][rows] != y_s[rows]).sum())
    assert moved > 0

    # Under DDP every rank's features are gathered per modality: simulate a second rank holding rows 30..35.
    other = TRAIN.with_format("torch")[30:36]
    other_outputs = model(**{key: other[key] for key in MODALITIES})
    other_part = {"rows": callback.rows_of(other["sample_idx"]), "fused": other_outputs.fused_features.detach().float(),
                  "unimodal": [other_outputs.features[n].detach().float() for n in callback.names]}
    monkeypatch.setattr(ulgm_callback, "is_distributed", lambda: True)
    others = iter([other_part["rows"], other_part["fused"], *other_part["unimodal"]])  # in the order they are gathered
    monkeypatch.setattr(ulgm_callback, "all_gather_rows", lambda tensor: torch.cat([tensor, next(others)]))
    callback.training_loss(None, SecondEpoch(), model=model, inputs=batch, outputs=outputs)
    for name in callback.names:
        torch.testing.assert_close(callback.features[name][other_part["rows"]], other_outputs.features[name].detach())


def test_selfmm_with_features_of_different_sizes_resumes_mid_epoch_to_the_uninterrupted_result(tmp_path):
    full = ULGMCallback(variant="selfmm")
    full_trainer = MultimodalTrainer(model=uneven_model(), args=make_args(tmp_path / "full"), train_dataset=TRAIN,
                                     callbacks=[full])
    full_trainer.train()
    checkpoint = cut_run(tmp_path / "cut", ULGMCallback(variant="selfmm"), uneven_model())
    saved = load_file(checkpoint / STATE_FILE)
    assert saved["features.text"].shape == (N, 4) and saved["features.audio"].shape == (N, 6)
    resumed = ULGMCallback(variant="selfmm")
    trainer = resume(checkpoint, tmp_path / "cut", resumed, model=uneven_model(seed=5))
    assert not resumed.stacked
    for key in full.labels:
        torch.testing.assert_close(resumed.labels[key], full.labels[key], atol=1e-5, rtol=1e-5)
    for key in full.features:
        torch.testing.assert_close(resumed.features[key], full.features[key], atol=1e-5, rtol=1e-4)
    parameters = dict(trainer.model.named_parameters())
    for name, value in full_trainer.model.named_parameters():
        torch.testing.assert_close(parameters[name], value, atol=1e-5, rtol=1e-4)
