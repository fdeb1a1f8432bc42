"""Ada2I / OGM-GE gradient modulation: the pure math against hand computations, then the callback inside
`MultimodalTrainer` (gradients actually scaled, window, accumulation, resume, bf16, logs, errors)."""

import math

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_mmbalance import MMBalanceConfig, MMBalanceForClassification, MultimodalTrainer, make_synthetic_classification
from hf_mmbalance.methods.modulation import (
    GradientModulationCallback,
    ModulationConfig,
    disparity_ratios,
    ge_noise_std,
    modality_scores,
    modulate_gradients,
    modulation_coefficients,
    plot_disparity_ratios,
)

MODALITIES = {"a": 6, "b": 4, "c": 5}
DATA = make_synthetic_classification(
    num_samples=120, num_classes=3, modalities=MODALITIES, signal_strength={"a": 1.5, "b": 0.5, "c": 0.2}, seed=3
)


def softmax_at(row, label):
    exps = [math.exp(v) for v in row]
    return exps[label] / sum(exps)


def hand_scores(logits, labels):
    return {name: sum(softmax_at(row, y) for row, y in zip(rows, labels)) for name, rows in logits.items()}


def hand_k(rho, alpha):
    return 1 - math.tanh(alpha * rho) if rho > 1 else 1.0


LOGITS_2 = {"text": [[2.0, 0.1, -1.0], [0.3, 1.2, 0.0]], "audio": [[0.1, 0.0, 0.2], [0.5, 0.4, -0.3]]}
LOGITS_3 = {**LOGITS_2, "video": [[-0.5, 0.0, 0.9], [0.0, 0.0, 0.0]]}
LABELS = [0, 1]


def as_tensors(logits):
    return {name: torch.tensor(rows) for name, rows in logits.items()}


@pytest.mark.parametrize("logits", [LOGITS_2, LOGITS_3], ids=["M=2", "M=3"])
def test_ada2i_scores_ratios_and_coefficients_equal_the_hand_computation(logits):
    scores = modality_scores(as_tensors(logits), torch.tensor(LABELS))
    expected = hand_scores(logits, LABELS)
    assert scores.tolist() == pytest.approx(list(expected.values()), rel=1e-6)
    ratios = disparity_ratios(scores, "ada2i")
    weakest = min(expected.values())
    assert ratios.tolist() == pytest.approx([s / weakest for s in expected.values()], rel=1e-6)
    coefficients = modulation_coefficients(ratios, alpha=0.3)
    assert coefficients.tolist() == pytest.approx([hand_k(s / weakest, 0.3) for s in expected.values()], rel=1e-6)
    weakest_index = list(expected.values()).index(weakest)
    assert coefficients[weakest_index] == 1.0  # the weakest modality is never slowed down
    assert all(k < 1 for i, k in enumerate(coefficients.tolist()) if i != weakest_index)


def test_ogm_ge_ratios_follow_the_released_code_for_two_modalities():
    scores = modality_scores(as_tensors(LOGITS_2), torch.tensor(LABELS))
    s_text, s_audio = hand_scores(LOGITS_2, LABELS).values()
    assert s_text > s_audio
    ratios = disparity_ratios(scores, "ogm_ge")
    assert ratios.tolist() == pytest.approx([s_text / s_audio, s_audio / s_text], rel=1e-6)
    coefficients = modulation_coefficients(ratios, alpha=0.1)
    # released code: coeff_v = 1 - tanh(alpha * relu(ratio_v)) for the stronger one, 1 for the other
    assert coefficients.tolist() == pytest.approx([1 - math.tanh(0.1 * s_text / s_audio), 1.0], rel=1e-6)
    # same coefficients as Ada2I for M = 2: only the weaker modality's ratio differs (1/rho instead of 1)
    assert torch.equal(coefficients, modulation_coefficients(disparity_ratios(scores, "ada2i"), alpha=0.1))


def test_ogm_ge_refuses_three_modalities_and_unknown_modes():
    scores = modality_scores(as_tensors(LOGITS_3), torch.tensor(LABELS))
    with pytest.raises(ValueError, match="exactly 2 modalities"):
        disparity_ratios(scores, "ogm_ge")
    with pytest.raises(ValueError, match="mode='adai'.*ada2i"):
        disparity_ratios(scores, "adai")
    with pytest.raises(ValueError, match="alpha"):
        modulation_coefficients(scores, alpha=-1.0)


