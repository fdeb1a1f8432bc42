"""`run_active_learning`: the balanced multimodal active-learning loop over a `datasets.Dataset` pool (BMMAL §3).

Round 1 labels `budget_per_round` random pool rows; every round then trains a fresh `MultimodalTrainer` (its own
output dir `round-<r>`) on the labelled rows, evaluates it, and — unless a stop condition holds — scores the
unlabelled rows, acquires the next `budget_per_round`, asks the oracle and persists the round BEFORE the next
training starts (`state.py`). Calling it again on the same `output_dir` resumes: no acquired label is lost and a
round whose training was interrupted is trained again on the same labelled set. Under `accelerate launch` the
pool scoring is split across ranks and gathered, the selection is made on rank 0 and broadcast, and only rank 0
writes the state: every rank trains on the same labelled set.

Before any oracle call or training the pool is checked (modality columns, sizes, NaN / inf; the `labels` column too
when the pool's own labels are the oracle's answers) and, on resume, compared with the saved run: the same rows (by
`sample_idx`, or by content hash; any order), the same model task and the same strategy / budget_per_round / seed /
retrain (`ActiveLearningConfig.allow_config_change` lets chosen options change). Every oracle answer is checked (an
int class id in [0, num_labels), or a finite float for regression) and stored with its row id; each round trains on
the pool's rows with the stored labels attached by id, so the pool may also have no `labels` column at all (then only
a user oracle can label it). Regression pools take `strategy="random"` only (the others score class probabilities).

Progress goes to stderr (`hf_mmbalance.progress`): a bar of the rounds trained with the labels bought so far, and bars
over each pool-scoring pass and each Shapley pass; none with `TrainingArguments.disable_tqdm` or on other ranks.
datasets' own bars ("Flattening the indices", "Casting the dataset") are switched off around the loop's dataset calls.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import TrainingArguments

from ...progress import progress, progress_disabled, quiet_library_progress
from ...trainer import MultimodalTrainer
from ...trainer.distributed import barrier, broadcast_from_main, is_main_process, load_full_state_dict, unsharded
from .config import ActiveLearningConfig
from .pool import LABEL_COLUMN, PoolIdentity, checked_labels, validate_pool
from .selection import random_indices
from .state import STATE_FILE, ActiveLearningState, RoundRecord
from .strategies import pool_outputs, select

Oracle = Callable[[Any, Sequence[int]], Sequence[Any]]
PROBABILITY_STRATEGIES = ("entropy", "badge", "bmmal")


@dataclass
class ActiveLearningResult:
    state: ActiveLearningState
    model: Any  # the last round's trained model (the initial one when no round was trained)


def hidden_label_oracle(pool, indices: Sequence[int]) -> list:
    """Simulation oracle: reveals the pool's own `labels` for the chosen rows."""
    if LABEL_COLUMN not in pool.column_names:
        raise ValueError(
            f"hidden_label_oracle reveals the pool's own {LABEL_COLUMN!r} column, but this pool has none (columns: "
            f"{pool.column_names}); pass run_active_learning(..., oracle=<a function (pool, indices) -> labels>)"
        )
    with quiet_library_progress():
        return list(pool.select(indices).select_columns([LABEL_COLUMN]).with_format(None)[LABEL_COLUMN])


