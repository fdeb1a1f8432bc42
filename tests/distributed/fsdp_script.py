"""Run by tests/test_fsdp.py under `accelerate launch` (2 CPU processes, gloo): `python fsdp_script.py OUT ENGINE`
with ENGINE = `fsdp` (accelerate's FSDP2 plugin, full shard, made to run on CPU by `cpu_fsdp`) or `ddp` (the same
runs, same global batch, replicated): the test compares the two.

Every method in one launch (starting 2 processes costs ~7 s): gradient modulation in both apply modes without noise,
with GE noise (and a spy that records the full-tensor std next to the std the method used on the shards), the BSS
learned curriculum, ULGM (sugrm), one BMMAL acquisition; under FSDP also mid-training resumes (sharded model and
optimizer state + the methods' state) of modulation + BSS and of ULGM. Each rank writes what it holds into OUT.
"""

import json
import os
import sys

import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_fsdp  # noqa: E402,F401  (before any TrainingArguments)
from safetensors.torch import save_file  # noqa: E402
from trainer_script import SeenIds, StopAtStep, make_data, make_model  # noqa: E402
from transformers import TrainingArguments, set_seed  # noqa: E402

from hf_mmbalance import (  # noqa: E402
    BalancingCallback,
    GradientModulationCallback,
    MMBalanceConfig,
    MMBalanceForRegression,
    MultimodalTrainer,
)
from hf_mmbalance.data import make_synthetic_regression  # noqa: E402
from hf_mmbalance.methods.active import ActiveLearningConfig, run_active_learning  # noqa: E402
from hf_mmbalance.methods.bss import BSSCallback  # noqa: E402
from hf_mmbalance.methods.modulation import per_tensor_std  # noqa: E402
from hf_mmbalance.methods.modulation.gradient import is_sharded  # noqa: E402
from hf_mmbalance.methods.ulgm import ULGMCallback  # noqa: E402

ENGINE = sys.argv[2] if len(sys.argv) > 2 else "fsdp"


def make_args(out_dir: str, run: str, state_dict_type: str = "SHARDED_STATE_DICT", **overrides) -> TrainingArguments:
    values = dict(
        output_dir=os.path.join(out_dir, run), per_device_train_batch_size=8, num_train_epochs=2, learning_rate=0.1,
        optim="sgd", lr_scheduler_type="constant", logging_steps=5, save_strategy="no", report_to="none",
        disable_tqdm=True, use_cpu=True, seed=0,
    )
    if ENGINE == "fsdp":
        values.update(fsdp=True, fsdp_config={"fsdp_version": 2, "reshard_after_forward": True,
                                              "state_dict_type": state_dict_type})
    values.update(overrides)
    return TrainingArguments(**values)


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every rank (an all-gather for a DTensor: every rank calls this in the same order)."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def save_params(trainer, out_dir: str, name: str) -> None:
    params = {n: full(p.detach()).clone().contiguous() for n, p in trainer.model.named_parameters()}
    save_file(params, os.path.join(out_dir, f"{name}_params_rank{trainer.args.process_index}.safetensors"))


def write_json(out_dir: str, name: str, rank: int, value) -> None:
    with open(os.path.join(out_dir, f"{name}_rank{rank}.json"), "w") as handle:
        json.dump(value, handle)


class StdSpy(BalancingCallback):
    """Before modulation (earlier in the list): per encoder tensor, the unsharded gradient's std + 1e-8 and the
    value `per_tensor_std` computes from what this rank holds (a shard under FSDP)."""

    def __init__(self):
        self.records = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if len(self.records) >= 3:
            return
        grads = [p.grad for n, p in model.named_parameters() if n.startswith("encoders.") and p.grad is not None]
        method = per_tensor_std(grads).tolist()
        reference = [float(full(g).float().std()) + 1e-8 for g in grads]
        self.records.append({"method": method, "full": reference, "sharded": [is_sharded(g) for g in grads]})