def test_equal_scores_and_alpha_zero_leave_every_coefficient_at_one():
    assert modulation_coefficients(disparity_ratios(torch.tensor([2.0, 2.0, 2.0])), 0.5).tolist() == [1.0, 1.0, 1.0]
    assert modulation_coefficients(disparity_ratios(torch.tensor([3.0, 1.0])), 0.0).tolist() == [1.0, 1.0]


def make_param(values):
    param = torch.nn.Parameter(torch.zeros_like(values))
    param.grad = values.clone()
    return param


@pytest.mark.parametrize("std_from, factor", [("before", 1.0), ("after", 0.25)])
def test_ge_noise_has_the_std_of_the_gradient_before_or_after_scaling(std_from, factor):
    gradient = torch.randn(400, 500, generator=torch.Generator().manual_seed(0)) * 3.0 + 1.0
    param = make_param(gradient)
    modulate_gradients({"m": [param]}, {"m": 0.25}, noise=True, noise_std_from=std_from, seed=7)
    noise = param.grad - 0.25 * gradient
    expected_std = factor * float(gradient.std()) + 1e-8 if std_from == "after" else float(gradient.std()) + 1e-8
    assert ge_noise_std(gradient) == pytest.approx(float(gradient.std()) + 1e-8)
    assert float(noise.std()) == pytest.approx(expected_std, rel=0.01)
    assert abs(float(noise.mean())) < 0.01 * expected_std
    again = make_param(gradient)
    modulate_gradients({"m": [again]}, {"m": 0.25}, noise=True, noise_std_from=std_from, seed=7)
    assert torch.equal(again.grad, param.grad)  # same seed, same noise: what every rank relies on
    other = make_param(gradient)
    modulate_gradients({"m": [other]}, {"m": 0.25}, noise=True, noise_std_from=std_from, seed=8)
    assert not torch.equal(other.grad, param.grad)


def test_without_noise_the_gradient_is_only_scaled():
    gradient = torch.randn(10, 3)
    param, untouched = make_param(gradient), make_param(gradient)
    modulate_gradients({"m": [param], "w": [untouched]}, {"m": 0.4, "w": 1.0}, noise=False, noise_std_from="after", seed=0)
    assert torch.equal(param.grad, gradient * 0.4) and torch.equal(untouched.grad, gradient)


# ----- the callback inside MultimodalTrainer -----


def make_model(seed=0, modalities=MODALITIES, **config):
    torch.manual_seed(seed)
    settings = {name: {"input_size": size, "hidden_sizes": [8], "feature_size": 6} for name, size in modalities.items()}
    return MMBalanceForClassification(MMBalanceConfig(modalities=settings, num_labels=3, **{"unimodal_heads": False, **config}))


def make_args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=12, num_train_epochs=2, learning_rate=0.1, optim="sgd",
        lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=True, seed=0, max_grad_norm=0.0,
    )
    values.update(overrides)
    return TrainingArguments(**values)


class GradientSpy(TrainerCallback):
    """Copies every gradient at `on_pre_optimizer_step` (placed before and after the modulation callback)."""

    def __init__(self):
        self.steps = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.steps.append({name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None})


class GradientSpyAfter(GradientSpy):
    """A second spy class: Trainer warns when two callbacks share a class."""


class OutputsSpy(GradientModulationCallback):
    """The modulation callback, also keeping each micro-batch's (logits, labels) to recompute the scores."""

    def __init__(self, **options):
        super().__init__(**options)
        self.batches, self.history, self.features = [], [], []

    def on_train_batch_outputs(self, args, state, *, model, inputs, outputs):
        field = outputs.modality_logits if self.config.score == "dot" else outputs.modality_cosine_logits
        self.batches.append(({k: v.detach().clone() for k, v in field.items()}, inputs["labels"].clone(), state.global_step))
        self.features.append(outputs.features["a"].detach().clone())
        return super().on_train_batch_outputs(args, state, model=model, inputs=inputs, outputs=outputs)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        super().on_pre_optimizer_step(args, state, control, **kwargs)
        self.history.append((dict(self.last_ratios), dict(self.last_coefficients)))


def train_with_spies(tmp_path, callback, model=None, dataset=DATA["train"], **arg_overrides):
    before, after = GradientSpy(), GradientSpyAfter()
    trainer = MultimodalTrainer(model=model or make_model(), args=make_args(tmp_path, **arg_overrides),
                                train_dataset=dataset, callbacks=[before, callback, after])
    trainer.train()
    return trainer, before, after


