"""The protocol between `MultimodalTrainer` and the balancing methods.

A balancing method is a `TrainerCallback` (so it gets every standard event, e.g. `on_pre_optimizer_step` for
gradient modulation) that may also implement the extra hooks below. `MultimodalTrainer` calls them on every
`BalancingCallback` in its callback list; a method overrides only what it needs, the base versions do nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import TrainerCallback, TrainerState, TrainingArguments

from .distributed import TrainingEngine, detect_engine


class BalancingCallback(TrainerCallback):
    """Base class of the balancing methods' callbacks (hooks of `MultimodalTrainer`)."""

    @staticmethod
    def resolve_config(config_class: type, config: Any, options: dict[str, Any]) -> Any:
        """A method's config from either a config instance or its fields as keyword arguments (not both)."""
        if config is not None and options:
            raise TypeError(f"pass either a {config_class.__name__} or its fields as keyword arguments, not both")
        return config if config is not None else config_class(**options)

    # The collator the trainer batches the training set with (set by `MultimodalTrainer` before it builds the train
    # sampler): a method that runs its own passes over the data (BSS scoring) batches raw or variable-length rows
    # with it, exactly as training does. None = slice fixed-size columns.
    data_collator: Any = None

    # The engine that runs the step (set by `MultimodalTrainer` with the collator; None = not told, see
    # `training_engine`): a method whose work must hold in every engine (gradient modulation) picks how to apply it.
    engine: TrainingEngine | None = None

    def training_engine(self, args: TrainingArguments | None = None, model: torch.nn.Module | None = None) -> TrainingEngine:
        """The engine the trainer announced, else the one `detect_engine` finds (a callback restored from a
        checkpoint, or under a plain `Trainer`)."""
        return self.engine if self.engine is not None else detect_engine(args, model)

    # Shown in the model card: the method's tag and the paper's BibTeX entry.
    method_name: str | None = None
    citation: str | None = None

    def on_train_batch_outputs(
        self,
        args: TrainingArguments,
        state: TrainerState,
        *,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        outputs: Any,
    ) -> torch.Tensor | None:
        """Called for every training micro-batch right after the forward pass, before backward (so a method may
        register tensor hooks on `outputs`, e.g. on the features, to change the gradients inside backward: the one
        place every engine honours, DeepSpeed included).

        `inputs` holds the batch (modalities, `labels`, `sample_idx` when the dataset has it) and `outputs` the
        model's `MMBalanceOutput`. Return a scalar tensor to ADD to the loss (it is backpropagated with it), or
        None. With gradient accumulation this runs once per micro-batch; `state.global_step` tells the step.
        """
        return None

    # True when `training_loss` always returns the loss to train on: in training the trainer then runs the model
    # without labels (its own loss would be thrown away) and logs the `loss_terms` the callback sets on `outputs`.
    replaces_training_loss: bool = False

    def training_loss(
        self,
        args: TrainingArguments,
        state: TrainerState,
        *,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        outputs: Any,
    ) -> torch.Tensor | None:
        """Return a scalar to train on INSTEAD of `outputs.loss` (e.g. ULGM's loss on generated unimodal labels), or
        None to keep the model's loss. At most one callback may replace the loss; the terms that
        `on_train_batch_outputs` returns are added to whichever loss is used."""
        return None

    def clipping_factors(
        self, args: TrainingArguments, state: TrainerState, model: torch.nn.Module
    ) -> list[tuple[list[torch.nn.Parameter], torch.Tensor]] | None:
        """Called at every optimizer step just before the trainer clips the gradients (`max_grad_norm > 0`, on an
        engine where `MultimodalTrainer` clips itself: one process, DDP, FSDP2). Return `[(parameters, factor), ...]`
        (`factor` a 0-d tensor) to have those gradients multiplied by `factor` in the clipping's own multiply, i.e.
        g <- factor * clip(g) without a second pass over them (the callback must then not scale them again in
        `on_pre_optimizer_step`), or None to leave the gradients to `on_pre_optimizer_step`. `model` is the
        unwrapped model."""
        return None

    def get_train_sampler(self, train_dataset: Any, args: TrainingArguments) -> Sampler | None:
        """Return a sampler to order the training set (it must yield the same order on every rank; accelerate
        shards it), or None to keep the Trainer's. At most one callback may provide one."""
        return None

    def metrics_to_log(self) -> dict[str, float]:
        """Diagnostics to add to the next training log entry (`Trainer.log`, so they reach `log_history` and every
        reporting integration), e.g. the mean of a per-step value since the previous call. Called on every rank at
        each logging step; return values that are already identical on all ranks."""
        return {}

    def plot_diagnostics(self, log_history: list[dict], output_dir: str) -> list[str]:
        """Write this method's diagnostic plots (PNG) from a finished run's `log_history` into `output_dir`;
        return the paths written. The CLI calls it for every balancing callback after training."""
        return []

    def save_checkpoint_state(self, checkpoint_dir: str) -> None:
        """Write this method's state (JSON / safetensors only) into `checkpoint_dir` (main process only)."""

    def load_checkpoint_state(self, checkpoint_dir: str) -> None:
        """Restore what `save_checkpoint_state` wrote (every process), before training resumes."""
