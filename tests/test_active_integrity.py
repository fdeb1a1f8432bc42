"""Active learning keeps every bought label on its row: resume by row id (any pool order), refuse a changed pool,
option or state file by name, check the pool and every oracle answer before anything trains, and run on pools
without labels, regression pools and `max_rounds=0`."""

import json

import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from hf_mmbalance import MMBalanceConfig, MMBalanceForClassification, make_synthetic_classification
from hf_mmbalance.data import DatasetValidationError, make_synthetic_regression
from hf_mmbalance.methods.active.config import ActiveLearningConfig
from hf_mmbalance.methods.active.loop import hidden_label_oracle, run_active_learning
from hf_mmbalance.methods.active.state import STATE_FILE, ActiveLearningState
from hf_mmbalance.modeling import MMBalanceForRegression
from hf_mmbalance.trainer.checkpoint_state import CheckpointStateError

DATA = make_synthetic_classification(num_samples=40, num_classes=3, modalities={"a": 4, "b": 3}, seed=5)
POOL = DATA["train"]  # 28 rows, sample_idx shuffled (not 0..N-1)
TRUE = dict(zip(POOL["sample_idx"], POOL["labels"]))  # sample_idx -> true label


def make_model():
    torch.manual_seed(0)
    settings = {"a": {"input_size": 4, "feature_size": 4}, "b": {"input_size": 3, "feature_size": 4}}
    return MMBalanceForClassification(MMBalanceConfig(modalities=settings, num_labels=3))


def make_args(path):
    return TrainingArguments(output_dir=str(path), per_device_train_batch_size=4, num_train_epochs=1, learning_rate=0.1,
                             optim="sgd", save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, seed=0,
                             logging_strategy="no")


def config(**options):
    values = {"strategy": "badge", "budget_per_round": 4, "max_rounds": 3, "seed": 1}
    return ActiveLearningConfig(**{**values, **options})


def run(path, pool=POOL, model=make_model, eval_dataset=DATA["validation"], **options):
    kwargs = {k: options.pop(k) for k in ("oracle", "make_callbacks", "data_collator") if k in options}
    return run_active_learning(model, pool, make_args(path), config(**options), eval_dataset=eval_dataset, **kwargs)


class Asked:
    """An oracle that records every call and answers from `answer(pool, indices)` (default: the true labels)."""

    def __init__(self, answer=None):
        self.calls = []
        self.answer = answer or (lambda pool, indices: [TRUE[i] for i in pool.select(indices)["sample_idx"]])

    def __call__(self, pool, indices):
        self.calls.append(list(indices))
        return self.answer(pool, indices)


class Killed(RuntimeError):
    pass


def dying_at(call_number):
    def answer(pool, indices, count=[0]):
        count[0] += 1
        if count[0] == call_number:
            raise Killed("the labelling service went away")
        return hidden_label_oracle(pool, indices)

    return answer


# ----- 3. resume by row id; a changed pool / option / state file is refused by name -----


@pytest.mark.parametrize("ids", ["sample_idx", "row_hash"])
def test_a_resume_on_the_reordered_pool_attaches_every_label_to_its_own_row(tmp_path, ids):
    pool = POOL if ids == "sample_idx" else POOL.remove_columns("sample_idx")
    reference = run(tmp_path / "ref", pool).state
    with pytest.raises(Killed):
        run(tmp_path / "cut", pool, oracle=dying_at(3))  # rounds 1-2 acquired and trained, round 3's oracle dies
    shuffled = pool.shuffle(seed=7)
    assert shuffled["a"] != pool["a"]
    resumed = run(tmp_path / "cut", shuffled).state
    assert [r.round for r in resumed.rounds] == [1, 2, 3]
    # every stored label is its row's true label IN THE SHUFFLED POOL, and the rows are the uninterrupted run's
    labels, a_values = shuffled["labels"], shuffled["a"]
    assert [labels[p] for r in resumed.rounds for p in r.acquired] == [y for r in resumed.rounds for y in r.labels]
    for record, ref in zip(resumed.rounds, reference.rounds):
        assert [a_values[p] for p in record.acquired] == [pool["a"][p] for p in ref.acquired]
        assert record.labels == ref.labels
    assert [r.ids for r in resumed.rounds] == [r.ids for r in reference.rounds]
    # round 3 trained on the same labelled rows in the same order: the same model as the uninterrupted run
    assert resumed.rounds[-1].metrics["eval_loss"] == pytest.approx(reference.rounds[-1].metrics["eval_loss"], rel=1e-5)
    saved = json.loads((tmp_path / "cut" / STATE_FILE).read_text())
    assert saved["format_version"] == 2 and saved["pool"]["id_kind"] == ids
    assert [r["ids"] for r in saved["rounds"]] == [r.ids for r in reference.rounds]