@pytest.mark.parametrize("score", ["dot", "cosine"])
def test_the_callback_scales_each_encoder_gradient_by_its_coefficient_and_nothing_else(tmp_path, score):
    callback = OutputsSpy(mode="ada2i", alpha=0.4, score=score, noise=False)
    trainer, before, after = train_with_spies(tmp_path, callback, num_train_epochs=1)
    assert len(callback.history) == len(before.steps) == math.ceil(len(DATA["train"]) / 12)
    for (logits, labels, _), (ratios, coefficients), pre, post in zip(callback.batches, callback.history, before.steps, after.steps):
        expected = hand_scores({k: v.tolist() for k, v in logits.items()}, labels.tolist())
        weakest = min(expected.values())
        assert ratios == pytest.approx({k: s / weakest for k, s in expected.items()}, rel=1e-5)
        assert coefficients == pytest.approx({k: hand_k(s / weakest, 0.4) for k, s in expected.items()}, rel=1e-5)
        for name, gradient in pre.items():
            modality = name.split(".")[1] if name.startswith("encoders.") else None
            factor = coefficients[modality] if modality else 1.0  # fusion and heads are never modulated
            torch.testing.assert_close(post[name], gradient * factor, rtol=1e-6, atol=0)
    assert all(max(c.values()) == 1.0 for _, c in callback.history)  # each step's weakest modality keeps k = 1
    assert any(k < 1 for _, c in callback.history for k in c.values())


def test_cosine_scores_use_eq16_cosines_of_the_classifier_slices(tmp_path):
    model = make_model()
    batch = DATA["train"].with_format("torch")[:8]
    outputs = model(**{name: batch[name] for name in MODALITIES})
    weight, bias = model.fusion.classifier.weight, model.fusion.classifier.bias
    slices = torch.split(weight, [6, 6, 6], dim=1)
    for (name, feature), w in zip(outputs.features.items(), slices):
        cosine = torch.nn.functional.normalize(feature, dim=-1) @ torch.nn.functional.normalize(w, dim=-1).T
        torch.testing.assert_close(outputs.modality_cosine_logits[name], cosine + bias / 3)
    callback = GradientModulationCallback(score="cosine")
    callback.on_train_batch_outputs(None, None, model=model, inputs=batch, outputs=outputs)
    expected = hand_scores({k: v.tolist() for k, v in outputs.modality_cosine_logits.items()}, batch["labels"].tolist())
    assert callback._step_scores.tolist() == pytest.approx(list(expected.values()), rel=1e-5)


def test_parameter_filter_selects_what_is_modulated(tmp_path):
    callback = OutputsSpy(alpha=0.5, noise=False, parameter_filter=r"\.weight$")
    _, before, after = train_with_spies(tmp_path, callback, num_train_epochs=1)
    changed = {name for name in before.steps[0] if not torch.equal(before.steps[0][name], after.steps[0][name])}
    assert changed and all(name.startswith("encoders.") and name.endswith(".weight") for name in changed)
    with pytest.raises(ValueError, match="selects no trainable encoder parameter"):
        train_with_spies(tmp_path, GradientModulationCallback(parameter_filter="no_such_name"), num_train_epochs=1)


def test_the_window_and_monitor_only_leave_gradients_alone_outside(tmp_path):
    callback = OutputsSpy(alpha=0.5, noise=True, start_epoch=1, end_epoch=1)
    trainer, before, after = train_with_spies(tmp_path / "w", callback, num_train_epochs=3)
    steps_per_epoch = math.ceil(len(DATA["train"]) / 12)
    unchanged = [all(torch.equal(pre[n], post[n]) for n in pre) for pre, post in zip(before.steps, after.steps)]
    assert unchanged == [True] * steps_per_epoch + [False] * steps_per_epoch + [True] * steps_per_epoch
    monitor = OutputsSpy(alpha=0.5, monitor_only=True)
    trainer, before, after = train_with_spies(tmp_path / "m", monitor, num_train_epochs=1)
    assert all(torch.equal(pre[n], post[n]) for pre, post in zip(before.steps, after.steps) for n in pre)
    logged = [entry for entry in trainer.state.log_history if "modulation/rho_a" in entry]
    assert len(logged) == steps_per_epoch and {"modulation/k_b", "modulation/rho_c"} <= set(logged[0])


