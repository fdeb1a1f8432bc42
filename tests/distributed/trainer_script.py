"""Run by tests/test_distributed.py: under `accelerate launch` (2 processes) or plain python (1 process).

Trains a small model with MultimodalTrainer and a test-only BalancingCallback, then each rank writes its final
parameters (safetensors), the logged loss curve and the sample ids it saw (JSON) into OUT_DIR. Then the same for
each balancing method (one launch covers them all: starting 2 processes costs ~7 s): gradient modulation with GE
noise and 2 accumulation micro-batches per step; the BSS learned curriculum, uninterrupted and resumed from a
mid-pass checkpoint (the custom-sampler resume that accelerate gets wrong without `set_sampler`); and 3 rounds of
BMMAL active learning (pool scoring split across ranks, selection on rank 0 and broadcast); ULGM label banks
(batch ids and features gathered from every rank).
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import TrainerCallback, TrainingArguments, set_seed

from hf_mmbalance import (
    BalancingCallback,
    GradientModulationCallback,
    MMBalanceConfig,
    MMBalanceForClassification,
    MMBalanceForRegression,
    MultimodalTrainer,
    make_synthetic_classification,
)
from hf_mmbalance.methods.active import ActiveLearningConfig, run_active_learning
from hf_mmbalance.data import make_synthetic_regression
from hf_mmbalance.methods.bss import BSSCallback
from hf_mmbalance.methods.ulgm import ULGMCallback


class SeenIds(BalancingCallback):
    def __init__(self):
        self.seen = []

    def on_train_batch_outputs(self, args, state, *, model, inputs, outputs):
        self.seen.extend(inputs["sample_idx"].tolist())


class StopAtStep(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


class RecordingPenalty(BalancingCallback):
    """Records the sample ids of every training batch and adds a small feature-norm penalty (so the extra
    loss term goes through the DDP all-reduce too)."""

    def __init__(self):
        self.seen = []

    def on_train_batch_outputs(self, args, state, *, model, inputs, outputs):
        self.seen.extend(inputs["sample_idx"].tolist())
        return 0.01 * sum(feature.pow(2).mean() for feature in outputs.features.values())


def make_data():
    return make_synthetic_classification(
        num_samples=160, num_classes=3, modalities={"a": 6, "b": 4}, signal_strength={"a": 1.0, "b": 0.4}, seed=0
    )


def make_model():
    set_seed(0)
    config = MMBalanceConfig(
        modalities={"a": {"input_size": 6, "hidden_sizes": [8], "feature_size": 8}, "b": {"input_size": 4, "hidden_sizes": [8], "feature_size": 4}},
        num_labels=3,
    )
    return MMBalanceForClassification(config)


def make_args(out_dir: str, run: str, per_device_batch: int, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=os.path.join(out_dir, run),
        per_device_train_batch_size=per_device_batch,
        num_train_epochs=2,
        learning_rate=0.1,
        optim="sgd",
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    values.update(overrides)
    return TrainingArguments(**values)


def save_run(trainer: MultimodalTrainer, out_dir: str, prefix: str, report: dict) -> None:
    rank = trainer.args.process_index
    params = {name: p.detach().clone().contiguous() for name, p in trainer.model.named_parameters()}
    save_file(params, os.path.join(out_dir, f"{prefix}params_rank{rank}.safetensors"))
    report = {
        "world_size": trainer.args.world_size,
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "loss_fused": [entry["loss_fused"] for entry in trainer.state.log_history if "loss_fused" in entry],
        **report,
    }
    with open(os.path.join(out_dir, f"{prefix}report_rank{rank}.json"), "w") as handle:
        json.dump(report, handle)


def logged(trainer: MultimodalTrainer, prefix: str) -> dict[str, list[float]]:
    keys = sorted({key for entry in trainer.state.log_history for key in entry if key.startswith(prefix)})
    return {key: [entry[key] for entry in trainer.state.log_history if key in entry] for key in keys}


def main(out_dir: str, per_device_batch: int) -> None:
    data = make_data()
    recorder = RecordingPenalty()
    trainer = MultimodalTrainer(model=make_model(), args=make_args(out_dir, "run", per_device_batch),
                                train_dataset=data["train"], callbacks=[recorder])
    trainer.train()
    save_run(trainer, out_dir, "", {"seen": recorder.seen})

    # Gradient modulation: scores summed over 2 micro-batches and both ranks, GE noise drawn on every rank.
    modulation = GradientModulationCallback(mode="ada2i", alpha=0.5, noise=True)
    trainer = MultimodalTrainer(
        model=make_model(), args=make_args(out_dir, "modulation", per_device_batch // 2, gradient_accumulation_steps=2),
        train_dataset=data["train"], callbacks=[modulation],
    )
    trainer.train()
    save_run(trainer, out_dir, "modulation_", logged(trainer, "modulation/"))

    # BSS, learned scheduler (rescored every epoch, order built on rank 0 and broadcast): uninterrupted ...
    bss_options = dict(scheduler="learned", similarity="prediction_similarity", accumulate="sum", scoring_batch_size=32)
    bss, seen = BSSCallback(**bss_options), SeenIds()
    trainer = MultimodalTrainer(model=make_model(), args=make_args(out_dir, "bss", per_device_batch, num_train_epochs=3),
                                train_dataset=data["train"], callbacks=[bss, seen])
    trainer.train()
    ids = data["train"]["sample_idx"]  # the sampler yields row positions; the batches carry sample_idx
    orders = {str(epoch): [ids[i] for i in order] for epoch, order in bss.sampler.orders.items()}
    save_run(trainer, out_dir, "bss_", {"orders": orders, "seen": seen.seen})
    # ... and stopped after step 9 (in epoch 2), then resumed from that checkpoint.
    cut_args = make_args(out_dir, "bss_cut", per_device_batch, num_train_epochs=3, save_strategy="steps", save_steps=9)
    MultimodalTrainer(model=make_model(), args=cut_args, train_dataset=data["train"],
                      callbacks=[BSSCallback(**bss_options), StopAtStep(9)]).train()
    resumed_seen = SeenIds()
    trainer = MultimodalTrainer(model=make_model(), args=make_args(out_dir, "bss_cut", per_device_batch, num_train_epochs=3),
                                train_dataset=data["train"], callbacks=[BSSCallback(**bss_options), resumed_seen])
    trainer.train(resume_from_checkpoint=os.path.join(out_dir, "bss_cut", "checkpoint-9"))
    save_run(trainer, out_dir, "bss_resumed_", {"seen": resumed_seen.seen})

    config = ActiveLearningConfig(strategy="bmmal", budget_per_round=8, max_rounds=3, seed=0)
    result = run_active_learning(make_model, data["train"], make_args(out_dir, "active", per_device_batch), config,
                                 eval_dataset=data["validation"])
    rank = trainer.args.process_index
    # ULGM (both variants; sugrm with its default common-space alignment) on a small regression set: every rank
    # must hold the same banks.
    regression = make_synthetic_regression(num_samples=160, modalities={"a": 6, "b": 4}, noise={"a": 0.3, "b": 1.0}, seed=0)
    for variant in ("selfmm", "sugrm"):
        set_seed(0)
        regressor = MMBalanceForRegression(MMBalanceConfig(modalities={"a": 6, "b": 4}, task="regression", common_space_size=4))
        ulgm = ULGMCallback(variant=variant)
        MultimodalTrainer(model=regressor, args=make_args(out_dir, f"ulgm_{variant}", per_device_batch, num_train_epochs=3),
                          train_dataset=regression["train"], callbacks=[ulgm]).train()
        banks = {f"labels.{k}": v.contiguous() for k, v in ulgm.labels.items()}
        banks.update({f"features.{k}": v.contiguous() for k, v in ulgm.features.items()})
        save_file(banks, os.path.join(out_dir, f"ulgm_{variant}_banks_rank{rank}.safetensors"))
    with open(os.path.join(out_dir, f"active_rank{rank}.json"), "w") as handle:
        json.dump({"acquired": [r.acquired for r in result.state.rounds],
                   "phi": [r.mean_contributions for r in result.state.rounds]}, handle)
    trainer.accelerator.wait_for_everyone()
    # Every rank has written its files and passed the barrier above. Exit at once: tearing the gloo group
    # down (Trainer.end / destroy_process_group) intermittently hung one rank here at interpreter exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