def test_a_changed_pool_is_refused_naming_the_file_and_what_changed(tmp_path):
    run(tmp_path, max_rounds=1)
    path = str(tmp_path / STATE_FILE)
    before = (tmp_path / STATE_FILE).read_bytes()
    oracle = Asked()
    other_rows = POOL.select(range(1, len(POOL)))
    with pytest.raises(CheckpointStateError, match=r"pool size: saved 28 rows, now 27") as error:
        run(tmp_path, other_rows, max_rounds=2, oracle=oracle)
    assert path in str(error.value)
    renumbered = POOL.map(lambda row: {"sample_idx": row["sample_idx"] + 1000})
    with pytest.raises(CheckpointStateError, match=r"pool rows: the sample_idx values differ .*4 of the 4 acquired rows"):
        run(tmp_path, renumbered, max_rounds=2, oracle=oracle)
    extra = POOL.add_column("c", [0.0] * len(POOL))
    with pytest.raises(CheckpointStateError, match=r"pool columns: .*added \['c'\], removed \[\]"):
        run(tmp_path, extra, max_rounds=2, oracle=oracle)
    assert oracle.calls == [] and not (tmp_path / "round-2").exists()
    assert (tmp_path / STATE_FILE).read_bytes() == before


def test_a_row_hash_pool_with_changed_values_is_refused(tmp_path):
    pool = POOL.remove_columns("sample_idx")
    run(tmp_path, pool, max_rounds=1)
    changed = pool.map(lambda row, i: {"b": [v + (1.0 if i == 3 else 0.0) for v in row["b"]]}, with_indices=True)
    with pytest.raises(CheckpointStateError, match=r"pool rows: the row contents .* differ"):
        run(tmp_path, changed, max_rounds=2)


def test_changed_options_are_refused_unless_allowed_and_the_change_is_recorded(tmp_path):
    run(tmp_path, max_rounds=1)  # badge, budget 4, seed 1
    path = str(tmp_path / STATE_FILE)
    oracle = Asked()
    for options, message in [
        ({"strategy": "bmmal"}, "strategy: saved 'badge', now 'bmmal'"),
        ({"budget_per_round": 5}, "budget_per_round: saved 4, now 5"),
        ({"seed": 2}, "seed: saved 1, now 2"),
        ({"strategy": "random", "retrain": "continue"}, "strategy: saved 'badge', now 'random'; retrain: saved 'reset', now 'continue'"),
    ]:
        with pytest.raises(CheckpointStateError, match=message) as error:
            run(tmp_path, max_rounds=2, oracle=oracle, **options)
        assert path in str(error.value) and "allow_config_change" in str(error.value)
    # allowing one option does not allow the others
    with pytest.raises(CheckpointStateError, match=r"seed: saved 1, now 2") as error:
        run(tmp_path, max_rounds=2, oracle=oracle, strategy="entropy", seed=2, allow_config_change=("strategy",))
    assert "strategy" not in str(error.value).split("(")[1].split(")")[0]
    assert oracle.calls == [] and not (tmp_path / "round-2").exists()

    state = run(tmp_path, max_rounds=2, oracle=oracle, strategy="entropy", allow_config_change="strategy").state
    assert [r.strategy for r in state.rounds] == ["random", "entropy"] and len(oracle.calls) == 1
    assert state.config_changes == [{"after_round": 1, "changes": {"strategy": ["badge", "entropy"]}}]
    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert saved["config"]["strategy"] == "entropy" and saved["config_changes"] == state.config_changes
    # the new strategy is now the saved one: resuming without the permission works
    assert run(tmp_path, max_rounds=2, strategy="entropy").state.config_changes == state.config_changes
    with pytest.raises(ValueError, match=r"allow_config_change=\['max_rounds'\]"):
        ActiveLearningConfig(allow_config_change=["max_rounds"])