def test_accumulating_four_micro_batches_gives_the_coefficients_of_one_batch_four_times_larger(tmp_path):
    rows = DATA["train"].select(range(80))  # 4 steps of 20 rows = 4 steps of 4 micro-batches of 5 rows
    whole = OutputsSpy(alpha=0.3)
    whole_trainer, _, _ = train_with_spies(tmp_path / "one", whole, dataset=rows, per_device_train_batch_size=20,
                                           num_train_epochs=2)
    split = OutputsSpy(alpha=0.3)
    split_trainer, _, _ = train_with_spies(tmp_path / "acc", split, dataset=rows, per_device_train_batch_size=5,
                                           gradient_accumulation_steps=4, num_train_epochs=2)
    assert len(split.batches) == 4 * len(whole.batches) and len(split.history) == len(whole.history)
    for (ratios_1, k_1), (ratios_4, k_4) in zip(whole.history, split.history):
        assert ratios_4 == pytest.approx(ratios_1, rel=1e-5) and k_4 == pytest.approx(k_1, rel=1e-5)
    for name, value in whole_trainer.model.named_parameters():
        torch.testing.assert_close(dict(split_trainer.model.named_parameters())[name], value, atol=1e-5, rtol=1e-4)


def test_resume_mid_epoch_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    # 84 training rows / 12 = 7 steps per epoch: step 10 is in the middle of epoch 1 (0-based).
    options = dict(mode="ada2i", alpha=0.5, noise=True)
    full = MultimodalTrainer(model=make_model(), args=make_args(tmp_path / "full", num_train_epochs=3),
                             train_dataset=DATA["train"], callbacks=[GradientModulationCallback(**options)])
    full.train()
    args = make_args(tmp_path / "cut", num_train_epochs=3, save_strategy="steps", save_steps=10, max_steps=10)
    MultimodalTrainer(model=make_model(), args=args, train_dataset=DATA["train"],
                      callbacks=[GradientModulationCallback(**options)]).train()
    checkpoint = tmp_path / "cut" / "checkpoint-10"
    assert (checkpoint / "gradient_modulation.json").is_file()
    resumed_callback = GradientModulationCallback(**options)
    resumed = MultimodalTrainer(model=make_model(seed=99), args=make_args(tmp_path / "cut", num_train_epochs=3),
                                train_dataset=DATA["train"], callbacks=[resumed_callback])
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for name, value in full.model.named_parameters():
        torch.testing.assert_close(dict(resumed.model.named_parameters())[name], value, atol=1e-6, rtol=1e-5)
    full_logs = [e["modulation/k_a"] for e in full.state.log_history if "modulation/k_a" in e]
    resumed_logs = [e["modulation/k_a"] for e in resumed.state.log_history if "modulation/k_a" in e]
    assert resumed_logs == pytest.approx(full_logs, rel=1e-5)


def test_bf16_autocast_computes_the_scores_in_float32_and_scales_the_fp32_gradients(tmp_path):
    callback = OutputsSpy(alpha=0.4, noise=False)
    trainer, before, after = train_with_spies(tmp_path, callback, num_train_epochs=1, bf16=True)
    # accelerate casts the outputs back to float32; encoder features that bf16 represents exactly show autocast ran
    assert trainer.accelerator.mixed_precision == "bf16"
    assert all(torch.equal(feature.bfloat16().float(), feature) for feature in callback.features)
    for (logits, labels, _), (ratios, coefficients), pre, post in zip(callback.batches, callback.history, before.steps, after.steps):
        expected = hand_scores({k: v.float().tolist() for k, v in logits.items()}, labels.tolist())
        weakest = min(expected.values())
        assert ratios == pytest.approx({k: s / weakest for k, s in expected.items()}, rel=1e-5)
        encoder_a = [n for n in pre if n.startswith("encoders.a.")]
        assert all(pre[n].dtype == torch.float32 for n in encoder_a)
        for name in encoder_a:
            torch.testing.assert_close(post[name], pre[name] * coefficients["a"], rtol=1e-6, atol=0)


