"""The help texts of `hf-mmbalance train --help` / `active --help`, built from the argument and method config
dataclasses (each field's `metadata={"help": ...}`), so every option is documented where it is defined.

`hf-mmbalance --help` (the command list) lives in `main.py` and imports nothing; the texts here import the
dataclasses (transformers, the methods) when asked for.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap

WIDTH = 100
INDENT = " " * 10

# One line per method (shown above its options); a method missing here shows its config's docstring instead.
METHOD_SUMMARIES = {
    "modulation": "Ada2I / OGM-GE gradient modulation of the dominant modalities' encoders; classification only",
    "bss": "BSS balance-aware curriculum sampler; its prediction-similarity criteria are classification only",
    "ulgm": "ULGM unimodal label generation (SUGRM / Self-MM); regression only",
}
ACTIVE_SUMMARY = "active learning loop (ActiveLearningConfig): the train split is the pool, labels acquired per round"

# The TrainingArguments fields listed in `train --help` (all of them: `--help-training`).
COMMON_TRAINING_FIELDS = (
    "output_dir", "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "learning_rate", "optim", "optim_args", "lr_scheduler_type", "warmup_steps",
    "eval_strategy", "save_strategy", "save_steps", "logging_steps", "load_best_model_at_end", "seed", "use_cpu",
    "bf16", "dataloader_num_workers", "report_to", "push_to_hub", "hub_model_id",
)
RESUME_HELP = (
    "resume training: a checkpoint-<step> folder; an output directory (its latest complete checkpoint); or true / "
    "last (the latest complete checkpoint in --output_dir)"
)
LAUNCH = (
    "several processes / GPUs (one process per device; on CPU add --multi_gpu and --use_cpu true):\n"
    "  accelerate launch --num_processes 2 -m hf_mmbalance train --config RECIPE.yaml [--field value ...]"
)


def _type_name(annotation) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    text = re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", str(text))  # transformers.x.OptimizerNames -> OptimizerNames
    return text.replace("typing.", "").replace("NoneType", "None")


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
    else:
        return "required"
    value = getattr(value, "value", value)  # enums: their string
    return repr(value) if isinstance(value, str) else str(value)


def format_field(flag: str, field: dataclasses.Field, help_text: str | None = None) -> str:
    """`  --flag TYPE (default: x)` and the field's help, wrapped and indented."""
    head = f"  {flag} {_type_name(field.type)}  (default: {_default(field)})"
    text = " ".join((help_text or field.metadata.get("help") or "").split())
    if not text:
        return head
    return head + "\n" + textwrap.fill(text, WIDTH, initial_indent=INDENT, subsequent_indent=INDENT)


def format_dataclass(cls: type, prefix: str = "--", only: tuple[str, ...] | None = None,
                     overrides: dict[str, str] | None = None) -> str:
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    names = [name for name in (only or tuple(fields)) if name in fields]
    return "\n".join(format_field(f"{prefix}{name}", fields[name], (overrides or {}).get(name)) for name in names)


def _summary(name: str, config_class: type) -> str:
    if name in METHOD_SUMMARIES:
        return METHOD_SUMMARIES[name]
    return (config_class.__doc__ or config_class.__name__).strip().splitlines()[0]


def method_help(name: str, config_class: type) -> str:
    """One method's section: its summary line and every option of its config dataclass."""
    return (
        f"{name}: {_summary(name, config_class)} ({config_class.__name__})\n"
        f"  recipe section `{name}: {{option: value}}`, or flags --{name}.<option> value\n"
        + format_dataclass(config_class, prefix=f"--{name}.")
    )


def method_sections(command: str) -> dict[str, type]:
    """Section name -> config dataclass of the sections `command` takes (`active` first for `active`)."""
    from ..methods import METHOD_REGISTRY

    sections = {name: entry.config_class for name, entry in METHOD_REGISTRY.items()}
    if command == "active":
        from ..methods.active import ActiveLearningConfig

        sections = {"active": ActiveLearningConfig, **sections}
    return sections


