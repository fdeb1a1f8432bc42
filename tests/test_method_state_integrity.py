"""Resume gives the uninterrupted result or refuses: BSS and gradient-modulation checkpoint state (missing, corrupt,
changed config, atomic writes, the exact round trip of BSS's learned scores), modulation's train-start refusals
(regression model, two modulation callbacks) and option checks at config time (boolean strings, BSS pacing)."""

import json
import math
import shutil

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from hf_mmbalance import (
    BalancingCallback,
    MMBalanceConfig,
    MMBalanceForClassification,
    MMBalanceForRegression,
    MultimodalTrainer,
    make_synthetic_classification,
    make_synthetic_regression,
)
from hf_mmbalance.methods.bss import BSSCallback, BSSConfig
from hf_mmbalance.methods.modulation import GradientModulationCallback, ModulationConfig
from hf_mmbalance.trainer.checkpoint_state import CheckpointStateError

DATA = make_synthetic_classification(
    num_samples=60, num_classes=3, modalities={"a": 5, "b": 3}, signal_strength={"a": 1.5, "b": 0.4}, seed=1
)
TRAIN = DATA["train"]  # 42 rows: 5 steps of 10 per epoch (BSS: the 3 epochs are one pass of 13 steps)
N = len(TRAIN)
BATCH = 10
STEPS_PER_EPOCH = math.ceil(N / BATCH)
CUT = 7  # mid-epoch 2 of 3: epoch 2's order was drawn from the accumulated scores of epochs 1-2
BSS_OPTIONS = dict(scheduler="learned", accumulate="sum", scoring_batch_size=16)
MOD_OPTIONS = dict(mode="ada2i", alpha=0.5, noise=True)


def make_model(seed=0):
    torch.manual_seed(seed)
    settings = {"a": {"input_size": 5, "feature_size": 4}, "b": {"input_size": 3, "feature_size": 4}}
    return MMBalanceForClassification(MMBalanceConfig(modalities=settings, num_labels=3))


def make_args(output_dir, **overrides):
    values = dict(output_dir=str(output_dir), per_device_train_batch_size=BATCH, num_train_epochs=3, learning_rate=0.1,
                  optim="sgd", lr_scheduler_type="linear", logging_steps=1, save_strategy="no", report_to="none",
                  disable_tqdm=True, use_cpu=True, seed=0)
    values.update(overrides)
    return TrainingArguments(**values)


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


class BatchRecorder(BalancingCallback):
    def __init__(self):
        self.ids = []

    def on_train_batch_outputs(self, args, state, *, model, inputs, outputs):
        self.ids.extend(inputs["sample_idx"].tolist())


def run_cut(output_dir, callback):
    args = make_args(output_dir, save_strategy="steps", save_steps=CUT)
    MultimodalTrainer(model=make_model(), args=args, train_dataset=TRAIN, callbacks=[callback, StopAt(CUT)]).train()
    return output_dir / f"checkpoint-{CUT}"


@pytest.fixture(scope="module")
def bss_runs(tmp_path_factory):
    """An uninterrupted learned-BSS run and the checkpoint of the same run stopped mid-epoch 2."""
    root = tmp_path_factory.mktemp("bss")
    full_callback, full_recorder = BSSCallback(**BSS_OPTIONS), BatchRecorder()
    full = MultimodalTrainer(model=make_model(), args=make_args(root / "full"), train_dataset=TRAIN,
                             callbacks=[full_callback, full_recorder])
    full.train()
    cut_callback = BSSCallback(**BSS_OPTIONS)
    checkpoint = run_cut(root / "cut", cut_callback)
    return {"full": full, "full_callback": full_callback, "full_ids": full_recorder.ids, "cut_callback": cut_callback,
            "checkpoint": checkpoint}


@pytest.fixture(scope="module")
def modulation_checkpoint(tmp_path_factory):
    return run_cut(tmp_path_factory.mktemp("modulation"), GradientModulationCallback(**MOD_OPTIONS))


def copy_checkpoint(checkpoint, tmp_path):
    target = tmp_path / "run" / checkpoint.name
    shutil.copytree(checkpoint, target)
    return target


def resume(checkpoint, callback, **trainer_options):
    recorder = BatchRecorder()
    trainer = MultimodalTrainer(model=make_model(seed=5), args=make_args(checkpoint.parent, **trainer_options.pop("args", {})),
                                train_dataset=trainer_options.pop("train_dataset", TRAIN), callbacks=[callback, recorder],
                                **trainer_options)
    trainer.train(resume_from_checkpoint=str(checkpoint))
    return trainer, recorder