def test_the_ratios_are_logged_and_plotted_like_fig4(tmp_path):
    trainer, _, _ = train_with_spies(tmp_path, GradientModulationCallback(alpha=0.2), num_train_epochs=2, logging_steps=3)
    logged = [e for e in trainer.state.log_history if "modulation/rho_a" in e]
    assert logged and all("loss" in e for e in logged)
    assert min(e[f"modulation/rho_{m}"] for e in logged for m in MODALITIES) >= 1.0
    paths = plot_disparity_ratios(trainer.state.log_history, list(MODALITIES), str(tmp_path / "plots"))
    from PIL import Image

    assert Image.open(paths[0]).size[0] > 300
    assert plot_disparity_ratios([{"loss": 1.0, "epoch": 1}], ["a"], str(tmp_path / "none")) == []


def test_bad_options_and_unsupported_set_ups_get_clear_errors(tmp_path):
    for options, match in [
        (dict(mode="ogm"), "mode='ogm'"), (dict(score="cos"), "score='cos'"), (dict(alpha=-0.1), "alpha"),
        (dict(noise_std_from="middle"), "noise_std_from"), (dict(start_epoch=3, end_epoch=1), "end_epoch"),
        (dict(parameter_filter="("), "parameter_filter"),
    ]:
        with pytest.raises(ValueError, match=match):
            ModulationConfig(**options)
    with pytest.raises(ValueError, match="exactly 2 modalities"):
        train_with_spies(tmp_path / "ogm", GradientModulationCallback(mode="ogm_ge"), num_train_epochs=1)
    plain = Trainer(model=make_model(), args=make_args(tmp_path / "plain", remove_unused_columns=False, label_names=["labels"]),
                    train_dataset=DATA["train"].with_format("torch"), callbacks=[GradientModulationCallback()])
    with pytest.raises(RuntimeError, match="MultimodalTrainer"):
        plain.train()


def test_ogm_ge_mode_modulates_the_stronger_of_two_modalities(tmp_path):
    modalities = {"a": 6, "c": 5}
    data = DATA["train"].select_columns(["a", "c", "labels", "sample_idx"])
    callback = OutputsSpy(mode="ogm_ge", alpha=0.5, noise=False)
    before, after = GradientSpy(), GradientSpyAfter()
    trainer = MultimodalTrainer(model=make_model(modalities=modalities), args=make_args(tmp_path, num_train_epochs=1),
                                train_dataset=data, callbacks=[before, callback, after])
    trainer.train()
    assert callback.config.noise_std_from == "before"
    for ratios, coefficients in callback.history:
        stronger = max(ratios, key=ratios.get)
        assert ratios[stronger] * ratios[min(ratios, key=ratios.get)] == pytest.approx(1.0, rel=1e-5)
        assert coefficients[stronger] == pytest.approx(1 - math.tanh(0.5 * ratios[stronger]))
        assert coefficients[min(ratios, key=ratios.get)] == 1.0


# ----- recipes and CLI -----

RECIPES = __import__("pathlib").Path(__file__).resolve().parents[1] / "recipes" / "mfeat"


def test_recipe_sections_and_flags_configure_the_method():
    from hf_mmbalance.cli.parser import parse_recipe_and_flags
    from hf_mmbalance.cli.train import DataArguments, ModelArguments

    data, model, training, sections = parse_recipe_and_flags(
        (DataArguments, ModelArguments, TrainingArguments),
        ["--config", str(RECIPES / "ogm_ge.yaml"), "--modulation.alpha", "0.3", "--modulation.end_epoch", "5"],
        method_names=("modulation",),
    )
    assert data.views == ["fou", "zer"] and model.fusion == "concat"
    assert sections["modulation"]["mode"] == "ogm_ge" and sections["modulation"]["alpha"] == 0.3
    assert sections["modulation"]["end_epoch"] == 5
    config = ModulationConfig(**sections["modulation"])
    assert config.noise_std_from == "before" and config.in_window(5) and not config.in_window(6)


@pytest.mark.parametrize("recipe, views, fusion", [("ogm_ge.yaml", ["fou", "zer"], "concat"), ("ada2i.yaml", None, "afw")])
def test_the_modulation_recipes_train_and_plot_the_ratios(tmp_path, capsys, recipe, views, fusion):
    from PIL import Image

    from hf_mmbalance.cli.main import main

    flags = ["--num_train_epochs", "1", "--output_dir", str(tmp_path), "--logging_steps", "5", "--eval_strategy", "no"]
    if views is None:
        flags += ["--views", "fou", "zer", "mor"]
    assert main(["train", "--config", str(RECIPES / recipe), *flags]) == 0
    log_history = __import__("json").loads((tmp_path / "log_history.json").read_text())
    assert any("modulation/rho_fou" in entry for entry in log_history)
    assert Image.open(tmp_path / "disparity_ratios.png").size[0] > 300
    card = (tmp_path / "README.md").read_text()
    assert ("ogm-ge" if recipe == "ogm_ge.yaml" else "ada2i") in card
    assert __import__("json").loads((tmp_path / "config.json").read_text())["fusion"] == fusion


