"""The active-learning loop: rounds, strategies, the oracle, and never losing a label when a run is killed."""

import json

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from hf_mmbalance import MMBalanceConfig, MMBalanceForClassification, make_synthetic_classification
from hf_mmbalance.methods.active.config import ActiveLearningConfig
from hf_mmbalance.methods.active.loop import run_active_learning
from hf_mmbalance.methods.active.state import STATE_FILE, ActiveLearningState

DATA = make_synthetic_classification(
    num_samples=150, num_classes=3, modalities={"a": 6, "b": 4}, signal_strength={"a": 1.5, "b": 0.5}, seed=2
)
POOL = DATA["train"]


def make_model():
    torch.manual_seed(0)
    settings = {"a": {"input_size": 6, "feature_size": 6}, "b": {"input_size": 4, "feature_size": 6}}
    return MMBalanceForClassification(MMBalanceConfig(modalities=settings, num_labels=3))


def make_args(tmp_path):
    return TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=2, learning_rate=0.1,
                             optim="sgd", save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, seed=0,
                             logging_strategy="no")


def run(tmp_path, strategy="bmmal", **options):
    config = ActiveLearningConfig(strategy=strategy, budget_per_round=10, max_rounds=3, seed=1)
    return run_active_learning(make_model, POOL, make_args(tmp_path), config, eval_dataset=DATA["validation"], **options)


@pytest.mark.parametrize("strategy", ["random", "entropy", "badge", "bmmal"])
def test_each_strategy_acquires_new_rows_every_round_and_persists_them(tmp_path, strategy):
    result = run(tmp_path, strategy)
    rounds = result.state.rounds
    assert [r.round for r in rounds] == [1, 2, 3] and all(r.metrics for r in rounds)
    acquired = [i for r in rounds for i in r.acquired]
    assert len(acquired) == len(set(acquired)) == 30
    assert all(y == POOL[i]["labels"] for r in rounds for i, y in zip(r.acquired, r.labels))
    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert saved["labels_used"] == 30 and saved["rounds"][-1]["metrics"]["labels_used"] == 30
    assert (tmp_path / "round-3" / "model.safetensors").is_file() and (tmp_path / "round-3" / "README.md").is_file()
    if strategy == "bmmal":
        phi = rounds[1].mean_contributions
        assert set(phi) == {"a", "b"} and sum(phi.values()) == pytest.approx(1.0)


def test_a_user_oracle_labels_the_rows(tmp_path):
    asked = []

    def oracle(pool, indices):
        asked.append(list(indices))
        return [0] * len(indices)

    result = run(tmp_path, "random", oracle=oracle)
    assert [r.acquired for r in result.state.rounds] == asked
    assert set(result.state.labeled.values()) == {0}


def test_a_run_killed_between_rounds_resumes_with_every_label(tmp_path):
    reference = run(tmp_path / "ref", "badge").state

    class Killed(RuntimeError):
        pass

    calls = []

    def dying_oracle(pool, indices):
        calls.append(indices)
        if len(calls) == 3:
            raise Killed("the labelling service went away")
        return [int(y) for y in pool.select(indices)["labels"]]

    with pytest.raises(Killed):
        run(tmp_path / "cut", "badge", oracle=dying_oracle)
    kept = ActiveLearningState.load(str(tmp_path / "cut"))
    assert [r.round for r in kept.rounds] == [1, 2] and all(r.metrics for r in kept.rounds)
    resumed = run(tmp_path / "cut", "badge").state
    assert [r.acquired for r in resumed.rounds] == [r.acquired for r in reference.rounds]
    assert resumed.labeled == reference.labeled


def test_a_run_killed_during_training_retrains_that_round_on_the_same_labels(tmp_path):
    reference = run(tmp_path / "ref", "entropy").state

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if "round-2" in args.output_dir and state.global_step == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", "entropy", make_callbacks=lambda: [Crash()])
    kept = ActiveLearningState.load(str(tmp_path / "cut"))
    assert [r.round for r in kept.rounds] == [1, 2] and kept.rounds[1].metrics is None  # acquired, not yet trained
    resumed = run(tmp_path / "cut", "entropy").state
    assert [r.acquired for r in resumed.rounds] == [r.acquired for r in reference.rounds]
    assert resumed.rounds[-1].metrics["eval_accuracy"] == pytest.approx(reference.rounds[-1].metrics["eval_accuracy"])