def test_a_missing_corrupt_or_old_state_file_is_refused_by_name(tmp_path):
    oracle = Asked()
    (tmp_path / "round-1").mkdir()
    with pytest.raises(CheckpointStateError, match=r"holds round folders \(round-1\) but no active_learning_state\.json"):
        run(tmp_path, oracle=oracle)
    state_file = tmp_path / STATE_FILE
    state_file.write_text('{"config": {"strategy": "ba')
    with pytest.raises(CheckpointStateError, match="cannot read .*active_learning_state.json: JSONDecodeError") as error:
        run(tmp_path, oracle=oracle)
    assert "would buy them again" in str(error.value) and "MultimodalTrainer" not in str(error.value)
    state_file.write_text(json.dumps({"config": {}, "pool_size": 28, "rounds": [{"round": 1, "acquired": [0], "labels": [1, 2]}]}))
    with pytest.raises(CheckpointStateError, match="damaged: round entry 1 has acquired / ids / labels of different lengths"):
        run(tmp_path, oracle=oracle)
    old = {"config": config().run_settings(), "pool_size": 28, "labels_used": 2,
           "rounds": [{"round": 1, "acquired": [3, 5], "labels": [0, 2], "metrics": {"labels_used": 2.0},
                       "mean_contributions": None}]}
    state_file.write_text(json.dumps(old))
    with pytest.raises(CheckpointStateError, match="older version of hf_mmbalance that stored rows by position only"):
        run(tmp_path, oracle=oracle)
    assert oracle.calls == [] and state_file.read_text() == json.dumps(old)
    loaded = ActiveLearningState.load(str(tmp_path))  # still readable for reports and plots
    assert loaded.format_version == 1 and loaded.labeled == {3: 0, 5: 2}


# ----- 4. the pool and the oracle's answers are checked up front; unlabelled, regression, max_rounds=0 -----


@pytest.mark.parametrize("answer, shown", [(1.7, "1.7"), ("cat", "'cat'"), (3, "3"), (-1, "-1"), (True, "True")])
def test_a_bad_oracle_answer_is_refused_naming_the_row_and_the_value(tmp_path, answer, shown):
    def oracle(pool, indices):
        return [answer] + [TRUE[i] for i in pool.select(indices[1:])["sample_idx"]]

    first_row = None

    def recording(pool, indices):
        nonlocal first_row
        first_row = indices[0]
        return oracle(pool, indices)

    with pytest.raises(ValueError) as error:
        run(tmp_path, oracle=recording)
    sample_idx = POOL[first_row]["sample_idx"]
    assert str(error.value) == (f"the oracle's answer for pool row {first_row} (sample_idx {sample_idx}) is {shown}: "
                                f"a class id must be an int in [0, 3)")
    assert not (tmp_path / "round-1").exists() and not (tmp_path / STATE_FILE).exists()  # nothing stored or trained