def test_unknown_method_options_are_named(tmp_path, capsys):
    from hf_mmbalance.cli.main import main

    code = main(["train", "--config", str(RECIPES / "ogm_ge.yaml"), "--modulation.alpah", "0.3", "--output_dir", str(tmp_path)])
    assert code == 2 and "alpah" in capsys.readouterr().err
    code = main(["train", "--config", str(RECIPES / "ogm_ge.yaml"), "--modulaton.alpha", "0.3", "--output_dir", str(tmp_path)])
    assert code == 2 and "modulaton" in capsys.readouterr().err


# ----- where k is applied: `apply` (pre_optimizer_step | backward_hook | auto) -----

class SyncedSpy(GradientModulationCallback):
    """The modulation callback, recording (k, every gradient after modulation) at each optimizer step."""

    def __init__(self, **options):
        super().__init__(**options)
        self.steps = []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        super().on_pre_optimizer_step(args, state, control, **kwargs)
        grads = {n: p.grad.detach().clone() for n, p in kwargs["model"].named_parameters() if p.grad is not None}
        self.steps.append((self.last_coefficients, grads))


@pytest.mark.parametrize("mode, noise, modalities", [
    ("ada2i", False, MODALITIES), ("ada2i", True, MODALITIES), ("ogm_ge", True, {"a": 6, "b": 4}),
])
def test_the_backward_hook_gives_the_pre_optimizer_step_k_and_gradients_on_one_process(tmp_path, mode, noise, modalities):
    """No accumulation, no clipping: the same k every step and the same gradients (to 1e-6), with unimodal heads, whose
    loss terms also flow into the encoders (the hook on z_m scales that part too) and whose own weights are not scaled;
    ogm_ge takes the noise std from the gradient before scaling, ada2i after."""
    data = DATA["train"] if modalities is MODALITIES else DATA["train"].remove_columns(["c"])
    runs = {}
    for apply in ("pre_optimizer_step", "backward_hook"):
        callback = SyncedSpy(mode=mode, alpha=0.5, noise=noise, apply=apply)
        trainer = MultimodalTrainer(model=make_model(modalities=modalities, unimodal_heads=True),
                                    args=make_args(tmp_path / apply, num_train_epochs=1), train_dataset=data,
                                    callbacks=[callback])
        trainer.train()
        assert callback.applied == apply
        runs[apply] = (callback, trainer)
    pre, hook = runs["pre_optimizer_step"][0].steps, runs["backward_hook"][0].steps
    assert len(pre) == len(hook) == 7 and any(k < 1 for k_step, _ in pre for k in k_step.values())
    assert {n for n in pre[0][1] if n.startswith("unimodal_heads.")}  # the heads are trained, and match too
    for (k_pre, grads_pre), (k_hook, grads_hook) in zip(pre, hook):
        assert k_hook == pytest.approx(k_pre, abs=1e-6)
        for name, gradient in grads_pre.items():
            torch.testing.assert_close(grads_hook[name], gradient, atol=1e-6, rtol=1e-5, msg=name)
    final = dict(runs["backward_hook"][1].model.named_parameters())
    for name, value in runs["pre_optimizer_step"][1].model.named_parameters():
        torch.testing.assert_close(final[name], value, atol=1e-6, rtol=1e-5)


