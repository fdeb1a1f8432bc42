"""DeepSpeed ZeRO-2 / ZeRO-3 check of the balancing methods on GPUs (issue 14). Not run here: DeepSpeed installs from
PyPI on the CPU machines, but accelerate runs it only on an accelerator (on CPU its state counts one process and the
Trainer's batch check fails), so the CPU test suite reproduces DeepSpeed's step order instead
(tests/test_deepspeed_order.py). On a machine with 2 GPUs and `pip install deepspeed`:

    accelerate launch --num_processes 2 benchmarks/deepspeed_zero_gpu.py OUT/ddp ddp
    accelerate launch --num_processes 2 benchmarks/deepspeed_zero_gpu.py OUT/zero2 zero2
    accelerate launch --num_processes 2 benchmarks/deepspeed_zero_gpu.py OUT/zero3 zero3
    python benchmarks/deepspeed_zero_gpu.py --compare OUT/ddp OUT/zero2 OUT/zero3

Each run trains, with the same global batch: gradient modulation with `apply="auto"` (the backward hook under
DeepSpeed; no GE noise, which ZeRO cannot have), BSS (learned scheduler: scoring split across the ranks), ULGM (sugrm)
and one BMMAL acquisition, and checks that `apply="pre_optimizer_step"` is refused. `--compare` prints the largest
parameter / bank differences against the DDP run and whether the orders and acquisitions are identical (expected:
differences at float tolerance, identical orders), and exits non-zero otherwise.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


def make_data():
    from hf_mmbalance import make_synthetic_classification

    return make_synthetic_classification(num_samples=640, num_classes=3, modalities={"a": 6, "b": 4},
                                         signal_strength={"a": 1.0, "b": 0.4}, seed=0)


def make_model():
    from transformers import set_seed

    from hf_mmbalance import MMBalanceConfig, MMBalanceForClassification

    set_seed(0)
    return MMBalanceForClassification(MMBalanceConfig(
        modalities={"a": {"input_size": 6, "hidden_sizes": [64], "feature_size": 32},
                    "b": {"input_size": 4, "hidden_sizes": [64], "feature_size": 32}}, num_labels=3))


def make_args(out: Path, run: str, engine: str, **overrides):
    from transformers import TrainingArguments

    values = dict(output_dir=str(out / run), per_device_train_batch_size=16, num_train_epochs=2, learning_rate=0.05,
                  lr_scheduler_type="constant", logging_steps=10, save_strategy="no", report_to="none",
                  disable_tqdm=True, seed=0, max_grad_norm=0.0, optim="sgd")
    if engine.startswith("zero"):
        values["deepspeed"] = {
            "zero_optimization": {"stage": int(engine[-1])}, "train_micro_batch_size_per_gpu": "auto",
            "train_batch_size": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            "zero_allow_untested_optimizer": True, "bf16": {"enabled": False}, "fp16": {"enabled": False},
        }
    values.update(overrides)
    return TrainingArguments(**values)


def full_parameters(trainer) -> dict[str, torch.Tensor]:
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # ZeRO-3: gathered on every rank
    return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}


def run(out: Path, engine: str) -> None:
    from safetensors.torch import save_file

    from hf_mmbalance import GradientModulationCallback, MMBalanceConfig, MMBalanceForRegression, MultimodalTrainer
    from hf_mmbalance.data import make_synthetic_regression
    from hf_mmbalance.methods.active import ActiveLearningConfig, run_active_learning
    from hf_mmbalance.methods.bss import BSSCallback
    from hf_mmbalance.methods.ulgm import ULGMCallback

    out.mkdir(parents=True, exist_ok=True)
    data = make_data()
    report: dict = {"engine": engine}

    modulation = GradientModulationCallback(mode="ada2i", alpha=0.5, noise=False, apply="auto")
    trainer = MultimodalTrainer(model=make_model(), args=make_args(out, "modulation", engine), train_dataset=data["train"],
                                callbacks=[modulation])
    trainer.train()
    rank = trainer.args.process_index
    report["modulation"] = {"applied": modulation.applied, "k": modulation.last_coefficients}
    if rank == 0:
        save_file(full_parameters(trainer), str(out / "modulation_params.safetensors"))
    else:
        full_parameters(trainer)

    if engine != "ddp":
        try:
            MultimodalTrainer(model=make_model(), args=make_args(out, "refused", engine), train_dataset=data["train"],
                              callbacks=[GradientModulationCallback(noise=False, apply="pre_optimizer_step")]).train()
            report["pre_optimizer_step_refused"] = False
        except ValueError as error:
            report["pre_optimizer_step_refused"] = "AFTER the update" in str(error)

    bss = BSSCallback(scheduler="learned", similarity="prediction_similarity", accumulate="sum", scoring_batch_size=64)
    MultimodalTrainer(model=make_model(), args=make_args(out, "bss", engine, num_train_epochs=3), train_dataset=data["train"],
                      callbacks=[bss]).train()
    report["bss_orders"] = {str(e): o for e, o in bss.sampler.orders.items()}

    regression = make_synthetic_regression(num_samples=640, modalities={"a": 6, "b": 4}, noise={"a": 0.3, "b": 1.0}, seed=0)
    torch.manual_seed(0)
    regressor = MMBalanceForRegression(MMBalanceConfig(modalities={"a": 6, "b": 4}, task="regression", common_space_size=8))
    ulgm = ULGMCallback(variant="sugrm")
    MultimodalTrainer(model=regressor, args=make_args(out, "ulgm", engine, num_train_epochs=3),
                      train_dataset=regression["train"], callbacks=[ulgm]).train()
    if rank == 0:
        banks = {f"labels.{k}": v.cpu().contiguous() for k, v in ulgm.labels.items()}
        save_file(banks, str(out / "ulgm_banks.safetensors"))

    config = ActiveLearningConfig(strategy="bmmal", budget_per_round=16, max_rounds=2, seed=0)
    result = run_active_learning(make_model, data["train"], make_args(out, "active", engine), config)
    report["active"] = [r.acquired for r in result.state.rounds]
    if rank == 0:
        (out / "report.json").write_text(json.dumps(report, indent=1))
    trainer.accelerator.wait_for_everyone()


def compare(reference: Path, *others: Path) -> int:
    from safetensors.torch import load_file

    failures = 0
    base = json.loads((reference / "report.json").read_text())
    for other in others:
        report = json.loads((other / "report.json").read_text())
        lines = [f"{other} vs {reference}:"]
        for name in ("modulation_params", "ulgm_banks"):
            a, b = load_file(reference / f"{name}.safetensors"), load_file(other / f"{name}.safetensors")
            worst = max(float((a[k] - b[k]).abs().max()) for k in a)
            failures += worst > 1e-4
            lines.append(f"  {name}: max |difference| {worst:.3g}")
        for key in ("bss_orders", "active"):
            same = report[key] == base[key]
            failures += not same
            lines.append(f"  {key}: {'identical' if same else 'DIFFERENT'}")
        lines.append(f"  modulation applied {report['modulation']['applied']}, k {report['modulation']['k']}, "
                     f"pre_optimizer_step refused: {report.get('pre_optimizer_step_refused')}")
        failures += report["modulation"]["applied"] != "backward_hook" or not report.get("pre_optimizer_step_refused")
        print("\n".join(lines))
    return int(failures > 0)


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        sys.exit(compare(*(Path(p) for p in sys.argv[2:])))
    run(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "zero2")
    sys.stdout.flush()
    os._exit(0)