def test_oracle_answers_of_numpy_and_torch_scalars_are_stored_as_ints(tmp_path):
    oracle = Asked(lambda pool, indices: np.array([TRUE[i] for i in pool.select(indices)["sample_idx"]]))
    state = run(tmp_path, oracle=oracle, max_rounds=1, strategy="random").state
    assert all(type(y) is int for y in state.rounds[0].labels)
    assert state.rounds[0].labels == [TRUE[i] for i in state.rounds[0].ids]
    with pytest.raises(ValueError, match="the oracle returned 3 labels for 4 rows"):
        run(tmp_path / "short", oracle=lambda pool, indices: torch.tensor([0, 1, 2]), max_rounds=1)


def test_a_nan_or_missing_modality_is_refused_before_the_oracle_is_asked(tmp_path):
    oracle = Asked()
    broken = POOL.map(lambda row, i: {"b": [float("nan")] * 3 if i == 9 else row["b"]}, with_indices=True)
    with pytest.raises(DatasetValidationError, match=r"active learning pool: modality column 'b': contains NaN or inf "
                                                      r"\(3 values\), first at row 9"):
        run(tmp_path, broken, oracle=oracle)
    with pytest.raises(DatasetValidationError, match=r"active learning pool: missing modality column 'a'"):
        run(tmp_path, POOL.remove_columns("a"), oracle=oracle)
    bad_labels = POOL.cast_column("labels", POOL.features["sample_idx"]).map(lambda row, i: {"labels": 7 if i == 2 else row["labels"]},
                                                                            with_indices=True)
    with pytest.raises(DatasetValidationError, match=r"label column 'labels': labels must lie in \[0, 3\).*first bad at row 2"):
        run(tmp_path, bad_labels)  # the default oracle would hand out the pool's own labels: they are checked
    duplicated = POOL.map(lambda row, i: {"sample_idx": 5 if i in (4, 11) else row["sample_idx"] + 100}, with_indices=True)
    with pytest.raises(DatasetValidationError, match=r"'sample_idx' must be unique .* 5 is at rows 4 and 11"):
        run(tmp_path, duplicated, oracle=oracle)
    assert oracle.calls == [] and not list(tmp_path.iterdir())


def test_an_unlabelled_pool_is_labelled_by_the_user_oracle_only(tmp_path):
    pool = POOL.remove_columns(["labels", "sample_idx"])  # no labels, no ids: rows are named by content hash
    truth = {tuple(a): y for a, y in zip(POOL["a"], POOL["labels"])}
    oracle = Asked(lambda pool, indices: [truth[tuple(a)] for a in pool.select(indices)["a"]])
    with pytest.raises(ValueError, match=r"the pool has no 'labels' column .* pass run_active_learning\(\.\.\., oracle="):
        run(tmp_path, pool)
    with pytest.raises(ValueError, match=r"hidden_label_oracle reveals the pool's own 'labels' column, but this pool has none"):
        hidden_label_oracle(pool, [0])
    state = run(tmp_path, pool, oracle=oracle, max_rounds=2).state
    assert [len(r.labels) for r in state.rounds] == [4, 4] and all(r.metrics for r in state.rounds)
    assert [truth[tuple(pool[p]["a"])] for p in state.labeled] == list(state.labeled.values())
    assert state.rounds[-1].metrics["labels_used"] == 8
    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert saved["pool"]["id_kind"] == "row_hash" and "labels" not in saved["pool"]["columns"]


def regression_data():
    return make_synthetic_regression(num_samples=40, modalities={"a": 4, "b": 3}, seed=0)


def make_regressor():
    torch.manual_seed(0)
    return MMBalanceForRegression(MMBalanceConfig(modalities={"a": 4, "b": 3}, task="regression"))


