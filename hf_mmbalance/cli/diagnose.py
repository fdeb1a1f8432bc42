"""`hf-mmbalance diagnose`: is my multimodal model imbalanced, by how much, and which method should I use? (issue 17)

The recipe is read exactly as `hf-mmbalance train` reads it (same fields, sections, flags and errors), plus the
`DiagnoseConfig` fields (`--budget quick|full`, ...); the work is `hf_mmbalance.diagnose.diagnose_balance`.
"""

from __future__ import annotations

import shlex
import textwrap

from transformers import TrainingArguments

from ..diagnose import DiagnoseConfig, diagnose_balance
from ..methods import METHOD_REGISTRY
from .help import INDENT, LAUNCH, WIDTH, format_dataclass
from .parser import parse_recipe_and_flags
from .train import DataArguments, ModelArguments


def parse_diagnose_args(argv: list[str]):
    """`hf-mmbalance diagnose` flags -> (DataArguments, ModelArguments, TrainingArguments, DiagnoseConfig, sections)."""
    return parse_recipe_and_flags(
        (DataArguments, ModelArguments, TrainingArguments, DiagnoseConfig), argv, method_names=tuple(METHOD_REGISTRY),
        method_options={name: entry.config_class for name, entry in METHOD_REGISTRY.items()},
    )


def run_diagnose(data_args, model_args, training_args, config: DiagnoseConfig, method_sections: dict | None = None, *,
                 sources: dict[str, str] | None = None, argv: list[str] | None = None) -> dict:
    command = None if argv is None else " ".join(["hf-mmbalance diagnose", *(shlex.quote(a) for a in argv)])
    diagnosis = diagnose_balance(data_args, model_args, training_args, config, method_sections, sources=sources,
                                 command=command)
    print("\n" + "\n".join(f"- {sentence}" for sentence in diagnosis["verdict"]["text"]))
    files = ", ".join(f"{training_args.output_dir}/{name}" for name in diagnosis["files"].values())
    print(f"\nwrote: {files}; the trainings in {training_args.output_dir}/diagnose_parts (a rerun skips them). "
          f"Put the report in a later model card: hf-mmbalance train ... --balance_report "
          f"{training_args.output_dir}/diagnosis.json")
    return diagnosis


def diagnose_help() -> str:
    from .train import DataArguments, ModelArguments

    intro = (
        "usage: hf-mmbalance diagnose --config RECIPE.yaml [--budget quick|full] [--field value ...]\n\n"
        "Trains each modality alone and the joint model (vanilla, the recipe's model and optimizer; the epoch picked\n"
        "on the validation split) and measures on validation and test: fused and per-modality scores, each\n"
        "modality's linear probe on the joint model's frozen encoder and its gap to alone, the unimodal heads, exact\n"
        "Shapley shares, disparity ratios over training, the BSS unbalanced fraction; then states which modality\n"
        "dominates and which is under-trained. --budget full also compares the balancing methods over several\n"
        "seeds. Writes diagnosis.json, diagnosis.md and diagnosis.png into --output_dir; resumable there."
    )
    return "\n\n".join([
        intro,
        "diagnose:\n" + format_dataclass(DiagnoseConfig),
        "data:\n" + format_dataclass(DataArguments),
        "model:\n" + format_dataclass(ModelArguments),
        "training: every TrainingArguments field (--help-training); num_train_epochs is the budget unless\n"
        + textwrap.fill("--diagnose_epochs is given; seed is the first seed; eval / save / logging strategies are set "
                        "by diagnose", WIDTH, initial_indent=INDENT, subsequent_indent=INDENT),
        "methods: the recipe's sections (modulation, bss, ulgm) are the options of the methods --budget full runs\n"
        "  (see hf-mmbalance diagnose --help METHOD)",
        "examples:\n  hf-mmbalance diagnose --config recipes/mfeat/diagnose.yaml --views fac kar --output_dir outputs/dx\n"
        "  hf-mmbalance diagnose --config recipes/mfeat/diagnose.yaml --budget full --output_dir outputs/dx_full\n\n"
        + LAUNCH.replace(" train ", " diagnose ").replace("several processes / GPUs", "several processes: not yet"),
    ])
