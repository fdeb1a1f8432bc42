"""Progress of the long passes (active-learning rounds, pool scoring, Shapley values, BSS rescoring) on stderr, silent
with `disable_tqdm`; datasets' own bars silenced; and what the plots draw (read back from the matplotlib figures)."""

import math

import datasets
import pytest
import torch
from transformers import TrainingArguments

from hf_mmbalance import MMBalanceConfig, MMBalanceForClassification, MMBalanceForRegression, MultimodalTrainer
from hf_mmbalance import make_synthetic_classification
from hf_mmbalance.data import make_synthetic_regression
from hf_mmbalance.methods.active import ActiveLearningState, RoundRecord
from hf_mmbalance.methods.active.config import ActiveLearningConfig
from hf_mmbalance.methods.active.diagnostics import contributions_figure, find_states, learning_curves_figure, plot_learning_curves
from hf_mmbalance.methods.active.loop import run_active_learning
from hf_mmbalance.methods.bss import BSSCallback
from hf_mmbalance.methods.bss.diagnostics import bss_curriculum_figure, curriculum_epoch_of_step
from hf_mmbalance.methods.modulation.diagnostics import disparity_ratios_figure
from hf_mmbalance.methods.ulgm import ULGMCallback
from hf_mmbalance.methods.ulgm.diagnostics import label_trajectories_figure
from hf_mmbalance.plotting import (
    best_epoch,
    imbalance_summary_figure,
    plot_imbalance_summary,
    plot_training_curves,
    plt,
    training_curves_figures,
)
from hf_mmbalance.progress import progress, quiet_library_progress

DATA = make_synthetic_classification(
    num_samples=150, num_classes=3, modalities={"a": 6, "b": 4}, signal_strength={"a": 1.5, "b": 0.5}, seed=2
)
POOL = DATA["train"]
OUR_BARS = ("active learning", "scoring the pool", "Shapley values", "BSS: scoring")
LIBRARY_BARS = ("Flattening the indices", "Casting the dataset", "Map", "Writing model shards")


def make_model():
    torch.manual_seed(0)
    settings = {"a": {"input_size": 6, "feature_size": 6}, "b": {"input_size": 4, "feature_size": 6}}
    return MMBalanceForClassification(MMBalanceConfig(modalities=settings, num_labels=3))


def make_args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=1, learning_rate=0.1,
                  optim="sgd", save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, seed=0,
                  logging_strategy="no")
    values.update(overrides)
    return TrainingArguments(**values)


def integer_valued(values):
    return len(values) > 0 and all(float(v).is_integer() for v in values)


def line(axis, label):
    return next(line for line in axis.get_lines() if line.get_label() == label)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# ----- progress -----
@pytest.mark.parametrize("disable_tqdm", [False, True])
def test_active_learning_shows_rounds_labels_pool_scoring_and_shapley_on_stderr_unless_disabled(tmp_path, capsys,
                                                                                                  disable_tqdm):
    config = ActiveLearningConfig(strategy="bmmal", budget_per_round=10, max_rounds=2, seed=1)
    run_active_learning(make_model, POOL, make_args(tmp_path, disable_tqdm=disable_tqdm), config,
                        eval_dataset=DATA["validation"])
    err = capsys.readouterr().err
    for bar in LIBRARY_BARS[:3]:  # datasets' internal bars never show
        assert bar not in err
    if disable_tqdm:
        assert err.strip() == "", err[:500]  # nothing at all: no bar of ours, the Trainer's or the libraries'
        return
    assert "active learning: round 1/2" in err and "active learning: round 2/2" in err
    assert "labels 10/105" in err and "labels 20/105" in err  # labels bought so far, of the pool
    assert "round 1: scoring the pool" in err and "round 1: Shapley values" in err
    assert "2/2" in err  # the rounds bar completes


@pytest.mark.parametrize("disable_tqdm", [False, True])
def test_a_bss_rescoring_pass_shows_progress_on_stderr_unless_disabled(tmp_path, capsys, disable_tqdm):
    callback = BSSCallback(scheduler="learned")
    trainer = MultimodalTrainer(model=make_model(), args=make_args(tmp_path, num_train_epochs=2, per_device_train_batch_size=16,
                                                                   disable_tqdm=disable_tqdm),
                                train_dataset=POOL, callbacks=[callback])
    trainer.train()
    err = capsys.readouterr().err
    assert sorted(callback.score_history) == [1, 2]
    if disable_tqdm:
        assert not any(bar in err for bar in OUR_BARS) and "%|" not in err
    else:
        for epoch in (1, 2):
            assert f"BSS: scoring {len(POOL)} samples for epoch {epoch}" in err


