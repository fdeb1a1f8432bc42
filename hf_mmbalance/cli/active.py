"""`hf-mmbalance active`: a (resumable) active-learning run over a dataset's train split as the pool."""

from __future__ import annotations

import os

from transformers import TrainingArguments, set_seed

from ..methods.active import ActiveLearningConfig, ActiveLearningState, plot_contributions, plot_learning_curves, run_active_learning
from .parser import RecipeError
from .train import DataArguments, ModelArguments, build_model, prepare_dataset


def run_active(data_args: DataArguments, model_args: ModelArguments, training_args: TrainingArguments,
               options: dict) -> ActiveLearningState:
    try:
        config = ActiveLearningConfig(**options)
    except (TypeError, ValueError) as error:
        raise RecipeError(f"active: {error}") from None
    set_seed(training_args.seed)
    data = prepare_dataset(data_args, model_args)
    dataset = data.dataset
    if data.task != "classification":
        raise RecipeError("active learning (BMMAL and its baselines) needs a classification dataset")

    def make_model():
        set_seed(training_args.seed)
        return build_model(model_args, data)

    evaluation = dataset[data_args.test_split] if data_args.test_split in dataset else dataset.get("validation")
    try:
        collator = None
        if data.processor is not None:
            from ..processing import MultimodalDataCollator

            collator = MultimodalDataCollator(data.processor)
        result = run_active_learning(
            make_model, dataset["train"], training_args, config, eval_dataset=evaluation, data_collator=collator
        )
    except ValueError as error:
        raise RecipeError(str(error)) from None
    write_report(result.state, config.strategy, training_args.output_dir)
    return result.state


def write_report(state: ActiveLearningState, strategy: str, output_dir: str) -> None:
    plots = [plot_learning_curves({strategy: state}, output_dir)]
    contributions = plot_contributions(state, output_dir)
    if contributions:
        plots.append(contributions)
    names = next((list(r.mean_contributions) for r in state.rounds if r.mean_contributions), [])
    print(f"\n{'round':>5} {'labels':>7} {'fused acc':>10}" + "".join(f" {'acc ' + n:>10}" for n in names)
          + "".join(f" {'Phi ' + n:>8}" for n in names))
    for record in state.rounds:
        metrics = record.metrics or {}
        phi = record.mean_contributions or {}
        row = f"{record.round:>5} {int(metrics.get('labels_used', 0)):>7} {metrics.get('eval_accuracy', float('nan')):>10.4f}"
        row += "".join(f" {metrics.get(f'eval_unimodal_{n}_accuracy', float('nan')):>10.4f}" for n in names)
        row += "".join(f" {phi.get(n, float('nan')):>8.3f}" for n in names)
        print(row)
    print(f"\nwrote: {os.path.join(output_dir, 'active_learning_state.json')}, round-*/ (model + card), plots {plots}")