def run_active_learning(
    make_model: Callable[[], Any],
    pool,
    training_args: TrainingArguments,
    config: ActiveLearningConfig,
    *,
    eval_dataset=None,
    oracle: Oracle | None = None,
    make_callbacks: Callable[[], list] | None = None,
    data_collator: Callable | None = None,
) -> ActiveLearningResult:
    """Run (or resume) the loop; `training_args.output_dir` holds the state and one folder per round.

    `make_model()` builds the initial model (called once; with `retrain="reset"` every round starts from a copy of
    its initial weights). `oracle(pool, indices)` returns the labels of the chosen pool rows (default: the pool's
    hidden `labels`; a pool without a `labels` column needs one). `eval_dataset` is evaluated after every round (its
    metrics drive `target_metric`). `data_collator` batches the rows for training and for the pool-scoring pass
    (e.g. a `MultimodalDataCollator` over a pool of raw images / audio / text); None slices fixed-size columns.
    `config.max_rounds=0` trains nothing: the state is written and the initial model returned.
    """
    if len(pool) == 0:
        raise ValueError("the pool is empty: active learning needs unlabelled rows to acquire")
    if config.budget_per_round > len(pool):
        raise ValueError(f"budget_per_round={config.budget_per_round} is larger than the pool ({len(pool)} rows)")
    hidden = oracle is None or oracle is hidden_label_oracle
    if hidden and LABEL_COLUMN not in pool.column_names:
        raise ValueError(
            f"the pool has no {LABEL_COLUMN!r} column (columns: {pool.column_names}), so the default oracle "
            f"(hidden_label_oracle, which reveals the pool's own labels) cannot label it; pass "
            f"run_active_learning(..., oracle=<a function (pool, indices) -> labels>)"
        )
    oracle = oracle or hidden_label_oracle
    output_dir = training_args.output_dir
    model = make_model()
    task = model.config.task
    num_labels = int(model.config.num_labels)
    if task != "classification" and config.strategy in PROBABILITY_STRATEGIES:
        raise ValueError(
            f"ActiveLearningConfig.strategy={config.strategy!r} scores the pool by class probabilities, which a "
            f"{task} model does not have; use strategy='random' for a {task} pool"
        )
    validate_pool(pool, model, data_collator, check_labels=hidden)
    identity = PoolIdentity.of(pool)
    state = ActiveLearningState.load(output_dir)
    if state is None:
        state = ActiveLearningState(config=config.run_settings(), pool_size=len(pool), pool=identity.describe(),
                                    task=task, num_labels=num_labels)
    else:
        changed = state.check_resume(os.path.join(output_dir, STATE_FILE), config.run_settings(), identity, task,
                                     num_labels, config.allow_config_change)
        if changed:
            _save(state, output_dir)
    initial_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}  # before any sharding
    run = _Run(pool, identity, state, oracle, output_dir, task, num_labels)
    if not state.rounds:
        if config.max_rounds == 0:
            _save(state, output_dir)
            return ActiveLearningResult(state=state, model=model)
        first = _random_first_round(identity, config)
        run.acquire(1, first, None, "random")
    in_memory = 0  # the round whose trained weights `model` holds (0: the initial weights)
    show = not progress_disabled(training_args)
    with _RoundProgress(state, config, len(pool), disable=not show) as rounds_bar:
        while True:
            record = state.rounds[-1]
            if record.metrics is None:
                if config.max_rounds is not None and record.round > config.max_rounds:  # acquired, but beyond max_rounds
                    if record.round > 1:
                        _load_round_weights(model, output_dir, record.round - 1)
                    return ActiveLearningResult(state=state, model=model)
                if config.retrain == "reset":
                    load_full_state_dict(model, initial_weights)
                elif in_memory != record.round - 1 and record.round > 1:  # resumed: continue from the saved round
                    _load_round_weights(model, output_dir, record.round - 1)
                rounds_bar.begin(record.round, "training")
                model, record.metrics = _train_round(
                    model, run, record.round, training_args, eval_dataset, make_callbacks, data_collator
                )
                _save(state, output_dir)
                rounds_bar.trained(record.metrics)
            elif in_memory != record.round:  # resumed after this round was trained: score with its saved model
                _load_round_weights(model, output_dir, record.round)
            in_memory = record.round
            if _should_stop(state, config, len(pool)):
                return ActiveLearningResult(state=state, model=model)
            labeled = state.labeled_ids
            unlabeled = [p for p in identity.canonical if identity.ids[p] not in labeled]
            budget = min(config.budget_per_round, len(unlabeled), _remaining_budget(state, config, len(pool)))
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + record.round)
            if config.strategy == "random":  # needs no scores: no pass over the pool
                positions, mean_phi = [int(i) for i in random_indices(len(unlabeled), budget, generator)], None
            else:
                rounds_bar.begin(record.round, f"scoring {len(unlabeled)} unlabelled rows")
                with quiet_library_progress():
                    candidates = pool.select(unlabeled)
                outputs = pool_outputs(model, candidates, config.scoring_batch_size, data_collator, show_progress=show,
                                       desc=f"round {record.round}: scoring the pool")
                rounds_bar.begin(record.round, f"selecting {budget} ({config.strategy})")
                with unsharded(model):  # FSDP: the Shapley pass runs the fusion alone, with its full parameters
                    positions, mean_phi = select(config.strategy, model, outputs, budget, generator, show_progress=show,
                                                 desc=f"round {record.round}: Shapley values") if is_main_process() else (None, None)
            positions, mean_phi = broadcast_from_main((positions, mean_phi))
            rounds_bar.begin(record.round + 1, "asking the oracle")
            run.acquire(record.round + 1, [unlabeled[p] for p in positions], mean_phi, config.strategy)


