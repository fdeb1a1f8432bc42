"""Which errors the CLI reports as one line (`hf-mmbalance: <message>`, exit code 2) and which keep their traceback.

A bad input is reported in one line: the library's own error classes (bad recipes, configs, datasets, files,
checkpoints, processors, inputs), YAML syntax errors, and any `ValueError` raised before the first training step
(the method configs' and callbacks' start-up checks, `TrainingArguments`' own checks, the Trainer's set-up). Every
other exception -- and a `ValueError` once training runs -- is a bug or a failure the user should see in full: it
propagates with its traceback.

Nothing heavy is imported here: the error classes are looked up in `sys.modules` (an error of a class whose module
was never imported cannot have been raised).
"""

from __future__ import annotations

import sys

from .parser import RecipeError, one_line

# (module, class): the library's errors for bad input. Subclasses (DatasetFilesError < DatasetValidationError) match.
LIBRARY_ERRORS = (
    ("hf_mmbalance.modeling.configuration_mmbalance", "MMBalanceConfigError"),
    ("hf_mmbalance.modeling.backbone", "BackboneInputError"),
    ("hf_mmbalance.data.validation", "DatasetValidationError"),
    ("hf_mmbalance.data.files", "DatasetFilesError"),
    ("hf_mmbalance.trainer.checkpoint_state", "CheckpointStateError"),
    ("hf_mmbalance.processing.errors", "ProcessingError"),
    ("hf_mmbalance.diagnose.config", "DiagnoseError"),
)


class RunPhase:
    """Whether the current command's training has started (its first optimizer step began)."""

    training_started = False

    @classmethod
    def reset(cls) -> None:
        cls.training_started = False


def library_error_classes() -> tuple[type, ...]:
    classes: list[type] = [RecipeError]
    for module_name, class_name in LIBRARY_ERRORS:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type):
            classes.append(cls)
    yaml = sys.modules.get("yaml")
    if yaml is not None:
        classes.append(yaml.YAMLError)
    return tuple(classes)


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is a bad input to report in one line (see the module docstring)."""
    if isinstance(error, library_error_classes()):
        return True
    return isinstance(error, ValueError) and not RunPhase.training_started


def error_line(error: BaseException) -> str:
    message = one_line(str(error)) or type(error).__name__
    return f"hf-mmbalance: {message}"