def test_auto_keeps_the_pre_optimizer_step_where_it_is_exact_and_refusals_say_why():
    from hf_mmbalance.methods.modulation import resolve_apply

    for engine in ("single", "ddp", "fsdp"):
        assert resolve_apply("auto", engine, noise=True, parameter_filter="weight") == "pre_optimizer_step"
    for engine in ("deepspeed", "fsdp1"):
        assert resolve_apply("auto", engine, noise=False, parameter_filter=None) == "backward_hook"
        with pytest.raises(ValueError, match="noise=False"):
            resolve_apply("auto", engine, noise=True, parameter_filter=None)
        with pytest.raises(ValueError, match="parameter_filter"):
            resolve_apply("auto", engine, noise=False, parameter_filter="weight")
        assert resolve_apply("pre_optimizer_step", engine, noise=True, parameter_filter=None, monitor_only=True)
    with pytest.raises(ValueError, match="fires AFTER the update"):
        resolve_apply("pre_optimizer_step", "deepspeed", noise=False, parameter_filter=None)
    with pytest.raises(ValueError, match="flat parameters"):
        resolve_apply("pre_optimizer_step", "fsdp1", noise=False, parameter_filter=None)
    with pytest.raises(ValueError, match="apply='pre_optimizer_step'"):
        ModulationConfig(apply="backward_hook", parameter_filter="weight")
    with pytest.raises(ValueError, match="apply='sometimes' is unknown"):
        ModulationConfig(apply="sometimes")


def test_the_hook_with_accumulation_uses_each_micro_batchs_coefficients(tmp_path):
    """Documented difference: per micro-batch k (one all-reduce before each backward), logged per micro-batch."""
    callback = SyncedSpy(alpha=0.5, noise=False, apply="backward_hook")
    MultimodalTrainer(model=make_model(), args=make_args(tmp_path, num_train_epochs=1, per_device_train_batch_size=6,
                                                         gradient_accumulation_steps=2, logging_steps=100),
                      train_dataset=DATA["train"], callbacks=[callback]).train()
    assert len(callback.steps) == 7 and callback._log_count == 14  # 84 rows: 14 micro-batches in 7 steps


# ----- pre_optimizer_step with clipping: k folded into the Trainer's clipping multiply -----

class FoldRecorder(GradientModulationCallback):
    """Records whether the trainer asked for (and got) the factors to fold into its clipping."""

    def __init__(self, **options):
        super().__init__(**options)
        self.folded = 0

    def clipping_factors(self, args, state, model):
        groups = super().clipping_factors(args, state, model)
        self.folded += groups is not None
        return groups


class ScalesAfterClipping(GradientModulationCallback):
    """The same callback without the fold: the Trainer clips, then `on_pre_optimizer_step` scales (and adds noise)."""

    def clipping_factors(self, args, state, model):
        return None


@pytest.mark.parametrize("mode, noise, accumulation", [
    ("ada2i", False, 1), ("ada2i", True, 1), ("ogm_ge", True, 1), ("ada2i", False, 2),
])
def test_k_folded_into_clipping_gives_the_update_of_clipping_then_scaling(tmp_path, mode, noise, accumulation):
    """Ada2I's order is clip, modulate, step: with a binding `max_grad_norm` the fused multiply (c * k_m) must end
    where the Trainer's clipping followed by g <- k_m g ends, noise included (OGM-GE's std before scaling, Ada2I's
    after)."""
    modalities = MODALITIES if mode == "ada2i" else {"a": 6, "b": 4}
    data = DATA["train"] if mode == "ada2i" else DATA["train"].remove_columns(["c"])
    runs = {}
    for name, callback_class in (("fused", FoldRecorder), ("separate", ScalesAfterClipping)):
        callback = callback_class(mode=mode, alpha=0.5, noise=noise)
        trainer = MultimodalTrainer(
            model=make_model(modalities=modalities), train_dataset=data, callbacks=[callback],
            args=make_args(tmp_path / name, num_train_epochs=1, max_grad_norm=0.05,
                           per_device_train_batch_size=12 // accumulation, gradient_accumulation_steps=accumulation))
        trainer.train()
        runs[name] = (callback, trainer)
    fused, trainer = runs["fused"]
    assert fused.folded == 7  # 84 rows, 12 per step: every step went through the fold
    norms = [entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry]
    assert min(norms) > 0.05  # the clipping was binding at every step
    separate_norms = [e["grad_norm"] for e in runs["separate"][1].state.log_history if "grad_norm" in e]
    assert norms == pytest.approx(separate_norms, rel=1e-5)  # the fused clipping logs the Trainer's own norm
    assert any(k < 1 for k in fused.last_coefficients.values())
    reference = dict(runs["separate"][1].model.named_parameters())
    for name, value in trainer.model.named_parameters():
        torch.testing.assert_close(value, reference[name], atol=1e-6, rtol=1e-5, msg=name)
