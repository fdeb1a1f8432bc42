"""BSS inside MultimodalTrainer: the planned epochs are what is trained, step accounting, CL / anti-CL, the learned
scheduler's permutations, resume mid-pass, diagnostics and errors."""

import json
import math

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from hf_mmbalance import BalancingCallback, MMBalanceConfig, MMBalanceForClassification, MultimodalTrainer, make_synthetic_classification
from hf_mmbalance.methods.bss import BSSCallback, BSSConfig, measure, pacing_fraction

DATA = make_synthetic_classification(
    num_samples=120, num_classes=3, modalities={"a": 6, "b": 4}, signal_strength={"a": 1.5, "b": 0.4}, seed=0
)
TRAIN = DATA["train"]
N = len(TRAIN)


def make_model(seed=0):
    torch.manual_seed(seed)
    settings = {"a": {"input_size": 6, "feature_size": 6}, "b": {"input_size": 4, "feature_size": 6}}
    return MMBalanceForClassification(MMBalanceConfig(modalities=settings, num_labels=3))


def make_args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=10, num_train_epochs=5, learning_rate=0.1,
                  optim="sgd", lr_scheduler_type="linear", logging_steps=1, save_strategy="no", report_to="none",
                  disable_tqdm=True, use_cpu=True, seed=0)
    values.update(overrides)
    return TrainingArguments(**values)


class BatchRecorder(BalancingCallback):
    def __init__(self):
        self.ids = []

    def on_train_batch_outputs(self, args, state, *, model, inputs, outputs):
        self.ids.extend(inputs["sample_idx"].tolist())


def train(tmp_path, bss, model=None, **overrides):
    recorder = BatchRecorder()
    trainer = MultimodalTrainer(model=model or make_model(), args=make_args(tmp_path, **overrides), train_dataset=TRAIN,
                                callbacks=[bss, recorder])
    trainer.train()
    return trainer, recorder


def split_by_epoch(ids, sizes):
    out, start = [], 0
    for size in sizes:
        out.append(ids[start:start + size])
        start += size
    return out


@pytest.mark.parametrize("order", ["cl", "anti_cl"])
def test_heuristic_epochs_train_the_paced_subset_of_the_sorted_order(tmp_path, order):
    config = BSSConfig(scheduler="heuristic", criterion="feature_similarity-training_loss", pacing="linear",
                       lambda0=0.2, t_grow=4, order=order)
    initial_scores = measure(make_model(), TRAIN.with_format("torch"), config.criterion)["score"]
    trainer, recorder = train(tmp_path, BSSCallback(config))
    sizes = [math.ceil(N * min(1.0, 0.2 + 0.8 * e / 4)) for e in range(1, 6)]
    callback = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, BSSCallback))
    assert callback.sampler.epoch_sizes == sizes
    assert trainer.state.global_step == trainer.state.max_steps == math.ceil(sum(sizes) / 10)
    position_of = {int(i): p for p, i in enumerate(TRAIN["sample_idx"])}
    ranked = sorted(range(N), key=lambda p: (-float(initial_scores[p]), p))
    if order == "anti_cl":
        ranked = ranked[::-1]
    for size, ids in zip(sizes, split_by_epoch(recorder.ids, sizes)):
        assert sorted(position_of[i] for i in ids) == sorted(ranked[:size])  # the most (least) balanced first
    # shuffled within the epoch, and a new shuffle each epoch
    epochs = split_by_epoch(recorder.ids, sizes)
    assert epochs[-1] != epochs[-2]


def test_learned_scheduler_trains_a_weighted_permutation_of_every_sample_each_epoch(tmp_path):
    trainer, recorder = train(tmp_path, BSSCallback(scheduler="learned", accumulate="sum"), num_train_epochs=3)
    epochs = split_by_epoch(recorder.ids, [N] * 3)
    assert all(sorted(ids) == sorted(TRAIN["sample_idx"]) for ids in epochs)
    assert len({tuple(ids) for ids in epochs}) == 3
    assert trainer.state.global_step == math.ceil(3 * N / 10)
    logged = [e for e in trainer.state.log_history if "bss/epoch" in e]
    assert [e["bss/epoch"] for e in logged][-1] == 3 and logged[-1]["bss/fraction_seen"] == 1.0