@dataclass
class _Run:
    pool: Any
    identity: PoolIdentity
    state: ActiveLearningState
    oracle: Oracle
    output_dir: str
    task: str
    num_labels: int

    def acquire(self, round_index: int, positions: list[int], mean_phi, strategy: str) -> None:
        """Ask the oracle (on the main process), check its answers, share them, and persist the round BEFORE any
        training on it. An oracle failure or a bad answer is raised on every rank."""
        payload, failure = None, None
        if is_main_process():
            try:
                answers = self.oracle(self.pool, list(positions))
                payload = (checked_labels(answers, positions, self.identity, self.task, self.num_labels), None)
            except Exception as error:  # re-raised below, once the other ranks know
                failure = error
                payload = (None, f"{type(error).__name__}: {error}")
        labels, message = broadcast_from_main(payload)
        if failure is not None:
            raise failure
        if message is not None:
            raise RuntimeError(f"the oracle failed on the main process: {message}")
        ids = [self.identity.ids[p] for p in positions]
        self.state.rounds.append(RoundRecord(round=round_index, acquired=list(positions), labels=labels,
                                             mean_contributions=mean_phi, ids=ids, strategy=strategy))
        _save(self.state, self.output_dir)  # persisted before any training on them

    def labelled_rows(self):
        """The labelled rows in canonical (id) order, with the stored labels attached by id."""
        labeled = self.state.labeled_ids
        positions = [p for p in self.identity.canonical if self.identity.ids[p] in labeled]
        rows = self.pool.select(positions)
        if LABEL_COLUMN in rows.column_names:
            rows = rows.remove_columns(LABEL_COLUMN)
        rows = rows.add_column(LABEL_COLUMN, [labeled[self.identity.ids[p]] for p in positions])
        return rows.cast_column(LABEL_COLUMN, self._label_feature()), len(positions)

    def _label_feature(self):
        import datasets

        feature = self.pool.features.get(LABEL_COLUMN)
        dtype = getattr(feature, "dtype", None)
        if self.task == "classification":
            if isinstance(feature, datasets.ClassLabel) or (isinstance(feature, datasets.Value) and "int" in str(dtype)):
                return feature
            return datasets.Value("int64")
        if isinstance(feature, datasets.Value) and str(dtype) in ("float32", "float64"):
            return feature
        return datasets.Value("float32")


