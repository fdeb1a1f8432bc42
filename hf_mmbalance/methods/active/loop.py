"""`run_active_learning`: the balanced multimodal active-learning loop over a `datasets.Dataset` pool (BMMAL §3).

Round 1 labels `budget_per_round` random pool rows; every round then trains a fresh `MultimodalTrainer` (its own
output dir `round-<r>`) on the labelled rows, evaluates it, and — unless a stop condition holds — scores the
unlabelled rows, acquires the next `budget_per_round`, asks the oracle and persists the round BEFORE the next
training starts (`state.py`). Calling it again on the same `output_dir` resumes: no acquired label is lost and a
round whose training was interrupted is trained again on the same labelled set. Under `accelerate launch` the
pool scoring is split across ranks and gathered, the selection is made on rank 0 and broadcast, and only rank 0
writes the state: every rank trains on the same labelled set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import TrainingArguments

from ...trainer import MultimodalTrainer
from ...trainer.distributed import barrier, broadcast_from_main, is_main_process
from .config import ActiveLearningConfig
from .state import ActiveLearningState, RoundRecord
from .strategies import pool_outputs, select

Oracle = Callable[[Any, Sequence[int]], Sequence[int]]


@dataclass
class ActiveLearningResult:
    state: ActiveLearningState
    model: Any  # the last round's trained model


def hidden_label_oracle(pool, indices: Sequence[int]) -> list[int]:
    """Simulation oracle: reveals the pool's own `labels` for the chosen rows."""
    return [int(y) for y in pool.select(indices)["labels"]]


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
    hidden `labels`). `eval_dataset` is evaluated after every round (its metrics drive `target_metric`).
    `data_collator` batches the rows for training and for the pool-scoring pass (e.g. a `MultimodalDataCollator`
    over a pool of raw images / audio / text); None slices fixed-size columns.
    """
    if len(pool) == 0:
        raise ValueError("the pool is empty: active learning needs unlabelled rows to acquire")
    if config.budget_per_round > len(pool):
        raise ValueError(f"budget_per_round={config.budget_per_round} is larger than the pool ({len(pool)} rows)")
    oracle = oracle or hidden_label_oracle
    output_dir = training_args.output_dir
    state = ActiveLearningState.load(output_dir) or ActiveLearningState(config=config.to_dict(), pool_size=len(pool))
    if state.pool_size != len(pool):
        raise ValueError(f"{output_dir} holds a run over a pool of {state.pool_size} rows, this pool has {len(pool)}")
    model = make_model()
    initial_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if not state.rounds:
        first = _random_first_round(len(pool), config)
        _acquire(state, 1, first, pool, oracle, output_dir, None)
    in_memory = 0  # the round whose trained weights `model` holds (0: the initial weights)
    while True:
        record = state.rounds[-1]
        if record.metrics is None:
            if config.retrain == "reset":
                model.load_state_dict(initial_weights)
            elif in_memory != record.round - 1 and record.round > 1:  # resumed: continue from the saved round
                _load_round_weights(model, output_dir, record.round - 1)
            model, record.metrics = _train_round(
                model, pool, state, record.round, training_args, eval_dataset, make_callbacks, data_collator
            )
            _save(state, output_dir)
        elif in_memory != record.round:  # resumed after this round was trained: score with its saved model
            _load_round_weights(model, output_dir, record.round)
        in_memory = record.round
        if _should_stop(state, config, len(pool)):
            return ActiveLearningResult(state=state, model=model)
        labeled = state.labeled
        unlabeled = [i for i in range(len(pool)) if i not in labeled]
        budget = min(config.budget_per_round, len(unlabeled), _remaining_budget(state, config, len(pool)))
        outputs = pool_outputs(model, pool.select(unlabeled), config.scoring_batch_size, data_collator)
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + record.round)
        positions, mean_phi = select(config.strategy, model, outputs, budget, generator) if is_main_process() else (None, None)
        positions, mean_phi = broadcast_from_main((positions, mean_phi))
        _acquire(state, record.round + 1, [unlabeled[p] for p in positions], pool, oracle, output_dir, mean_phi)


def _load_round_weights(model, output_dir: str, round_index: int) -> None:
    from safetensors.torch import load_file

    path = os.path.join(output_dir, f"round-{round_index}", "model.safetensors")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"round {round_index} is marked trained but its model {path} is missing")
    model.load_state_dict(load_file(path))


def _random_first_round(pool_size: int, config: ActiveLearningConfig) -> list[int]:
    generator = torch.Generator().manual_seed(config.seed)
    return torch.randperm(pool_size, generator=generator)[: config.budget_per_round].tolist()


def _acquire(state, round_index, indices, pool, oracle, output_dir, mean_phi) -> None:
    labels = [int(y) for y in oracle(pool, indices)] if is_main_process() else None
    labels = broadcast_from_main(labels)
    if len(labels) != len(indices):
        raise ValueError(f"the oracle returned {len(labels)} labels for {len(indices)} rows")
    state.rounds.append(RoundRecord(round=round_index, acquired=list(indices), labels=labels, mean_contributions=mean_phi))
    _save(state, output_dir)  # persisted before any training on them


def _train_round(model, pool, state, round_index, training_args, eval_dataset, make_callbacks, data_collator):
    labeled = state.labeled
    indices = sorted(labeled)
    rows = pool.select(indices)
    rows = rows.remove_columns("labels").add_column("labels", [labeled[i] for i in indices])
    rows = rows.cast_column("labels", pool.features["labels"])
    args = _round_args(training_args, round_index)
    trainer = MultimodalTrainer(model=model, args=args, train_dataset=rows, eval_dataset=eval_dataset,
                                callbacks=make_callbacks() if make_callbacks else None, data_collator=data_collator)
    trainer.train()
    metrics = {k: float(v) for k, v in trainer.evaluate().items()} if eval_dataset is not None else {}
    metrics["labels_used"] = float(len(indices))
    description = f"active learning round {round_index} ({len(indices)} labels)"
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