def test_bad_pools_and_budgets_are_named(tmp_path):
    with pytest.raises(ValueError, match="pool is empty"):
        run_active_learning(make_model, POOL.select([]), make_args(tmp_path), ActiveLearningConfig())
    with pytest.raises(ValueError, match="budget_per_round=500 is larger than the pool \\(105 rows\\)"):
        run_active_learning(make_model, POOL, make_args(tmp_path), ActiveLearningConfig(budget_per_round=500))
    with pytest.raises(ValueError, match="strategy='coreset"):
        ActiveLearningConfig(strategy="coreset")


def test_continue_mode_trains_each_round_from_the_previous_one_also_after_a_resume(tmp_path):
    config = ActiveLearningConfig(strategy="entropy", budget_per_round=10, max_rounds=2, retrain="continue", seed=1)
    first = run_active_learning(make_model, POOL, make_args(tmp_path), config, eval_dataset=DATA["validation"])
    from safetensors.torch import load_file

    round1 = load_file(tmp_path / "round-1" / "model.safetensors")
    fresh = make_model().state_dict()
    assert any(not torch.equal(round1[k], fresh[k]) for k in round1)
    # one more round on resume: round 3 must start from round 2's saved weights, not from the initial ones
    config = ActiveLearningConfig(strategy="entropy", budget_per_round=10, max_rounds=3, retrain="continue", seed=1)
    resumed = run_active_learning(make_model, POOL, make_args(tmp_path), config, eval_dataset=DATA["validation"])
    assert [r.round for r in resumed.state.rounds] == [1, 2, 3]
    assert [r.acquired for r in resumed.state.rounds[:2]] == [r.acquired for r in first.state.rounds]


def test_the_active_command_runs_the_recipe_and_writes_its_report(tmp_path, capsys):
    from pathlib import Path

    from PIL import Image

    from hf_mmbalance.cli.main import main

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "mfeat" / "bmmal.yaml"
    flags = ["--active.total_budget", "40", "--num_train_epochs", "2", "--views", "fou", "zer", "--output_dir", str(tmp_path)]
    assert main(["active", "--config", str(recipe), *flags]) == 0
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["labels_used"] == 40 and len(state["rounds"]) == 2
    assert Image.open(tmp_path / "learning_curves.png").size[0] > 300 and (tmp_path / "contributions.png").is_file()
    assert "Phi fou" in capsys.readouterr().out
    assert main(["active", "--config", str(recipe), "--active.strategy", "coreset", "--output_dir", str(tmp_path / "x")]) == 2


def test_a_target_metric_stops_the_loop(tmp_path):
    config = ActiveLearningConfig(strategy="random", budget_per_round=10, target_metric="eval_accuracy", target_value=0.0)
    result = run_active_learning(make_model, POOL, make_args(tmp_path), config, eval_dataset=DATA["validation"])
    assert len(result.state.rounds) == 1 and result.state.rounds[0].metrics["eval_accuracy"] >= 0.0


def test_every_round_is_pushed_to_the_hub_with_its_card(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hub_server import LocalHubServer

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "mfeat" / "bmmal.yaml"
    with LocalHubServer(tmp_path / "store") as hub:
        command = [sys.executable, "-m", "hf_mmbalance.cli.main", "active", "--config", str(recipe), "--output_dir",
                   str(tmp_path / "run"), "--active.total_budget", "40", "--num_train_epochs", "1", "--views", "fou", "zer",
                   "--push_to_hub", "true", "--hub_model_id", "user/al-demo"]
        result = subprocess.run(command, env=hub.client_env(tmp_path / "hf_home"), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]
        stored = hub.files("user/al-demo")
        assert {"config.json", "model.safetensors", "README.md"} <= set(stored), stored
        last_round = tmp_path / "run" / "round-2" / "model.safetensors"
        assert hub.read("user/al-demo", "model.safetensors") == last_round.read_bytes()
        assert "active learning round 2 (40 labels)" in hub.read("user/al-demo", "README.md").decode()