def test_progress_helper_writes_to_stderr_and_is_silent_when_disabled(capsys):
    assert list(progress(range(3), desc="counting", disable=False)) == [0, 1, 2]
    captured = capsys.readouterr()
    assert "counting" in captured.err and "3/3" in captured.err and captured.out == ""
    assert list(progress(range(3), desc="silent", disable=True)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_datasets_bars_are_silenced_inside_and_restored_after(capsys):
    rows = datasets.Dataset.from_dict({"x": list(range(20))})
    assert datasets.is_progress_bar_enabled()
    with quiet_library_progress():
        assert not datasets.is_progress_bar_enabled()
        rows.map(lambda row: {"y": row["x"]})
        rows.select([3, 1]).add_column("z", [0, 1]).cast_column("z", datasets.Value("int32"))
    assert "Map" not in capsys.readouterr().err and datasets.is_progress_bar_enabled()
    with pytest.raises(RuntimeError), quiet_library_progress():
        raise RuntimeError("boom")
    assert datasets.is_progress_bar_enabled()  # restored after an error too
    datasets.disable_progress_bars()
    try:
        with quiet_library_progress():
            pass
        assert not datasets.is_progress_bar_enabled()  # a caller's own setting is kept
    finally:
        datasets.enable_progress_bars()
    rows.map(lambda row: {"y": row["x"]})
    assert "Map" in capsys.readouterr().err  # outside the context the library behaves as before


def test_transformers_bars_are_silenced_and_restored():
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
    with quiet_library_progress(transformers=True):
        assert not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
    assert hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()


# ----- training curves -----
def synthetic_log(metric="accuracy", values=(0.5, 0.8, 0.7)):
    """A classification / regression run's log: per-step losses, one evaluation per epoch, the end-of-training
    summary and a post-training evaluation (which must not be plotted)."""
    log = []
    for step in range(1, 13):
        log.append({"loss": 1.0 / step, "loss_fused": 1.0 / step, "loss_a": 1.2 / step, "loss_b": 1.5 / step,
                    "epoch": step / 4, "step": step})
        if step % 4 == 0:
            epoch = step // 4
            log.append({f"eval_{metric}": values[epoch - 1], f"eval_unimodal_a_{metric}": values[epoch - 1] - 0.1,
                        f"eval_unimodal_b_{metric}": 0.3, "eval_loss": 1.0, "epoch": float(epoch), "step": step})
    log.append({"train_runtime": 1.0, "train_loss": 0.3, "epoch": 3.0, "step": 12})
    log.append({f"eval_{metric}": 0.99 if metric == "accuracy" else 0.01, "eval_loss": 0.1, "epoch": 3.0, "step": 12})
    return log


def test_eval_curves_use_integer_epochs_and_mark_the_best_one(tmp_path):
    figures = training_curves_figures(synthetic_log(), ["a", "b"])
    axis = figures["eval_curves.png"].axes[0]
    fused = line(axis, "fused")
    assert list(fused.get_xdata()) == [1.0, 2.0, 3.0]  # the post-training evaluation is left out
    assert list(fused.get_ydata()) == [0.5, 0.8, 0.7]
    assert integer_valued(axis.get_xticks()) and axis.get_xlabel() == "epoch"
    marker = next(line for line in axis.get_lines() if line.get_gid() == "best_epoch_marker")
    assert list(marker.get_xdata()) == [2.0] and list(marker.get_ydata()) == [0.8]  # max accuracy
    assert "best: epoch 2" in marker.get_label()
    assert [line.get_xdata()[0] for line in axis.get_lines() if line.get_gid() == "best_epoch"] == [2.0]
    loss_axis = figures["loss_curves.png"].axes[0]
    assert line(loss_axis, "fused").get_xdata()[-1] == 3.0 and integer_valued(loss_axis.get_xticks())
    assert len(loss_axis.child_axes) == 1  # the optimizer step on the top axis
    paths = plot_training_curves(synthetic_log(), ["a", "b"], str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["loss_curves.png", "eval_curves.png"]


def test_regression_picks_the_lowest_mae():
    log = synthetic_log("mae", values=(0.9, 0.4, 0.6))
    assert best_epoch(log) == {"epoch": 2.0, "step": 8, "metric": "eval_mae", "value": 0.4}
    axis = training_curves_figures(log, ["a", "b"])["eval_curves.png"].axes[0]
    assert axis.get_ylabel() == "eval MAE"
    marker = next(line for line in axis.get_lines() if line.get_gid() == "best_epoch_marker")
    assert list(marker.get_xdata()) == [2.0]


def bss_run(tmp_path, **options):
    callback = BSSCallback(scheduler="heuristic", pacing="linear", lambda0=0.3, t_grow=3)
    data = make_synthetic_classification(num_samples=120, num_classes=3, modalities={"a": 6, "b": 4},
                                         signal_strength={"a": 1.5, "b": 0.4}, seed=0)
    args = make_args(tmp_path, num_train_epochs=3, per_device_train_batch_size=10, eval_strategy="epoch",
                     logging_strategy="steps", logging_steps=2, **options)
    trainer = MultimodalTrainer(model=make_model(), args=args, train_dataset=data["train"],
                                eval_dataset=data["validation"], callbacks=[callback])
    trainer.train()
    trainer.evaluate()  # as the CLI does after training
    return trainer, callback


def test_bss_curves_share_the_curriculum_epoch_axis(tmp_path):
    trainer, callback = bss_run(tmp_path)
    log = trainer.state.log_history
    sizes = callback.sampler.epoch_sizes
    assert sizes[0] < sizes[1] < sizes[2]  # epochs of different lengths, laid out in one Trainer pass
    evaluations = [e for e in log if "eval_accuracy" in e]
    assert [round(e["epoch"], 2) for e in evaluations[:3]] != [1.0, 2.0, 3.0]  # the Trainer's epoch: a fraction of the pass
    epoch_of_step = curriculum_epoch_of_step(callback)
    assert [epoch_of_step(e["step"]) for e in evaluations[:3]] == [1.0, 2.0, 3.0]
    ends = [sum(sizes[: i + 1]) for i in range(3)]
    assert epoch_of_step(2) == pytest.approx(2 * 10 / sizes[0])  # inside epoch 1
    assert epoch_of_step(math.ceil(ends[0] / 10) + 1) == pytest.approx(1 + (math.ceil(ends[0] / 10) * 10 + 10 - ends[0]) / sizes[1])

    paths = callback.plot_diagnostics(log, str(tmp_path / "plots"))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["bss_curriculum.png", "loss_curves.png", "eval_curves.png"]
    figures = training_curves_figures(log, ["a", "b"], epoch_of_step=epoch_of_step, epoch_label="curriculum epoch")
    axis = figures["eval_curves.png"].axes[0]
    assert list(line(axis, "fused").get_xdata()) == [1.0, 2.0, 3.0] and integer_valued(axis.get_xticks())
    best = best_epoch(log, epoch_of_step)
    marker = next(line for line in axis.get_lines() if line.get_gid() == "best_epoch_marker")
    assert list(marker.get_xdata()) == [best["epoch"]] and best["epoch"] in (1.0, 2.0, 3.0)
    assert best["value"] == max(e["eval_accuracy"] for e in evaluations[:3])
    loss_x = line(figures["loss_curves.png"].axes[0], "fused").get_xdata()
    assert 0 < min(loss_x) and max(loss_x) <= 3.0 and all(b > a for a, b in zip(loss_x, loss_x[1:]))
    pacing_axis = bss_curriculum_figure(callback).axes[0]
    assert list(pacing_axis.get_lines()[0].get_xdata()) == [1, 2, 3] and integer_valued(pacing_axis.get_xticks())


# ----- active learning -----
def fake_state(strategy, accuracies, budget=10, phi=False):
    rounds = [RoundRecord(round=r, acquired=[r], labels=[0], ids=[r], strategy=strategy,
                          metrics={"eval_accuracy": acc, "labels_used": float(budget * r)},
                          mean_contributions={"a": 0.6, "b": 0.4} if phi and r > 1 else None)
              for r, acc in enumerate(accuracies, start=1)]
    return ActiveLearningState(config={"strategy": strategy}, pool_size=100, rounds=rounds)


def test_learning_curves_show_every_strategy_of_a_folder_with_integer_round_ticks(tmp_path):
    fake_state("random", [0.4, 0.5, 0.55]).save(str(tmp_path / "random"))
    fake_state("bmmal", [0.4, 0.6, 0.7, 0.75], phi=True).save(str(tmp_path / "bmmal"))
    (tmp_path / "bmmal" / "round-1").mkdir()  # round folders are not searched
    assert list(find_states(tmp_path)) == ["bmmal", "random"]
    figure = learning_curves_figure(str(tmp_path))
    axis = figure.axes[0]
    assert list(line(axis, "random").get_xdata()) == [10, 20, 30]
    assert list(line(axis, "bmmal").get_ydata()) == [0.4, 0.6, 0.7, 0.75]
    assert integer_valued(axis.get_xticks())
    (top,) = axis.child_axes
    assert list(top.get_xticks()) == [1, 2, 3, 4] and top.get_xlabel() == "round"
    assert plot_learning_curves(str(tmp_path)) == str(tmp_path / "learning_curves.png")
    assert list(find_states(tmp_path / "bmmal")) == ["bmmal"]  # a run folder alone: named by its strategy
    contributions = contributions_figure(ActiveLearningState.load(str(tmp_path / "bmmal"))).axes[0]
    assert list(contributions.get_lines()[0].get_xdata()) == [2, 3, 4] and integer_valued(contributions.get_xticks())
    with pytest.raises(FileNotFoundError, match="active_learning_state.json"):
        learning_curves_figure(str(tmp_path / "empty"))


# ----- ULGM -----
def test_ulgm_trajectories_are_drawn_with_the_true_unimodal_labels(tmp_path):
    modalities = {"text": 8, "audio": 6}
    data = make_synthetic_regression(num_samples=60, modalities=modalities, noise={"text": 0.3, "audio": 1.5}, seed=0)
    torch.manual_seed(0)
    model = MMBalanceForRegression(MMBalanceConfig(modalities=modalities, task="regression", common_space_size=4, fusion="mrm"))
    callback = ULGMCallback(variant="selfmm", track_samples=2)
    args = make_args(tmp_path, num_train_epochs=3, per_device_train_batch_size=12, optim="adamw_torch", learning_rate=0.01)
    MultimodalTrainer(model=model, args=args, train_dataset=data["train"], callbacks=[callback]).train()
    figure = label_trajectories_figure(callback)
    assert len(figure.axes) == 2
    train = data["train"].with_format(None)
    row_of = {int(i): k for k, i in enumerate(train["sample_idx"])}
    for axis, (sample_id, points) in zip(figure.axes, callback.trajectories.items()):
        row = row_of[int(sample_id)]
        for index, name in enumerate(("text", "audio")):
            generated = next(line for line in axis.get_lines() if line.get_gid() == f"generated_{name}")
            assert list(generated.get_xdata()) == [1, 2, 3]
            assert list(generated.get_ydata()) == pytest.approx([p[index] for p in points])
            truth = next(line for line in axis.get_lines() if line.get_gid() == f"true_{name}")
            assert truth.get_ydata()[0] == pytest.approx(train[f"true_{name}"][row], abs=1e-6)
        assert integer_valued(axis.get_xticks())
    callback.true_labels = {}  # data without true_<m> columns: no such lines
    assert not any(line.get_gid() == "true_text" for line in label_trajectories_figure(callback).axes[0].get_lines())


# ----- imbalance summary (any run, vanilla included) -----
def test_imbalance_summary_draws_each_head_against_the_fused_model(tmp_path):
    metrics = {"eval_accuracy": 0.9, "eval_unimodal_a_accuracy": 0.85, "eval_unimodal_b_accuracy": 0.4,
               "test_accuracy": 0.88, "test_unimodal_a_accuracy": 0.8, "test_unimodal_b_accuracy": 0.35,
               "eval_loss": 0.3, "train_loss": 0.2, "epoch": 3.0}
    axis = imbalance_summary_figure(metrics, ["a", "b"]).axes[0]
    heights = {split: [round(p.get_height(), 6) for p in axis.patches if p.get_gid() == f"imbalance_{split}"]
               for split in ("eval", "test")}
    assert heights == {"eval": [0.9, 0.85, 0.4], "test": [0.88, 0.8, 0.35]}
    assert [t.get_text() for t in axis.get_xticklabels()] == ["fused model", "a head", "b head"]
    assert "weakest b" in axis.get_title()
    regression = imbalance_summary_figure({"eval_mae": 0.5, "eval_unimodal_x_mae": 0.9, "eval_unimodal_y_mae": 1.4}, None)
    reg_axis = regression.axes[0]
    assert [round(p.get_height(), 6) for p in reg_axis.patches] == [0.5, 0.9, 1.4] and "MAE" in reg_axis.get_ylabel()
    assert plot_imbalance_summary(metrics, ["a", "b"], str(tmp_path)) == str(tmp_path / "imbalance_summary.png")
    assert plot_imbalance_summary({"train_loss": 0.1}, ["a"], str(tmp_path / "none")) is None


def test_disparity_ratios_have_integer_epoch_ticks():
    log = [{"modulation/rho_a": 1.0 + e, "modulation/k_a": 0.5, "modulation/rho_b": 1.0, "modulation/k_b": 1.0,
            "epoch": e / 2, "step": e} for e in range(1, 9)]
    axes = disparity_ratios_figure(log, ["a", "b"]).axes
    assert list(axes[0].get_lines()[0].get_xdata()) == [e / 2 for e in range(1, 9)]
    assert integer_valued(axes[1].get_xticks())