def section_help(command: str, name: str) -> str:
    sections = method_sections(command)
    if name not in sections:
        from .parser import RecipeError

        raise RecipeError(f"--help {name}: no such section of `{command}`; sections: {', '.join(sections)} "
                          f"(or `--help training` for every TrainingArguments field)")
    if name == "active":
        return (f"active: {ACTIVE_SUMMARY}\n  recipe section `active: {{option: value}}`, or flags --active.<option> value\n"
                + format_dataclass(sections[name], prefix="--active."))
    return method_help(name, sections[name])


def training_help(command: str) -> str:
    """Every TrainingArguments field, as transformers' `HfArgumentParser` documents them."""
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser(TrainingArguments, prog=f"hf-mmbalance {command}", add_help=False)
    return parser.format_help()


def command_help(command: str) -> str:
    if command == "diagnose":
        from .diagnose import diagnose_help

        return diagnose_help()
    from transformers import TrainingArguments

    from .train import DataArguments, ModelArguments

    sections = method_sections(command)
    methods = [name for name in sections if name != "active"]
    if command == "train":
        intro = (
            "usage: hf-mmbalance train --config RECIPE.yaml [--field value ...] [--<method>.<option> value ...]\n\n"
            "Train a multimodal model with MultimodalTrainer and write metrics.json, log_history.json, plots, the\n"
            "model and its card (README.md) into --output_dir. A recipe is a YAML file of the fields below (data,\n"
            "model, TrainingArguments) plus one section per balancing method; flags of the same names override it."
        )
    else:
        intro = (
            "usage: hf-mmbalance active --config RECIPE.yaml [--field value ...] [--active.<option> value ...]\n"
            "                           [--<method>.<option> value ...]\n\n"
            "Active learning over the train split as the pool: every round trains a fresh model on the labelled rows\n"
            "(output_dir/round-<r>), evaluates it on the test split, scores the pool and acquires the next labels.\n"
            "Resumable: rerun the same command on the same --output_dir. Balancing-method sections add their\n"
            "callbacks to every round's training (a fresh set per round)."
        )
    parts = [
        intro,
        "options:\n"
        "  -h, --help [SECTION]\n" + textwrap.fill(
            f"this help; with a section name ({', '.join(sections)}): only that section's options; "
            "`--help training` or --help-training: every TrainingArguments field", WIDTH,
            initial_indent=INDENT, subsequent_indent=INDENT) + "\n"
        "  --config RECIPE.yaml\n" + textwrap.fill(
            "the recipe (YAML): any field below, plus the sections; flags override it", WIDTH,
            initial_indent=INDENT, subsequent_indent=INDENT),
        "data:\n" + format_dataclass(DataArguments),
        "model:\n" + format_dataclass(ModelArguments),
        "training (TrainingArguments; the most used, every field with --help-training):\n"
        + format_dataclass(TrainingArguments, only=(*COMMON_TRAINING_FIELDS, "resume_from_checkpoint"),
                           overrides={"resume_from_checkpoint": RESUME_HELP}),
    ]
    if command == "active":
        parts.append(section_help(command, "active"))
    parts.append(
        "balancing methods (several can run together; one method's options: "
        f"hf-mmbalance {command} --help METHOD):\n\n" + "\n\n".join(method_help(name, sections[name]) for name in methods)
    )
    if command == "train":
        parts.append(
            "examples:\n"
            "  hf-mmbalance train --config recipes/mfeat/vanilla.yaml --num_train_epochs 5 --output_dir outputs/run\n"
            "  hf-mmbalance train --config recipes/mfeat/ogm_ge.yaml --modulation.alpha 0.2\n"
            "  hf-mmbalance train --config recipes/mfeat/vanilla.yaml --save_strategy epoch --output_dir outputs/run \\\n"
            "      --resume_from_checkpoint last    # continue an interrupted run from its latest complete checkpoint\n\n"
            + LAUNCH
        )
    else:
        parts.append("examples:\n  hf-mmbalance active --config recipes/mfeat/bmmal.yaml --active.strategy badge "
                     "--modulation.mode ada2i\n\n" + LAUNCH.replace(" train ", " active "))
    return "\n\n".join(parts)