# ----- BSS: the learned scores round-trip exactly, and the resumed run is the uninterrupted one -----


def test_bss_learned_scores_reload_bit_identical_and_the_resumed_run_equals_the_uninterrupted_one(bss_runs, tmp_path):
    checkpoint = copy_checkpoint(bss_runs["checkpoint"], tmp_path)
    saved = bss_runs["cut_callback"]._accumulated  # what the cut run held when it wrote the checkpoint
    assert saved["loss"].dtype == torch.float64
    loaded = BSSCallback(**BSS_OPTIONS)
    loaded.load_checkpoint_state(str(checkpoint))
    assert set(loaded._accumulated) == {"loss", "similarity"}
    for key, value in saved.items():
        assert loaded._accumulated[key].dtype == torch.float64  # was float32: 6e-8 off after a resume
        assert torch.equal(loaded._accumulated[key], value)
    callback = BSSCallback(**BSS_OPTIONS)
    resumed, recorder = resume(checkpoint, callback)
    assert recorder.ids == bss_runs["full_ids"][CUT * BATCH:]
    # Not bit-equality past a reload: MKL may take another code path for reloaded (differently aligned) weights
    # (HF_NOTES.md). The float32-reload bug itself is caught exactly above, on the reloaded sums.
    for key, value in bss_runs["full_callback"]._accumulated.items():
        torch.testing.assert_close(callback._accumulated[key], value, rtol=1e-6, atol=1e-9, msg=key)
    full_parameters = dict(bss_runs["full"].model.named_parameters())
    for name, value in resumed.model.named_parameters():
        torch.testing.assert_close(value, full_parameters[name], rtol=1e-6, atol=1e-7, msg=name)


# ----- BSS: missing, corrupt, incomplete or changed state is refused by name -----


def test_bss_missing_state_file_is_refused_and_restart_starts_fresh(bss_runs, tmp_path):
    checkpoint = copy_checkpoint(bss_runs["checkpoint"], tmp_path)
    (checkpoint / "bss_state.json").unlink()
    with pytest.raises(CheckpointStateError, match=r"no bss_state\.json .*method_state_on_resume='restart'"):
        resume(checkpoint, BSSCallback(**BSS_OPTIONS))
    callback = BSSCallback(**BSS_OPTIONS)
    trainer, _ = resume(checkpoint, callback, method_state_on_resume="restart")
    assert trainer.state.global_step == math.ceil(3 * N / BATCH)  # BSS: the 3 curriculum epochs are one pass
    assert sorted(callback.sampler.orders) == [1, 2, 3] and sorted(callback.score_history) == [1, 2, 3]


@pytest.mark.parametrize("damage", ["truncated", "not_an_object", "old_format", "bad_values"])
def test_bss_corrupt_or_incomplete_state_file_is_refused_naming_the_file(bss_runs, tmp_path, damage):
    checkpoint = copy_checkpoint(bss_runs["checkpoint"], tmp_path)
    path = checkpoint / "bss_state.json"
    text = path.read_text()
    state = json.loads(text)
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
        match = r"cannot read .*bss_state\.json: JSONDecodeError"
    elif damage == "not_an_object":
        path.write_text("[1, 2]")
        match = r"bss_state\.json holds list"
    elif damage == "old_format":  # what the previous version wrote: no plan, no dtype of the scores
        for key in ("format_version", "num_samples", "seed", "accumulated_dtype"):
            state.pop(key)
        path.write_text(json.dumps(state))
        match = r"bss_state\.json lacks \['format_version', 'num_samples', 'seed', 'accumulated_dtype'\]"
    else:
        state["orders"]["1"][0] = N + 5  # an index outside the training set
        path.write_text(json.dumps(state))
        match = r"bss_state\.json is damaged: \['orders\[1\]'\]"
    with pytest.raises(CheckpointStateError, match=match):
        resume(checkpoint, BSSCallback(**BSS_OPTIONS))