def test_a_regression_pool_keeps_float_targets_and_takes_the_random_strategy_only(tmp_path):
    data = regression_data()
    pool = data["train"]
    true = dict(zip(pool["sample_idx"], pool["labels"]))
    for strategy in ("entropy", "badge", "bmmal"):
        with pytest.raises(ValueError, match=rf"strategy='{strategy}' scores the pool by class probabilities.*strategy='random'"):
            run(tmp_path / strategy, pool, make_regressor, eval_dataset=data["validation"], strategy=strategy)
    state = run(tmp_path / "random", pool, make_regressor, eval_dataset=data["validation"], strategy="random", max_rounds=2).state
    labels = [y for r in state.rounds for y in r.labels]
    assert [y for r in state.rounds for y in r.labels] == [true[i] for r in state.rounds for i in r.ids]
    assert all(isinstance(y, float) for y in labels) and any(y != int(y) for y in labels)
    assert "eval_loss" in state.rounds[-1].metrics and state.rounds[-1].metrics["labels_used"] == 8
    for bad, shown in [(float("nan"), "nan"), ("2.5", "'2.5'"), (float("inf"), "inf")]:
        with pytest.raises(ValueError, match=rf"is {shown}: a regression target must be a finite number"):
            run(tmp_path / "bad", pool, make_regressor, eval_dataset=None, strategy="random",
                oracle=lambda pool, indices: [bad] * len(indices))


def test_max_rounds_zero_trains_nothing_and_negative_is_refused(tmp_path):
    oracle = Asked()
    result = run(tmp_path, oracle=oracle, max_rounds=0)
    assert oracle.calls == [] and result.state.rounds == [] and not (tmp_path / "round-1").exists()
    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert saved["rounds"] == [] and saved["labels_used"] == 0
    fresh = make_model().state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in result.model.state_dict().items())
    state = run(tmp_path, oracle=oracle, max_rounds=1).state  # the empty state resumes
    assert len(oracle.calls) == 1 and [r.round for r in state.rounds] == [1] and state.rounds[0].metrics
    with pytest.raises(ValueError, match=r"ActiveLearningConfig.max_rounds must be None or an int >= 0, got -1"):
        ActiveLearningConfig(max_rounds=-1)


def test_variable_length_rows_go_through_the_data_collator_and_are_checked_and_hashed(tmp_path):
    import datasets

    from hf_mmbalance.processing import MultimodalDataCollator

    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 7, 24)
    seq = [rng.standard_normal((n, 3)).astype(np.float32).tolist() for n in lengths]
    pool = datasets.Dataset.from_dict({"seq": seq, "vec": rng.standard_normal((24, 4)).astype(np.float32).tolist(),
                                       "labels": (np.arange(24) % 3).tolist()})  # no sample_idx: content hashes

    def make_sequence_model():
        torch.manual_seed(0)
        settings = {"seq": {"input_size": 3, "encoder": "transformer", "feature_size": 8}, "vec": 4}
        return MMBalanceForClassification(MMBalanceConfig(modalities=settings, num_labels=3))

    collator = MultimodalDataCollator(sequence_modalities=["seq"])
    broken = pool.map(lambda row, i: {"seq": [[float("inf")] * 3] + row["seq"][1:] if i == 5 else row["seq"]}, with_indices=True)
    with pytest.raises(DatasetValidationError, match=r"modality column 'seq': contains NaN or inf .*first at row 5"):
        run(tmp_path / "broken", broken, make_sequence_model, eval_dataset=None, data_collator=collator)
    state = run(tmp_path, pool, make_sequence_model, eval_dataset=None, data_collator=collator, strategy="bmmal",
                max_rounds=2).state
    assert [len(r.ids) for r in state.rounds] == [4, 4] and len({i for r in state.rounds for i in r.ids}) == 8
    assert [pool[p]["labels"] for p in state.labeled] == list(state.labeled.values())
    assert set(state.rounds[1].mean_contributions) == {"seq", "vec"} and state.rounds[1].metrics["labels_used"] == 8
    reordered = pool.select(list(range(23, -1, -1)))
    resumed = run(tmp_path, reordered, make_sequence_model, eval_dataset=None, data_collator=collator, strategy="bmmal",
                  max_rounds=2).state  # nothing left to do, but the ids map onto the reversed rows
    assert [23 - p for r in resumed.rounds for p in r.acquired] == [p for r in state.rounds for p in r.acquired]