class _RoundProgress:
    """The loop's bar on stderr: rounds trained out of the rounds planned (`max_rounds`, else the rounds the label
    budget allows), with the labels bought so far and what the loop is doing. Display only: it reads the state."""

    def __init__(self, state: ActiveLearningState, config: ActiveLearningConfig, pool_size: int, disable: bool):
        self.state = state
        self.limit = min(pool_size, config.total_budget) if config.total_budget is not None else pool_size
        planned = -(-self.limit // config.budget_per_round)
        self.planned = max(1, min(planned, config.max_rounds) if config.max_rounds is not None else planned)
        done = min(sum(1 for r in state.rounds if r.metrics is not None), self.planned)
        self.bar = progress(total=self.planned, desc="active learning", disable=disable, unit="round", initial=done,
                            leave=True)

    def __enter__(self) -> _RoundProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def begin(self, round_index: int, doing: str) -> None:
        self.bar.set_description(f"active learning: round {min(round_index, self.planned)}/{self.planned}", refresh=False)
        self.bar.set_postfix_str(f"labels {len(self.state.labeled)}/{self.limit}, {doing}")

    def trained(self, metrics: dict | None) -> None:
        metric = next((k for k in ("eval_accuracy", "eval_mae", "eval_loss") if metrics and k in metrics), None)
        shown = f", {metric.removeprefix('eval_')} {metrics[metric]:.4f}" if metric else ""
        self.bar.set_postfix_str(f"labels {len(self.state.labeled)}/{self.limit}, trained{shown}", refresh=False)
        self.bar.update(1)


def _load_round_weights(model, output_dir: str, round_index: int) -> None:
    from safetensors.torch import load_file

    path = os.path.join(output_dir, f"round-{round_index}", "model.safetensors")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"round {round_index} is marked trained but its model {path} is missing")
    load_full_state_dict(model, load_file(path))


def _random_first_round(identity: PoolIdentity, config: ActiveLearningConfig) -> list[int]:
    """`budget_per_round` random rows, drawn over the canonical (id) order: the same rows for any pool order."""
    generator = torch.Generator().manual_seed(config.seed)
    draw = torch.randperm(len(identity.ids), generator=generator)[: config.budget_per_round].tolist()
    return [identity.canonical[k] for k in draw]


def _train_round(model, run: _Run, round_index, training_args, eval_dataset, make_callbacks, data_collator):
    with quiet_library_progress():  # no "Flattening the indices" / "Casting the dataset" bars
        rows, count = run.labelled_rows()
    args = _round_args(training_args, round_index)
    trainer = MultimodalTrainer(model=model, args=args, train_dataset=rows, eval_dataset=eval_dataset,
                                callbacks=make_callbacks() if make_callbacks else None, data_collator=data_collator)
    trainer.train()
    metrics = {k: float(v) for k, v in trainer.evaluate().items()} if eval_dataset is not None else {}
    metrics["labels_used"] = float(count)
    description = f"active learning round {round_index} ({count} labels)"
    with quiet_library_progress(transformers=progress_disabled(args)):  # "Writing model shards", uploads
        if args.push_to_hub:  # saves, writes the card and uploads the round's folder (one commit per round)
            trainer.push_to_hub(commit_message=description, dataset=description)
        else:
            trainer.save_model(args.output_dir)
            trainer.create_model_card(dataset=description)
    return trainer.model, metrics


def _round_args(training_args: TrainingArguments, round_index: int) -> TrainingArguments:
    values = training_args.to_dict()
    values["output_dir"] = os.path.join(training_args.output_dir, f"round-{round_index}")
    return TrainingArguments(**{k: v for k, v in values.items() if k in TrainingArguments.__dataclass_fields__ and
                                TrainingArguments.__dataclass_fields__[k].init})


def _should_stop(state, config, pool_size) -> bool:
    used = len(state.labeled)
    if used >= pool_size or (config.total_budget is not None and used >= config.total_budget):
        return True
    if config.max_rounds is not None and len(state.rounds) >= config.max_rounds:
        return True
    metrics = state.rounds[-1].metrics or {}
    return config.target_metric is not None and metrics.get(config.target_metric, float("-inf")) >= config.target_value


def _remaining_budget(state, config, pool_size) -> int:
    limit = pool_size if config.total_budget is None else config.total_budget
    return limit - len(state.labeled)


def _save(state, output_dir) -> None:
    if is_main_process():
        state.save(output_dir)
    barrier()  # no rank trains before the round is on disk


__all__ = ["run_active_learning", "ActiveLearningResult", "hidden_label_oracle"]
