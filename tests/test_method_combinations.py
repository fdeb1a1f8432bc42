"""Methods composed in one trainer: BSS orders the data while gradient modulation scales the encoders' gradients;
each does exactly what it does alone."""

import torch
from transformers import TrainingArguments

from hf_mmbalance import BalancingCallback, MMBalanceConfig, MMBalanceForClassification, MultimodalTrainer
from hf_mmbalance.data import make_synthetic_classification
from hf_mmbalance.methods.bss import BSSCallback, BSSConfig
from hf_mmbalance.methods.modulation import GradientModulationCallback, ModulationConfig

DATA = make_synthetic_classification(num_samples=90, num_classes=3, modalities={"strong": 6, "weak": 4},
                                     signal_strength={"strong": 2.0, "weak": 0.3}, seed=3)


class BatchRecorder(BalancingCallback):
    def __init__(self):
        self.ids = []

    def on_train_batch_outputs(self, args, state, *, model, inputs, outputs):
        self.ids.extend(inputs["sample_idx"].tolist())


def run(tmp_path, *callbacks):
    torch.manual_seed(0)
    model = MMBalanceForClassification(MMBalanceConfig(modalities={"strong": 6, "weak": 4}, num_labels=3))
    recorder = BatchRecorder()
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=9, num_train_epochs=3, learning_rate=0.1,
                             optim="sgd", lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
                             report_to="none", disable_tqdm=True, use_cpu=True, seed=0)
    trainer = MultimodalTrainer(model=model, args=args, train_dataset=DATA["train"], callbacks=[*callbacks, recorder])
    trainer.train()
    return trainer, recorder.ids


def bss():
    return BSSCallback(BSSConfig(scheduler="learned", seed=0))


def test_bss_and_modulation_compose(tmp_path):
    alone, alone_ids = run(tmp_path / "bss", bss())
    modulation = GradientModulationCallback(ModulationConfig(mode="ogm_ge", alpha=0.5, noise=False))
    both, both_ids = run(tmp_path / "both", bss(), modulation)
    # the learned scheduler rescores with the model, so orders may differ after epoch 1; epoch 1 is the same draw
    epoch_one = len(DATA["train"])
    assert both_ids[:epoch_one] == alone_ids[:epoch_one]
    assert sorted(both_ids[:epoch_one]) == sorted(DATA["train"]["sample_idx"])
    coefficients = [entry["modulation/k_strong"] for entry in both.state.log_history if "modulation/k_strong" in entry]
    assert coefficients and min(coefficients) < 1.0  # the strong modality was slowed
    # same data order in epoch 1, different gradients: modulation changed the weights BSS's run reached
    strong_alone = alone.model.encoders["strong"].layers[0].weight
    strong_both = both.model.encoders["strong"].layers[0].weight
    assert not torch.allclose(strong_alone, strong_both)


def test_the_readme_lists_every_option_of_every_method_as_the_config_dataclasses_define_them():
    from pathlib import Path

    from hf_mmbalance.methods.options import replace_block

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert replace_block(readme) == readme, "README's option tables are stale: python -m hf_mmbalance.methods.options README.md"
    for option in ("max_rounds", "target_metric", "retrain", "scoring_batch_size", "alpha", "t_grow", "variant"):
        assert f"| `{option}` |" in readme


def test_a_monitor_only_run_is_tagged_monitored_and_cites_no_method(tmp_path):
    monitored = GradientModulationCallback(ModulationConfig(mode="ada2i", monitor_only=True))
    trainer, _ = run(tmp_path, monitored)
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    assert "ada2i-monitored" in card and "@inproceedings" not in card and "Ada2I" not in card.split("---")[1]
    applied = GradientModulationCallback(ModulationConfig(mode="ada2i"))
    assert applied.method_name == "ada2i" and applied.citation


def test_a_heuristic_curriculum_longer_than_the_run_is_announced(tmp_path):
    import pytest

    with pytest.warns(UserWarning, match="t_grow=40 is beyond num_train_epochs=3: the last epoch uses 17% .*bss.t_grow to at most 3"):
        run(tmp_path, BSSCallback(BSSConfig(scheduler="heuristic", pacing="linear", t_grow=40)))


def test_a_monitor_only_plot_says_nothing_was_modulated(tmp_path):
    from hf_mmbalance.methods.modulation.diagnostics import disparity_ratios_figure

    trainer, _ = run(tmp_path, GradientModulationCallback(ModulationConfig(monitor_only=True)))
    figure = disparity_ratios_figure(trainer.state.log_history, ["strong", "weak"], monitored=True)
    assert "monitored only: no gradient was changed" in figure.axes[0].get_title()
