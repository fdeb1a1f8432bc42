"""Console entry point `hf-mmbalance` (also `python -m hf_mmbalance` and `accelerate launch -m hf_mmbalance`).

Nothing beyond the standard library is imported before the command is known: `hf-mmbalance --help` prints the
command list at once, and each command imports what it needs.
"""

from __future__ import annotations

import sys

COMMANDS = ("train", "active", "diagnose")

USAGE = """usage: hf-mmbalance COMMAND --config RECIPE.yaml [--field value ...] [--<method>.<option> value ...]

commands:
  train    train a multimodal model with MultimodalTrainer; writes metrics.json, plots and a model card
           into --output_dir (recipe fields: TrainingArguments, data and model fields; flags override them)
  active   active learning over the train split as the pool (recipe section `active:` = ActiveLearningConfig:
           strategy random|entropy|badge|bmmal, budget_per_round, total_budget, ...); resumable on --output_dir
  diagnose is my model imbalanced? each modality alone vs the joint model: probe gaps, Shapley shares, disparity
           ratios, a verdict (--budget quick|full: full also ranks the methods); diagnosis.json/.md/.png; resumable

balancing methods: a recipe section `<method>: {option: value}` or flags `--<method>.<option> value`
  modulation   Ada2I / OGM-GE gradient modulation (ModulationConfig: mode, alpha, score, ...); classification
  bss          BSS balance-aware curriculum sampler (BSSConfig: scheduler, criterion, pacing, ...)
  ulgm         ULGM unimodal label generation (ULGMConfig: variant sugrm|selfmm, ...); regression

help:
  hf-mmbalance train --help              the command's own options: --config, data, model, methods
  hf-mmbalance train --help modulation   one method's options (also bss, ulgm; `active --help active`)
  hf-mmbalance train --help-training     every TrainingArguments field

examples:
  hf-mmbalance train --config recipes/mfeat/vanilla.yaml --num_train_epochs 5 --output_dir outputs/run
  hf-mmbalance train --config recipes/mfeat/ogm_ge.yaml --modulation.alpha 0.2
  hf-mmbalance active --config recipes/mfeat/bmmal.yaml --active.strategy badge --output_dir outputs/al

several processes / GPUs (accelerate runs one process per device; on a CPU-only machine add --multi_gpu
--num_machines 1 --mixed_precision no --dynamo_backend no and the flag --use_cpu true):
  accelerate launch --num_processes 2 -m hf_mmbalance train --config recipes/mfeat/vanilla.yaml
  torchrun --nproc_per_node 2 -m hf_mmbalance train --config recipes/mfeat/vanilla.yaml
"""

HELP_FLAGS = ("-h", "--help")


def _help_request(command: str, rest: list[str]) -> str | None:
    """The help text `rest` asks for (`--help`, `--help SECTION`, `--help-training`), or None."""
    if "--help-training" in rest:
        from .help import training_help

        return training_help(command)
    for position, flag in enumerate(rest):
        if flag in HELP_FLAGS or flag.startswith("--help="):
            from .help import command_help, section_help, training_help

            section = flag.partition("=")[2] if "=" in flag else None
            if section is None and position + 1 < len(rest) and not rest[position + 1].startswith("-"):
                section = rest[position + 1]
            if section is None:
                return command_help(command)
            if section == "training":
                return training_help(command)
            return section_help(command, section)
    return None


def _run(command: str, rest: list[str]) -> None:
    from .parser import field_sources

    if command == "train":
        from .train import parse_train_args, run_train

        data_args, model_args, training_args, method_sections = parse_train_args(rest)
        run_train(data_args, model_args, training_args, method_sections, sources=field_sources(rest))
    elif command == "diagnose":
        from .diagnose import parse_diagnose_args, run_diagnose

        data_args, model_args, training_args, config, sections = parse_diagnose_args(rest)
        run_diagnose(data_args, model_args, training_args, config, sections, sources=field_sources(rest), argv=rest)
    else:
        from .active import parse_active_args, run_active

        data_args, model_args, training_args, sections = parse_active_args(rest)
        options = sections.pop("active", {})
        run_active(data_args, model_args, training_args, options, method_sections=sections,
                   sources=field_sources(rest))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in (*HELP_FLAGS, "help"):
        if len(argv) > 1 and argv[0] == "help" and argv[1] in COMMANDS:  # `hf-mmbalance help train`
            argv = [argv[1], "--help", *argv[2:]]
        else:
            print(USAGE)
            return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"hf-mmbalance: unknown command {command!r}; commands: {', '.join(COMMANDS)} (see hf-mmbalance --help)",
              file=sys.stderr)
        return 2
    from .errors import RunPhase, error_line, is_user_error

    RunPhase.reset()
    try:
        text = _help_request(command, rest)
        if text is not None:
            print(text)
            return 0
        _run(command, rest)
    except Exception as error:  # a bad input: one line, exit 2; anything else (a bug) keeps its traceback
        if not is_user_error(error):
            raise
        print(error_line(error), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
