"""recipes/av_digits: every recipe runs through the CLI on the shared FSDD + MNIST data, and the recipes differ from
vanilla only in their method; the av_digits dataset fields and the `preprocess` option of the train command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from hf_mmbalance.cli.main import main
from hf_mmbalance.cli.train import DataArguments, ModelArguments, parse_train_args, prepare_dataset
from hf_mmbalance.processing import MultimodalDataCollator

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "av_digits"
SHARED = ROOT.parent / "shared" / "data"
HAVE_DATA = (SHARED / "fsdd" / "recordings").is_dir() and (SHARED / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
pytestmark = pytest.mark.skipif(not HAVE_DATA, reason=f"shared data not found under {SHARED}")

TRAIN_RECIPES = sorted(path.stem for path in RECIPES.glob("*.yaml") if path.stem != "bmmal")
#: What each recipe may change relative to vanilla.yaml (besides its output_dir): its method and nothing else.
METHOD_FIELDS = {
    "vanilla": set(),
    "ogm_ge": {"modulation"},
    "ada2i": {"modulation"},
    "ada2i_full": {"modulation", "fusion", "afw_rank", "afw_beta", "amw_scale"},
    "bss_heuristic": {"bss"},
    "bss_learned": {"bss"},
    "bss_ogm_ge": {"bss", "modulation"},
    "unimodal_heads": {"unimodal_heads"},
    # active learning: the loop's section, Eq. 1's heads, the test split per round, and each round's own training
    "bmmal": {"active", "unimodal_heads", "test_split", "per_device_train_batch_size", "eval_strategy",
              "save_strategy", "save_total_limit", "load_best_model_at_end", "metric_for_best_model", "logging_steps",
              "logging_strategy"},
}
# one short epoch: 96 training clips (3 steps), 32 validation and test clips; the recipe's own eval / save per epoch
SHORT_RUN = ["--num_train_epochs", "1", "--max_train_samples", "96", "--max_eval_samples", "32", "--logging_steps", "1"]


def _recipe(name: str) -> dict:
    return yaml.safe_load((RECIPES / f"{name}.yaml").read_text())


def test_every_recipe_is_listed_and_differs_from_vanilla_only_in_its_method():
    assert sorted(METHOD_FIELDS) == sorted(path.stem for path in RECIPES.glob("*.yaml"))
    vanilla = _recipe("vanilla")
    for name, allowed in METHOD_FIELDS.items():
        recipe = _recipe(name)
        assert recipe["output_dir"] == f"outputs/av_digits_{name}"
        changed = {key for key in set(recipe) | set(vanilla) if recipe.get(key) != vanilla.get(key)} - {"output_dir"}
        assert changed <= allowed, (name, changed - allowed)
        assert changed == allowed or name == "bmmal", (name, allowed - changed)


@pytest.mark.parametrize("name", TRAIN_RECIPES)
def test_each_train_recipe_runs_through_the_cli(name, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipes name the data relative to the repository root, as their header says
    output = tmp_path / "run"
    assert main(["train", "--config", str(RECIPES / f"{name}.yaml"), "--output_dir", str(output), *SHORT_RUN]) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and 0.0 <= metrics["eval_accuracy"] <= 1.0
    logs = json.loads((output / "log_history.json").read_text())
    logged = set().union(*(entry.keys() for entry in logs))
    recipe = _recipe(name)
    if "modulation" in recipe:
        assert {"modulation/rho_audio", "modulation/k_image"} <= logged
    if "bss" in recipe:
        assert any(key.startswith("bss/") for key in logged), sorted(logged)
    if recipe.get("unimodal_heads"):
        assert {"test_unimodal_audio_accuracy", "test_unimodal_image_accuracy"} <= set(metrics)
    assert list(output.glob("checkpoint-*"))  # saved per epoch, chosen on the validation speaker


def test_the_bmmal_recipe_runs_two_rounds_through_the_active_command(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    output = tmp_path / "al"
    flags = ["--output_dir", str(output), "--num_train_epochs", "1", "--max_train_samples", "200",
             "--max_eval_samples", "32", "--active.budget_per_round", "20", "--active.total_budget", "40"]
    assert main(["active", "--config", str(RECIPES / "bmmal.yaml"), *flags]) == 0
    state = json.loads((output / "active_learning_state.json").read_text())
    assert state["labels_used"] == 40 and state["pool_size"] == 200
    assert [r["metrics"]["labels_used"] for r in state["rounds"]] == [20, 40]
    assert all(0.0 <= r["metrics"]["eval_accuracy"] <= 1.0 for r in state["rounds"])


def test_preprocessed_splits_give_the_batches_of_processing_in_the_collator(monkeypatch):
    monkeypatch.chdir(ROOT)
    lazy_args = parse_train_args(["--config", str(RECIPES / "vanilla.yaml"), "--preprocess", "false"])
    ahead_args = parse_train_args(["--config", str(RECIPES / "vanilla.yaml")])
    lazy = prepare_dataset(lazy_args[0], lazy_args[1])
    ahead = prepare_dataset(ahead_args[0], ahead_args[1])
    assert ahead_args[0].preprocess and not lazy_args[0].preprocess
    rows = [5, 17, 600, 1999]
    lazy_batch = MultimodalDataCollator(lazy.processor)([lazy.dataset["train"][i] for i in rows])
    ahead_batch = MultimodalDataCollator(ahead.processor)([ahead.dataset["train"][i] for i in rows])
    assert lazy_batch["audio"].shape == (4, 100, 40) and lazy_batch["image"].shape == (4, 1, 28, 28)
    for key in ("audio", "image", "labels", "sample_idx"):
        torch.testing.assert_close(ahead_batch[key], lazy_batch[key])
    assert type(lazy.dataset["train"].features["audio"]).__name__ == "Audio"  # raw clips, processed per batch
    assert type(ahead.dataset["train"].features["audio"]).__name__ != "Audio"  # log-mel features, processed once


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fsdd_dir", ""], "set fsdd_dir"),
        (["--mnist_dir", "/nonexistent/mnist"], "/nonexistent/mnist"),
        (["--fold", "9"], "fold"),
        (["--image_noise", "-1"], "image_noise"),
        (["--max_train_samples", "0"], "max_train_samples must be a whole number >= 1"),
    ],
)
def test_bad_av_digits_fields_get_one_line_and_exit_2(flags, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    argv = ["train", "--config", str(RECIPES / "vanilla.yaml"), "--output_dir", str(tmp_path / "x"), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err, err
    assert not (tmp_path / "x").exists()  # refused before any training


def test_av_digits_needs_both_folders():
    data = DataArguments(dataset_name="av_digits", fsdd_dir=str(SHARED / "fsdd"))
    with pytest.raises(ValueError, match="set mnist_dir"):
        prepare_dataset(data, ModelArguments())


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], None),
        (["--feature_loss_weight", "0.01"], {"fused": 1.0, "feature": 0.01}),
        (["--feature_loss_weight", "0.01", "--modal_loss_weight", "0.5", "--unimodal_heads", "true"],
         {"fused": 1 / 3, "audio": 1 / 3, "image": 1 / 3, "feature": 0.01, "modal": 0.5}),  # Eq. 1's mean kept
        (["--fused_loss_weight", "2", "--unimodal_heads", "true"], {"fused": 2.0, "audio": 1.0, "image": 1.0}),
    ],
)
def test_loss_weight_fields_reach_the_model_config(flags, expected, monkeypatch):
    from hf_mmbalance.cli.train import build_model, recipe_loss_weights

    monkeypatch.chdir(ROOT)
    data_args, model_args, _, _ = parse_train_args(["--config", str(RECIPES / "ada2i_full.yaml"), *flags])
    weights = recipe_loss_weights(model_args, ["audio", "image"])
    if expected is None:
        assert weights is None
        return
    assert weights.keys() == expected.keys()
    assert all(weights[key] == pytest.approx(value) for key, value in expected.items())
    data_args.max_train_samples, data_args.max_eval_samples = 20, 10
    model = build_model(model_args, prepare_dataset(data_args, model_args))
    assert model.config.loss_weights == weights
