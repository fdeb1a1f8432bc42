"""Console entry point `hf-mmbalance`."""

from __future__ import annotations

import sys

from transformers import TrainingArguments

from ..methods import METHOD_REGISTRY
from .active import run_active
from .parser import RecipeError, parse_recipe_and_flags
from .train import DataArguments, ModelArguments, run_train

USAGE = """usage: hf-mmbalance COMMAND --config RECIPE.yaml [--field value ...]

commands:
  active   active learning over the train split as the pool (recipe section `active:` = ActiveLearningConfig:
           strategy random|entropy|badge|bmmal, budget_per_round, total_budget, ...); resumable on --output_dir
  train    train a multimodal model with MultimodalTrainer; writes metrics.json, plots and a model card
           into --output_dir (recipe fields: TrainingArguments, data and model fields; flags override them)

balancing methods: a recipe section `<method>: {option: value}` or flags `--<method>.<option> value`
  modulation   Ada2I / OGM-GE gradient modulation (options: ModulationConfig, e.g. mode, alpha, score)
  bss          BSS balance-aware curriculum sampler (options: BSSConfig, e.g. scheduler, criterion, pacing)
  ulgm         ULGM unimodal label generation for regression (options: ULGMConfig, e.g. variant sugrm|selfmm)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in ("train", "active"):
        print(f"hf-mmbalance: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        if command == "active":
            data_args, model_args, training_args, sections = parse_recipe_and_flags(
                (DataArguments, ModelArguments, TrainingArguments), rest, method_names=("active",)
            )
            run_active(data_args, model_args, training_args, sections.get("active", {}))
            return 0
        data_args, model_args, training_args, method_sections = parse_recipe_and_flags(
            (DataArguments, ModelArguments, TrainingArguments), rest, method_names=tuple(METHOD_REGISTRY)
        )
        run_train(data_args, model_args, training_args, method_sections)
    except RecipeError as error:
        print(f"hf-mmbalance: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