@pytest.mark.parametrize("scheduler", ["heuristic", "learned"])
def test_resume_mid_pass_replays_the_same_orders_and_weights(tmp_path, scheduler):
    options = dict(scheduler=scheduler, pacing="root", lambda0=0.3, t_grow=3)
    full, full_ids = train(tmp_path / "full", BSSCallback(**options), num_train_epochs=4)

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 13:
                control.should_training_stop = True

    cut_args = dict(num_train_epochs=4, save_strategy="steps", save_steps=13)
    trainer = MultimodalTrainer(model=make_model(), args=make_args(tmp_path / "cut", **cut_args), train_dataset=TRAIN,
                                callbacks=[BSSCallback(**options), StopAt()])
    trainer.train()
    checkpoint = tmp_path / "cut" / "checkpoint-13"
    saved = json.loads((checkpoint / "bss_state.json").read_text())
    assert saved["orders"]  # the orders built so far travel with the checkpoint
    resumed_callback = BSSCallback(**options)
    recorder = BatchRecorder()
    resumed = MultimodalTrainer(model=make_model(seed=7), args=make_args(tmp_path / "cut", num_train_epochs=4),
                                train_dataset=TRAIN, callbacks=[resumed_callback, recorder])
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert recorder.ids == full_ids.ids[13 * 10:]
    assert resumed.state.global_step == full.state.global_step
    for name, value in full.model.named_parameters():
        torch.testing.assert_close(dict(resumed.model.named_parameters())[name], value, atol=1e-6, rtol=1e-5)


def test_scoring_is_inference_only_and_the_diagnostics_plot_is_written(tmp_path):
    callback = BSSCallback(scheduler="learned")
    trainer, _ = train(tmp_path, callback, num_train_epochs=2)
    assert sorted(callback.score_history) == [1, 2] and sum(callback.score_history[1]["counts"]) == N
    paths = callback.plot_diagnostics(trainer.state.log_history, str(tmp_path / "plots"))
    from PIL import Image

    assert Image.open(paths[0]).size[0] > 500
    assert pacing_fraction("root", 0, lambda0=0.1, t_grow=40) == pytest.approx(0.1)


def test_bad_options_get_clear_errors(tmp_path):
    for options, match in [(dict(scheduler="spl"), "scheduler"), (dict(order="reverse"), "order"),
                           (dict(accumulate="mean"), "accumulate"), (dict(rescore_every=0), "rescore_every"),
                           (dict(criterion="loss"), "criterion.*training_loss"), (dict(pacing="cubic"), "pacing.*geometric")]:
        with pytest.raises(ValueError, match=match):
            BSSConfig(**options)
    with pytest.raises(ValueError, match="num_train_epochs, not max_steps"):
        train(tmp_path, BSSCallback(), max_steps=5)


@pytest.mark.parametrize("recipe", ["bss_heuristic.yaml", "bss_learned.yaml"])
def test_the_bss_recipes_train_from_the_cli_and_plot_the_curriculum(tmp_path, recipe):
    from pathlib import Path

    from PIL import Image

    from hf_mmbalance.cli.main import main

    recipes = Path(__file__).resolve().parents[1] / "recipes" / "mfeat"
    flags = ["--num_train_epochs", "3", "--bss.t_grow", "2", "--views", "fou", "zer", "--output_dir", str(tmp_path),
             "--eval_strategy", "no", "--logging_steps", "20"]
    assert main(["train", "--config", str(recipes / recipe), *flags]) == 0
    log_history = json.loads((tmp_path / "log_history.json").read_text())
    assert any("bss/epoch" in entry for entry in log_history)
    assert Image.open(tmp_path / "bss_curriculum.png").size[0] > 500
    assert "bss" in (tmp_path / "README.md").read_text()


def test_heuristic_rescoring_every_k_epochs(tmp_path):
    callback = BSSCallback(scheduler="heuristic", pacing="linear", lambda0=0.5, t_grow=2, rescore_every=2)
    trainer, recorder = train(tmp_path, callback, num_train_epochs=5)
    assert sorted(callback.score_history) == [1, 3, 5]  # scored before epochs 1, 3 and 5
    once = BSSCallback(scheduler="heuristic", pacing="linear", lambda0=0.5, t_grow=2)
    train(tmp_path / "once", once, num_train_epochs=5)
    assert sorted(once.score_history) == [1]  # released behaviour: scored once, before epoch 1
    logged = [e for e in trainer.state.log_history if "bss/fraction_seen" in e]
    assert [e["bss/lambda"] for e in logged][0] == pytest.approx(math.ceil(N * 0.75) / N)
    assert logged[-1]["bss/fraction_seen"] == 1.0


def test_epoch_strategies_act_at_every_curriculum_epoch(tmp_path):
    callback = BSSCallback(scheduler="learned")
    recorder = BatchRecorder()
    trainer = MultimodalTrainer(model=make_model(), args=make_args(tmp_path, num_train_epochs=3, eval_strategy="epoch",
                                                                   save_strategy="epoch"),
                                train_dataset=TRAIN, eval_dataset=DATA["validation"], callbacks=[callback, recorder])
    trainer.train()
    evaluated = [e["step"] for e in trainer.state.log_history if "eval_accuracy" in e]
    assert evaluated == [math.ceil(N * e / 10) for e in (1, 2, 3)]  # the step holding each epoch's last sample
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == sorted(f"checkpoint-{s}" for s in evaluated)