def train(out_dir, run, callbacks, model=None, data=None, resume=None, **overrides):
    trainer = MultimodalTrainer(model=model or make_model(), args=make_args(out_dir, run, **overrides),
                                train_dataset=(data or make_data())["train"], callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def make_regressor():
    set_seed(0)
    return MMBalanceForRegression(MMBalanceConfig(modalities={"a": 6, "b": 4}, task="regression", common_space_size=4))


def save_banks(ulgm, out_dir, name, rank):
    banks = {f"labels.{k}": v.cpu().contiguous() for k, v in ulgm.labels.items()}
    banks.update({f"features.{k}": v.cpu().contiguous() for k, v in ulgm.features.items()})
    save_file(banks, os.path.join(out_dir, f"{name}_banks_rank{rank}.safetensors"))


def main(out_dir: str) -> None:
    data = make_data()
    ids = data["train"]["sample_idx"]

    # Modulation, noise off, both apply modes (k_m = 1 - tanh(0.5 rho) is active on every step).
    for apply in ("pre_optimizer_step", "backward_hook"):
        callback = GradientModulationCallback(mode="ada2i", alpha=0.5, noise=False, apply=apply)
        trainer = train(out_dir, f"mod_{apply}", [callback])
        save_params(trainer, out_dir, f"mod_{apply}")
        rank = trainer.args.process_index
        write_json(out_dir, f"mod_{apply}", rank, {"applied": callback.applied, "engine": callback.engine.name,
                                                   "k": callback.last_coefficients})

    # pre_optimizer_step with a binding max_grad_norm: k goes into MultimodalTrainer's own clipping (c * k_m), whose
    # norm under FSDP2 must be the full gradients' (DTensor norms reduced), as DDP's is.
    trainer = train(out_dir, "mod_clipped", [GradientModulationCallback(mode="ada2i", alpha=0.5, noise=False)],
                    max_grad_norm=0.05)
    save_params(trainer, out_dir, "mod_clipped")
    write_json(out_dir, "mod_clipped", rank, [e["grad_norm"] for e in trainer.state.log_history if "grad_norm" in e])

    # Modulation with GE noise: the std of each sharded gradient is the full tensor's, the noise the same draw.
    spy = StdSpy()
    trainer = train(out_dir, "mod_noise", [spy, GradientModulationCallback(mode="ada2i", alpha=0.5, noise=True)])
    save_params(trainer, out_dir, "mod_noise")
    write_json(out_dir, "mod_noise_std", rank, spy.records)

    # BSS learned curriculum: scoring split across the ranks (every forward needs both under FSDP).
    bss_options = dict(scheduler="learned", similarity="prediction_similarity", accumulate="sum", scoring_batch_size=16)
    bss, seen = BSSCallback(**bss_options), SeenIds()
    trainer = train(out_dir, "bss", [bss, seen], num_train_epochs=3)
    save_params(trainer, out_dir, "bss")
    write_json(out_dir, "bss", rank, {"orders": {str(e): [ids[i] for i in o] for e, o in bss.sampler.orders.items()},
                                      "seen": seen.seen})

    # ULGM (sugrm): banks from gathered rows and features.
    regression = make_synthetic_regression(num_samples=160, modalities={"a": 6, "b": 4}, noise={"a": 0.3, "b": 1.0}, seed=0)
    ulgm = ULGMCallback(variant="sugrm")
    trainer = train(out_dir, "ulgm", [ulgm], model=make_regressor(), data=regression, num_train_epochs=3)
    save_params(trainer, out_dir, "ulgm")
    save_banks(ulgm, out_dir, "ulgm", rank)

    # One BMMAL acquisition: round 1 random, then pool scoring (split across ranks) and the Shapley pass.
    config = ActiveLearningConfig(strategy="bmmal", budget_per_round=8, max_rounds=2, seed=0)
    result = run_active_learning(make_model, data["train"], make_args(out_dir, "active", state_dict_type="FULL_STATE_DICT"),
                                 config)
    write_json(out_dir, "active", rank, {"acquired": [r.acquired for r in result.state.rounds],
                                         "phi": [r.mean_contributions for r in result.state.rounds]})

    # Resumes (AdamW: the optimizer state matters), stopped after step 9 (in epoch 2 of 7 steps) and resumed.
    combo = dict(num_train_epochs=3, optim="adamw_torch", learning_rate=0.01)

    def combo_callbacks():
        return [BSSCallback(**bss_options), GradientModulationCallback(mode="ada2i", alpha=0.5, noise=True)]

    trainer = train(out_dir, "combo", combo_callbacks(), **combo)
    save_params(trainer, out_dir, "combo")
    if ENGINE == "fsdp":
        train(out_dir, "combo_cut", [*combo_callbacks(), StopAtStep(9)], save_strategy="steps", save_steps=9, **combo)
        trainer = train(out_dir, "combo_cut", combo_callbacks(), resume=os.path.join(out_dir, "combo_cut", "checkpoint-9"),
                        **combo)
        save_params(trainer, out_dir, "combo_resumed")
        ulgm_args = dict(model=make_regressor(), data=regression, num_train_epochs=3)
        train(out_dir, "ulgm_cut", [ULGMCallback(variant="sugrm"), StopAtStep(9)], save_strategy="steps", save_steps=9,
              **ulgm_args)
        resumed = ULGMCallback(variant="sugrm")
        trainer = train(out_dir, "ulgm_cut", [resumed], resume=os.path.join(out_dir, "ulgm_cut", "checkpoint-9"),
                        **{**ulgm_args, "model": make_regressor()})
        save_params(trainer, out_dir, "ulgm_resumed")
        save_banks(resumed, out_dir, "ulgm_resumed", rank)
        write_json(out_dir, "checkpoint_files", rank, sorted(os.listdir(os.path.join(out_dir, "combo_cut", "checkpoint-9"))))
    trainer.accelerator.wait_for_everyone()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # as trainer_script.py: tearing the gloo group down can hang a rank at exit


if __name__ == "__main__":
    main(sys.argv[1])
