"""The methods' step path moves nothing to the host: `.item()`, `.tolist()`, `.cpu()`, `.numpy()`, `float()`, `int()`
and `bool()` of a tensor, called from `hf_mmbalance/methods/` or from the clipping that gradient modulation folds its
coefficients into (`hf_mmbalance/trainer/clipping.py`, on with the Trainer's default `max_grad_norm`), are counted per optimizer step (between
`on_step_begin` and `on_step_end`) with logging off. On a GPU each is a device sync that stalls the pipeline."""

import os
from collections import Counter

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from hf_mmbalance import MMBalanceConfig, MMBalanceForClassification, MMBalanceForRegression, MultimodalTrainer
from hf_mmbalance.data import make_synthetic_classification, make_synthetic_regression
from hf_mmbalance.methods.modulation import GradientModulationCallback
from hf_mmbalance.methods.ulgm import ULGMCallback

METHODS_DIR = os.sep + os.path.join("hf_mmbalance", "methods") + os.sep
CLIPPING_FILE = os.sep + os.path.join("hf_mmbalance", "trainer", "clipping.py")
SYNCS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


class SyncCounter(TrainerCallback):
    """Counts host transfers made by the methods' code inside each optimizer step (first and last in the list)."""

    def __init__(self):
        self.per_step: list[Counter] = []
        self._current: Counter | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._current = Counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._current is not None:
            self.per_step.append(self._current)
        self._current = None

    def record(self, name: str, caller: str) -> None:
        if self._current is not None and (METHODS_DIR in caller or caller.endswith(CLIPPING_FILE)):
            self._current[f"{name} @ {os.path.basename(caller)}"] += 1


@pytest.fixture
def counter(monkeypatch):
    spy = SyncCounter()
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, __original=original, __name=name, **kwargs):
            import sys

            spy.record(__name, sys._getframe(1).f_code.co_filename)
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return spy


def make_args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=12, num_train_epochs=2, learning_rate=0.1,
                  optim="sgd", lr_scheduler_type="constant", logging_strategy="no", save_strategy="no",
                  report_to="none", disable_tqdm=True, use_cpu=True, seed=0)
    values.update(overrides)
    return TrainingArguments(**values)


@pytest.mark.parametrize("apply", ["pre_optimizer_step", "backward_hook"])
def test_modulation_steps_make_no_host_sync(tmp_path, counter, apply, monkeypatch):
    import hf_mmbalance.trainer.multimodal_trainer as trainer_module

    folded = []  # pre_optimizer_step: k goes through the trainer's clipping (watched too) at every step
    original = trainer_module.clip_and_scale_gradients
    monkeypatch.setattr(trainer_module, "clip_and_scale_gradients",
                        lambda *args, **kwargs: folded.append(1) or original(*args, **kwargs))
    data = make_synthetic_classification(num_samples=120, num_classes=3, modalities={"a": 6, "b": 4},
                                         signal_strength={"a": 1.5, "b": 0.4}, seed=0)
    torch.manual_seed(0)
    model = MMBalanceForClassification(MMBalanceConfig(modalities={"a": 6, "b": 4}, num_labels=3))
    callback = GradientModulationCallback(alpha=0.5, noise=True, apply=apply, noise_std_from="before")
    MultimodalTrainer(model=model, args=make_args(tmp_path), train_dataset=data["train"],
                      callbacks=[counter, callback, counter]).train()
    assert len(counter.per_step) == 14
    assert len(folded) == (14 if apply == "pre_optimizer_step" else 0)
    assert sum(counter.per_step, Counter()) == Counter()
    assert min(callback.last_coefficients.values()) < 1  # it did modulate (read after training: a sync, outside)


@pytest.mark.parametrize("variant", ["sugrm", "selfmm"])
def test_ulgm_steps_make_no_host_sync_once_the_bank_is_set_up(tmp_path, counter, variant):
    data = make_synthetic_regression(num_samples=120, modalities={"a": 6, "b": 4}, noise={"a": 0.3, "b": 1.0}, seed=0)
    torch.manual_seed(0)
    model = MMBalanceForRegression(MMBalanceConfig(modalities={"a": 6, "b": 4}, task="regression", common_space_size=4))
    ulgm = ULGMCallback(variant=variant)
    MultimodalTrainer(model=model, args=make_args(tmp_path, num_train_epochs=3), train_dataset=data["train"],
                      callbacks=[counter, ulgm, counter]).train()
    steps = counter.per_step
    per_epoch = len(steps) // 3
    assert len(steps) == 3 * per_epoch and per_epoch == 7
    # Once per run: the banks are created at the first step; once per epoch at most: the centres' averaging weights
    # are rebuilt when the set of stored samples changed (here: the first label update, at the start of epoch 2).
    once = {0, per_epoch}
    assert all(not steps[i] for i in range(len(steps)) if i not in once), [dict(c) for c in steps]
    assert sum(steps[i].total() for i in once) < 40
    assert not torch.equal(ulgm.labels["a"], ulgm.labels["fused"])  # labels were generated


def test_the_counter_sees_a_host_transfer_in_the_methods(counter):
    from hf_mmbalance.methods.modulation import ge_noise_std
    from hf_mmbalance.methods.ulgm.updates import extreme_masks

    counter.on_step_begin(None, None, None)
    ge_noise_std(torch.randn(5))  # float(): one
    extreme_masks(torch.tensor([1.0, -2.0]), 3.0)  # bool(any) per side
    counter.on_step_end(None, None, None)
    counts = counter.per_step[0]
    assert counts["__float__ @ gradient.py"] == 1 and counts["__bool__ @ updates.py"] == 2
