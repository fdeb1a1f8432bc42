"""`hf-mmbalance active`: a (resumable) active-learning run over a dataset's train split as the pool."""

from __future__ import annotations

import os

from transformers import TrainingArguments, set_seed

from ..methods import METHOD_REGISTRY
from ..methods.active import ActiveLearningConfig, ActiveLearningState, plot_contributions, plot_learning_curves, run_active_learning
from .parser import RecipeError, parse_recipe_and_flags
from .train import (
    DataArguments,
    ModelArguments,
    TrainingStarted,
    build_callbacks,
    build_model,
    check_eval_split,
    check_methods_fit_task,
    describe_run,
    prepare_dataset,
)


def parse_active_args(argv: list[str]):
    """`hf-mmbalance active` flags -> (DataArguments, ModelArguments, TrainingArguments, sections), the sections
    being `active` (ActiveLearningConfig) and the balancing methods'."""
    options = {"active": ActiveLearningConfig, **{name: entry.config_class for name, entry in METHOD_REGISTRY.items()}}
    return parse_recipe_and_flags(
        (DataArguments, ModelArguments, TrainingArguments), argv, method_names=tuple(options), method_options=options
    )


def run_active(data_args: DataArguments, model_args: ModelArguments, training_args: TrainingArguments,
               options: dict, method_sections: dict[str, dict] | None = None, *,
               sources: dict[str, str] | None = None) -> ActiveLearningState:
    """The active-learning loop of the recipe; `method_sections` ({method: options}) add balancing callbacks to
    every round's training, a fresh set per round."""
    try:
        config = ActiveLearningConfig(**options)
    except (TypeError, ValueError) as error:
        raise RecipeError(f"active: {error}") from None
    method_sections = dict(method_sections or {})
    checked = build_callbacks(method_sections)  # options checked once, before any data is loaded
    set_seed(training_args.seed)
    data = prepare_dataset(data_args, model_args, sources)
    dataset = data.dataset
    if data.task != "classification" and config.strategy != "random":
        raise RecipeError(
            f"active.strategy={config.strategy!r} scores the pool by class probabilities, and this dataset's task is "
            f"{data.task} ({data.task_reason}: {data.task}); use --active.strategy random for a {data.task} pool, or "
            "store class ids as integers or a ClassLabel"
        )
    check_methods_fit_task(checked, data)

    def make_model():
        set_seed(training_args.seed)
        return build_model(model_args, data)

    def make_callbacks():
        return [*build_callbacks(method_sections).values(), TrainingStarted()]

    evaluation = dataset[data_args.test_split] if data_args.test_split in dataset else dataset.get("validation")
    check_eval_split(training_args, dataset, data_args, evaluation is not None)
    if training_args.process_index == 0:
        methods = f"; methods {', '.join(method_sections)} in every round" if method_sections else ""
        print(describe_run("active", data, training_args) + f"; strategy {config.strategy}{methods}", flush=True)
    collator = None
    if data.processor is not None:
        from ..processing import MultimodalDataCollator

        collator = MultimodalDataCollator(data.processor)
    result = run_active_learning(
        make_model, dataset["train"], training_args, config, eval_dataset=evaluation, data_collator=collator,
        make_callbacks=make_callbacks,
    )
    if training_args.process_index == 0:
        write_report(result.state, config.strategy, training_args.output_dir)
    if training_args.world_size > 1:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return result.state


def write_report(state: ActiveLearningState, strategy: str, output_dir: str) -> None:
    plots = [plot_learning_curves({strategy: state}, output_dir)]
    contributions = plot_contributions(state, output_dir)
    if contributions:
        plots.append(contributions)
    names = phi_names = next((list(r.mean_contributions) for r in state.rounds if r.mean_contributions), [])
    metric = "accuracy" if any("eval_accuracy" in (r.metrics or {}) for r in state.rounds) else "mae"  # regression: MAE
    if not names:
        names = sorted({key[len("eval_unimodal_"):-len(f"_{metric}")] for r in state.rounds for key in (r.metrics or {})
                        if key.startswith("eval_unimodal_") and key.endswith(f"_{metric}")})
    label = "acc" if metric == "accuracy" else metric
    print(f"\n{'round':>5} {'labels':>7} {'fused ' + label:>10}" + "".join(f" {label + ' ' + n:>10}" for n in names)
          + "".join(f" {'Phi ' + n:>8}" for n in phi_names))
    for record in state.rounds:
        metrics = record.metrics or {}
        phi = record.mean_contributions or {}
        row = f"{record.round:>5} {int(metrics.get('labels_used', 0)):>7} {metrics.get(f'eval_{metric}', float('nan')):>10.4f}"
        row += "".join(f" {metrics.get(f'eval_unimodal_{n}_{metric}', float('nan')):>10.4f}" for n in names)
        row += "".join(f" {phi.get(n, float('nan')):>8.3f}" for n in phi_names)
        print(row)
    print(f"\nwrote: {os.path.join(output_dir, 'active_learning_state.json')}, round-*/ (model + card), plots {plots}")