@pytest.mark.parametrize("change, match", [
    (dict(config=dict(accumulate="ema", ema_decay=0.5)), r"accumulate: saved 'sum', now 'ema', ema_decay: saved 0\.9, now 0\.5"),
    (dict(config=dict(scoring_batch_size=32)), r"scoring_batch_size: saved 16, now 32"),
    (dict(args=dict(seed=3)), r"drawn with seed 0 .* this run has seed 3"),
    (dict(train_dataset=TRAIN.select(range(N - 2))), rf"training set of {N} samples, this one has {N - 2}"),
], ids=["ema_decay", "scoring_batch_size", "seed", "dataset"])
def test_bss_resume_with_another_config_seed_or_training_set_is_refused(bss_runs, tmp_path, change, match):
    checkpoint, change = copy_checkpoint(bss_runs["checkpoint"], tmp_path), dict(change)
    callback = BSSCallback(**{**BSS_OPTIONS, **change.pop("config", {})})
    with pytest.raises(CheckpointStateError, match=match):
        resume(checkpoint, callback, **change)


# ----- gradient modulation: missing, corrupt or changed state is refused by name -----


def test_modulation_missing_state_file_is_refused_and_restart_starts_fresh(modulation_checkpoint, tmp_path):
    checkpoint = copy_checkpoint(modulation_checkpoint, tmp_path)
    (checkpoint / "gradient_modulation.json").unlink()
    with pytest.raises(CheckpointStateError, match=r"no gradient_modulation\.json .*method_state_on_resume='restart'"):
        resume(checkpoint, GradientModulationCallback(**MOD_OPTIONS))
    callback = GradientModulationCallback(**MOD_OPTIONS)
    trainer, _ = resume(checkpoint, callback, method_state_on_resume="restart")
    assert trainer.state.global_step == 3 * STEPS_PER_EPOCH and callback.last_coefficients


@pytest.mark.parametrize("change, match", [
    (dict(config=dict(alpha=0.3)), r"gradient_modulation\.json\) was saved with another config \(alpha: saved 0\.5, now 0\.3\)"),
    (dict(config=dict(noise="false")), r"noise: saved True, now False"),
    (dict(args=dict(seed=4)), r"drew its noise with seed 0 .* this run has seed 4"),
], ids=["alpha", "noise", "seed"])
def test_modulation_resume_with_another_config_or_seed_is_refused(modulation_checkpoint, tmp_path, change, match):
    checkpoint, change = copy_checkpoint(modulation_checkpoint, tmp_path), dict(change)
    callback = GradientModulationCallback(**{**MOD_OPTIONS, **change.pop("config", {})})
    with pytest.raises(CheckpointStateError, match=match):
        resume(checkpoint, callback, **change)


def test_modulation_corrupt_or_incomplete_state_file_is_refused_naming_the_file(modulation_checkpoint, tmp_path):
    checkpoint = copy_checkpoint(modulation_checkpoint, tmp_path)
    path = checkpoint / "gradient_modulation.json"
    state = json.loads(path.read_text())
    path.write_text('{"config": ')
    with pytest.raises(CheckpointStateError, match=r"cannot read .*gradient_modulation\.json: JSONDecodeError"):
        resume(checkpoint, GradientModulationCallback(**MOD_OPTIONS))
    path.write_text(json.dumps({key: value for key, value in state.items() if key != "seed"}))
    with pytest.raises(CheckpointStateError, match=r"gradient_modulation\.json lacks \['seed'\]"):
        resume(checkpoint, GradientModulationCallback(**MOD_OPTIONS))


# ----- both: state is written atomically -----


@pytest.mark.parametrize("make_callback, file_name", [
    (lambda: BSSCallback(**BSS_OPTIONS), "bss_state.json"),
    (lambda: GradientModulationCallback(**MOD_OPTIONS), "gradient_modulation.json"),
], ids=["bss", "modulation"])
def test_a_save_killed_mid_write_leaves_the_previous_state_file_whole(tmp_path, monkeypatch, make_callback, file_name):
    callback = make_callback()
    callback.save_checkpoint_state(str(tmp_path))
    before = (tmp_path / file_name).read_text()
    real_dump = json.dump

    def dump_then_die(payload, handle, **options):
        handle.write('{"config": {')  # part of the file reaches the disk, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", dump_then_die)
    with pytest.raises(KeyboardInterrupt):
        callback.save_checkpoint_state(str(tmp_path))
    monkeypatch.setattr(json, "dump", real_dump)
    assert (tmp_path / file_name).read_text() == before  # old code truncated it first: a corrupt checkpoint
    make_callback().load_checkpoint_state(str(tmp_path))


# ----- gradient modulation: refused at train start -----


class StepCounter(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.steps += 1


def test_modulation_refuses_a_regression_model_at_train_start(tmp_path):
    data = make_synthetic_regression(num_samples=30, modalities={"a": 4, "b": 3}, seed=0)
    torch.manual_seed(0)
    model = MMBalanceForRegression(MMBalanceConfig(modalities={"a": 4, "b": 3}, task="regression"))
    counter = StepCounter()
    trainer = MultimodalTrainer(model=model, args=make_args(tmp_path, num_train_epochs=1), train_dataset=data["train"],
                                callbacks=[GradientModulationCallback(), counter])
    with pytest.raises(ValueError, match=r"classification-only .*task='regression'"):
        trainer.train()
    assert counter.steps == 0  # refused before any step, not after training with k = 1 throughout


def test_two_modulation_callbacks_in_one_trainer_are_refused_naming_both(tmp_path):
    counter = StepCounter()
    first, second = GradientModulationCallback(mode="ada2i", alpha=0.1), GradientModulationCallback(mode="ogm_ge", alpha=0.3)
    trainer = MultimodalTrainer(model=make_model(), args=make_args(tmp_path, num_train_epochs=1), train_dataset=TRAIN,
                                callbacks=[first, counter, second])
    with pytest.raises(ValueError, match=r"GradientModulationCallback\(mode='ada2i', alpha=0\.1\) and "
                                         r"GradientModulationCallback\(mode='ogm_ge', alpha=0\.3\)\) would scale the gradients twice"):
        trainer.train()
    assert counter.steps == 0
    # one modulation callback per trainer is fine, also when it is reused by the next trainer
    single = MultimodalTrainer(model=make_model(), args=make_args(tmp_path, max_steps=2), train_dataset=TRAIN,
                               callbacks=[first])
    single.train()
    MultimodalTrainer(model=make_model(), args=make_args(tmp_path, max_steps=1), train_dataset=TRAIN, callbacks=[first]).train()
    assert single.state.global_step == 2
    single.state.save_to_json(str(tmp_path / "trainer_state.json"))
    assert "_hf_mmbalance" not in (tmp_path / "trainer_state.json").read_text()  # the run marker is not saved


# ----- options are checked when the config is built -----


@pytest.mark.parametrize("field", ["noise", "monitor_only"])
def test_boolean_modulation_options_parse_true_false_strings_and_refuse_anything_else(field):
    for value, expected in [("false", False), ("False", False), (" TRUE ", True), ("true", True), (False, False), (True, True)]:
        assert getattr(ModulationConfig(**{field: value}), field) is expected  # "false" was truthy before
    for value in ("no", "0", "", 0, 1, None, 0.0):
        with pytest.raises(ValueError, match=rf"ModulationConfig\.{field} must be true or false .*got {value!r}"):
            ModulationConfig(**{field: value})


@pytest.mark.parametrize("options, match", [
    (dict(lambda0=0.0), r"BSSConfig\.lambda0 must be a number in \(0, 1\]"),
    (dict(lambda0=1.5), r"BSSConfig\.lambda0 must be a number in \(0, 1\]"),
    (dict(lambda0="0.1"), r"BSSConfig\.lambda0 must be a number in \(0, 1\]"),
    (dict(lambda0=float("nan")), r"BSSConfig\.lambda0"),
    (dict(t_grow=0), r"BSSConfig\.t_grow must be a number >= 1"),
    (dict(t_grow=True), r"BSSConfig\.t_grow must be a number >= 1"),
    (dict(n_bins=0, pacing="baby_step"), r"BSSConfig\.n_bins must be an int >= 1"),
    (dict(n_bins=2.5), r"BSSConfig\.n_bins must be an int >= 1"),
    (dict(ema_decay=1.0), r"BSSConfig\.ema_decay must be a number in \[0, 1\)"),
    (dict(seed=-1), r"BSSConfig\.seed must be None or an int >= 0"),
])
def test_bss_pacing_options_are_checked_when_the_config_is_built(options, match):
    with pytest.raises(ValueError, match=match):
        BSSConfig(**options)  # was accepted here and failed (or not) only at train()
    assert BSSConfig(lambda0=1, t_grow=1, n_bins=1).lambda0 == 1  # the edges of the ranges are valid
