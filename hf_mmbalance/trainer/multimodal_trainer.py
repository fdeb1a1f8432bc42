"""`MultimodalTrainer`: `transformers.Trainer` for the hf_mmbalance models and the balancing callbacks."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import is_sagemaker_mp_enabled, logging

from ..data import DatasetValidationError, validate_dataset
from ..data.validation import RAW_KINDS, column_kind, validate_backbone_columns
from ..hub import render_model_card
from ..modeling import MMBalanceConfig
from .batches import SAMPLE_ID_COLUMN, check_batches
from .callbacks import BalancingCallback
from .checkpoint_state import CheckpointStateError
from .clipping import CLIP_ENGINES, clip_and_scale_gradients
from .distributed import TrainingEngine
from .metrics import build_compute_metrics
from .optimizer import modality_parameter_groups
from .safe_args import make_token_free

logger = logging.get_logger(__name__)


def modality_schema(config: MMBalanceConfig) -> dict[str, Any]:
    """What `validate_dataset` expects of each modality column, from the model config."""
    schema: dict[str, Any] = {}
    for name, settings in config.modalities.items():
        if settings["encoder"] == "mlp":
            schema[name] = settings["input_size"]
        elif settings["encoder"] == "transformer":
            schema[name] = (None, settings["input_size"])
        # `auto` backbones take token ids or embeddings whose shape the backbone itself checks.
    return schema


def multimodal_processor(processing_class):
    """`processing_class` when it is a `MultimodalProcessor` (imported here: the processing layer loads the HF
    processors' modules, which a model on feature vectors never needs), else None."""
    if processing_class is None:
        return None
    from ..processing import MultimodalProcessor

    return processing_class if isinstance(processing_class, MultimodalProcessor) else None


# The raw values each kind of sub-processor turns into model inputs (`data.validation.column_kind` names).
RAW_KIND_OF_PROCESSOR = {"tokenizer": "text", "image_processor": "image", "feature_extractor": "audio"}


def raw_input_kinds(entry) -> tuple[str, ...]:
    """The raw column kinds a processor's modality entry handles (empty when the modality has no processor)."""
    if entry is None:
        return ()
    return ("frames",) if entry.frames else (RAW_KIND_OF_PROCESSOR[entry.kind],)


def check_processor_fits_backbone(name: str, entry, encoder) -> None:
    """A processor whose images have another number of channels than the backbone takes fails only inside torch:
    refuse the pair up front."""
    if entry is None or entry.kind != "image_processor" or not encoder.num_channels:
        return
    from ..processing import image_channels

    channels = image_channels(entry.processor)
    if channels != encoder.num_channels:
        raise ValueError(
            f"modality {name!r}: the image processor makes {channels}-channel images (its image_mean / image_std) "
            f"but the backbone takes {encoder.num_channels} channels (num_channels)"
        )


def validate_model_inputs(dataset, model, processor, where: str = "") -> None:
    """Every `encoder="auto"` modality's columns: raw values the processor handles, or the backbone's own input."""
    for name, settings in model.config.modalities.items():
        if settings["encoder"] != "auto":
            continue
        encoder = model.encoders[name]
        ndim, floating = encoder.per_sample_input or (None, None)
        entry = None if processor is None else processor.modalities.get(name)
        check_processor_fits_backbone(name, entry, encoder)
        validate_backbone_columns(
            dataset,
            name,
            encoder.main_input_name,
            ndim,
            floating,
            encoder.extra_inputs,
            processed_kinds=raw_input_kinds(entry),
            where=where,
            raw_column=None if entry is None else entry.column,
        )


def has_raw_columns(dataset, columns: list[str]) -> bool:
    """True when one of `columns` holds raw images / audio / text (a collator must process it per batch)."""
    return any(column in dataset.features and column_kind(dataset.features[column]) in RAW_KINDS for column in columns)


def variable_length_sequences(config: MMBalanceConfig, datasets_given: list) -> list[str]:
    """The transformer-encoder modalities whose rows vary in length in one of the datasets (not a fixed `Array2D`):
    the default collator cannot stack them, `MultimodalDataCollator` pads them and builds their masks."""
    import datasets

    found = []
    for name, settings in config.modalities.items():
        if settings["encoder"] != "transformer":
            continue
        for dataset in datasets_given:
            parts = dataset.values() if isinstance(dataset, dict) else [dataset]
            if any(isinstance(d, datasets.Dataset) and name in d.features and not isinstance(d.features[name], datasets.Array2D) for d in parts):
                found.append(name)
                break
    return found


METHOD_STATE_MODES = ("require", "restart")


def is_complete_checkpoint(folder: str) -> bool:
    """`Trainer` writes `trainer_state.json` last (after the model, optimizer, RNG and our methods' state): a folder
    whose copy of it is missing or unreadable was being saved when the run was killed."""
    try:
        with open(os.path.join(folder, TRAINER_STATE_NAME), encoding="utf-8") as handle:
            json.load(handle)
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The latest `checkpoint-<step>` of `output_dir` that `is_complete_checkpoint` (None when there is none)."""
    if not os.path.isdir(output_dir):
        return None
    steps = []
    for name in os.listdir(output_dir):
        prefix, _, step = name.rpartition("-")
        if prefix == PREFIX_CHECKPOINT_DIR and step.isdigit() and os.path.isdir(os.path.join(output_dir, name)):
            steps.append(int(step))
    for step in sorted(steps, reverse=True):
        folder = os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
        if is_complete_checkpoint(folder):
            return folder
    return None


def without_sample_ids(inputs: dict[str, Any]) -> dict[str, Any]:
    """The batch as the model takes it: `sample_idx` stays with the batch for the callbacks only."""
    return {key: value for key, value in inputs.items() if key != SAMPLE_ID_COLUMN}


class MultimodalTrainer(Trainer):
    """`Trainer` for `MMBalanceForClassification` / `MMBalanceForRegression`.

    On top of `Trainer` it:
      * keeps the modality columns, their attention masks, `labels` and `sample_idx` in the batches
        (`forward` takes the modalities as keyword arguments, so `remove_unused_columns` would drop them);
      * validates `datasets.Dataset` inputs against the model config (clear errors, see `data.validation`);
      * hands each training batch's outputs to the `BalancingCallback`s and adds the loss terms they return;
      * lets one callback provide the train sampler, and saves / restores the callbacks' per-sample state
        with every checkpoint;
      * logs each loss term (`loss_fused`, `loss_<modality>`) and evaluates the fused and every unimodal head
        (`accuracy`, `f1_macro`, `unimodal_<m>_accuracy`, ...; MAE / Pearson for regression).
    """

    def __init__(
        self,
        model=None,
        args=None,
        *trainer_args,
        validate_datasets: bool = True,
        method_state_on_resume: str = "require",
        **kwargs,
    ):
        if method_state_on_resume not in METHOD_STATE_MODES:
            raise ValueError(
                f"method_state_on_resume={method_state_on_resume!r} is unknown; expected one of {list(METHOD_STATE_MODES)}"
            )
        self.method_state_on_resume = method_state_on_resume
        config = getattr(model, "config", None)
        if not isinstance(config, MMBalanceConfig):
            raise TypeError(
                f"MultimodalTrainer needs an hf_mmbalance model (config MMBalanceConfig), got {type(model).__name__}"
            )
        if kwargs.get("compute_metrics") is None:
            kwargs["compute_metrics"] = build_compute_metrics(config.modality_names, config.task)
        processor = multimodal_processor(kwargs.get("processing_class"))
        padded = variable_length_sequences(config, [kwargs.get("train_dataset"), kwargs.get("eval_dataset")])
        if kwargs.get("data_collator") is None and (processor is not None or padded):
            from ..processing import MultimodalDataCollator

            kwargs["data_collator"] = MultimodalDataCollator(processor, sequence_modalities=padded or None)
        # A collator the user or the processor chose also batches the methods' own passes over the data (BSS).
        self._method_collator = kwargs.get("data_collator")
        for key in ("train_dataset", "eval_dataset"):
            if kwargs.get(key) is not None:
                kwargs[key] = self._prepared_dataset(kwargs[key], model, processor, key, validate_datasets)
        super().__init__(model, args, *trainer_args, **kwargs)
        self._validate_datasets = validate_datasets
        for key in ("train_dataset", "eval_dataset"):
            if kwargs.get(key) is not None:
                self._check_schemaless(kwargs[key], key)
        make_token_free(self.args)  # training_args.bin (written and pushed with every save) holds no token or path
        self._apply_label_smoothing()
        if self.args.label_names is None:
            self.label_names = ["labels"]
        self._loss_term_sums: dict[str, torch.Tensor] = {}
        self._loss_term_count = 0
        self._pending_logs: dict[str, float] = {}
        self._balancing_state_loaded: set[int] = set()
        self._resume_checkpoint_dir: str | None = None
        self._unwrapped_model: tuple | None = None  # (wrapped model, accelerator.unwrap_model of it), see _unwrapped
        self._clip_engine: bool | None = None  # whether this trainer clips (and folds factors) itself; set at 1st step

    # ----- data -----
    @staticmethod
    def _prepared_dataset(dataset, model, processor, field: str, validate: bool, labels: bool = True):
        import datasets

        config = model.config
        if isinstance(dataset, dict) and not isinstance(dataset, datasets.Dataset):
            return {
                name: MultimodalTrainer._prepared_dataset(d, model, processor, f"{field}[{name!r}]", validate, labels)
                for name, d in dataset.items()
            }
        if not isinstance(dataset, datasets.Dataset):
            return dataset
        if validate and field == "train_dataset" and len(dataset) == 0:
            raise DatasetValidationError("train_dataset is empty: there is nothing to train on")
        if validate:
            has_labels = labels or "labels" in dataset.column_names
            try:
                validate_dataset(
                    dataset,
                    modality_schema(config),
                    num_labels=config.num_labels if config.task == "classification" else None,
                    task=config.task,
                    label_column="labels" if has_labels else None,
                )
            except DatasetValidationError as error:
                raise DatasetValidationError(f"{field}: {error}") from None
            validate_model_inputs(dataset, model, processor, where=f"{field}: ")
        if dataset.format["type"] is not None or has_raw_columns(dataset, [*model.input_names, *(processor.raw_columns if processor else [])]):
            return dataset  # a processing transform, or raw values the collator processes: keep Python objects
        # Tensors straight from Arrow: the default collator then only stacks them.
        return dataset.with_format("torch")

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = [
                *self.model.input_names,
                *self._processor_columns(),
                SAMPLE_ID_COLUMN,
                "labels",
                "label",
                "label_ids",
                *(self.label_names or []),
            ]

    def _processor_columns(self) -> list[str]:
        """Raw columns the processor reads (they may be named differently from the modality)."""
        processor = multimodal_processor(self.processing_class)
        return list(processor.raw_columns) if processor is not None else []

    @property
    def balancing_callbacks(self) -> list[BalancingCallback]:
        # Looked up each time: `restore_callback_states_from_checkpoint` replaces callback instances.
        return [cb for cb in self.callback_handler.callbacks if isinstance(cb, BalancingCallback)]

    def _get_train_sampler(self, train_dataset=None) -> Sampler | None:
        # The callbacks see the training set with all its columns (e.g. ULGM's `true_<m>` diagnostics), not the copy
        # pruned to the model's inputs: same rows, same order.
        dataset = self.train_dataset if train_dataset is None or len(train_dataset) == len(self.train_dataset) else train_dataset
        engine = self.training_engine()
        for callback in self.balancing_callbacks:
            callback.data_collator = self._method_collator
            callback.engine = engine
        provided = [(cb, cb.get_train_sampler(dataset, self.args)) for cb in self.balancing_callbacks]
        provided = [(cb, sampler) for cb, sampler in provided if sampler is not None]
        if len(provided) > 1:
            names = [type(cb).__name__ for cb, _ in provided]
            raise ValueError(f"several callbacks provide a train sampler ({names}); only one may order the data")
        if provided:
            self._custom_train_sampler = provided[0][1]
            return self._custom_train_sampler
        self._custom_train_sampler = None
        return super()._get_train_sampler(train_dataset)

    def training_engine(self) -> TrainingEngine:
        """The engine accelerate runs the step with (what the callbacks are told, `BalancingCallback.engine`)."""
        if self.is_deepspeed_enabled:
            name = "deepspeed"
        elif self.is_fsdp_enabled:
            name = "fsdp" if getattr(self.accelerator.state.fsdp_plugin, "fsdp_version", 1) == 2 else "fsdp1"
        else:
            name = "ddp" if self.args.world_size > 1 else "single"
        return TrainingEngine(name, self.args.world_size)

    def _clip_grad_norm(self, model):
        # A callback that scales gradients right after clipping (gradient modulation, `pre_optimizer_step`) hands its
        # factors over, and they go into the clipping's multiply: one pass over the gradients instead of two, the
        # same update. Elsewhere (DeepSpeed, FSDP1, XLA, SageMaker MP) the Trainer's own clipping runs.
        if self._clip_engine is None:
            engine = self.training_engine().name
            self._clip_engine = (engine in CLIP_ENGINES and self.accelerator.distributed_type.name != "XLA"
                                 and not is_sagemaker_mp_enabled())
        if self._clip_engine:
            groups = [group for callback in self.balancing_callbacks
                      for group in (callback.clipping_factors(self.args, self.state, self.model) or ())]
            if groups:
                # accelerate's norm (fp16 unscaled, DTensor shards reduced) with an infinite bound: nothing clipped yet
                total_norm = self.accelerator.clip_grad_norm_(model.parameters(), float("inf"))
                return clip_and_scale_gradients(model.parameters(), self.args.max_grad_norm, total_norm, groups)
        return super()._clip_grad_norm(model)

    def get_train_dataloader(self):
        dataloader = super().get_train_dataloader()
        sampler = getattr(self, "_custom_train_sampler", None)
        if sampler is not None and hasattr(dataloader, "set_sampler"):
            # Keeps the custom sampler reachable by `set_epoch` after `skip_first_batches` on a mid-epoch resume
            # with several processes (accelerate otherwise replays epoch 0's order; HF_NOTES.md).
            dataloader.set_sampler(sampler)
        return dataloader

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        sampler = getattr(self, "_custom_train_sampler", None)
        if not getattr(sampler, "spans_all_epochs", False):
            return values
        # The sampler lays all of the method's epochs out in one pass (e.g. BSS, whose epochs differ in length):
        # run that pass once; max_steps, the LR schedule and the resume position then come from its length.
        _, steps_per_pass, num_examples, _, total_batch_size, steps_in_epoch, max_steps = values
        if args.max_steps <= 0:
            max_steps = steps_per_pass
        return 1, steps_per_pass, num_examples, len(sampler), total_batch_size, steps_in_epoch, max_steps

    def _apply_label_smoothing(self) -> None:
        """`compute_loss` is the model's own, so `Trainer`'s label smoother would be silently skipped: hand the factor
        to the model's cross-entropy terms instead; a regression model cannot smooth labels and refuses it. The other
        loss-path arguments are accounted for: `label_names` is set to ["labels"], and `average_tokens_across_devices`
        / `num_items_in_batch` do not apply (every loss term is a per-batch mean, `accepts_loss_kwargs = False`)."""
        factor = self.args.label_smoothing_factor
        if not factor:
            return
        if self.model.config.task != "classification":
            raise ValueError(f"label_smoothing_factor={factor}: label smoothing needs a classification model, this one is {self.model.config.task}")
        self.model.label_smoothing = float(factor)

    # ----- optimizer -----
    def create_optimizer(self, model=None):
        """`Trainer`'s optimizer, with one parameter group per modality that sets its own `learning_rate` (and weight
        decay split as `Trainer` splits it); the other parameters keep `TrainingArguments.learning_rate`."""
        model = self.model if model is None else model
        rates = {name: s["learning_rate"] for name, s in model.config.modalities.items() if s.get("learning_rate")}
        if self.optimizer is not None or not rates:
            return super().create_optimizer(model)
        groups = modality_parameter_groups(model, rates, self.args.weight_decay, self.get_decay_parameter_names(model))
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # ----- loss -----
    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        if "labels" not in inputs:
            raise ValueError("the batch has no 'labels': MultimodalTrainer trains on labelled data only")
        batch = without_sample_ids(inputs)
        callbacks = self.balancing_callbacks
        if model.training and any(callback.replaces_training_loss for callback in callbacks):
            batch.pop("labels")  # a callback's loss replaces the model's: do not compute the model's
        outputs = model(**batch)
        loss = outputs.loss
        if model.training and callbacks:
            unwrapped = self._unwrapped(model)
            loss = self._replaced_loss(unwrapped, inputs, outputs)
            for callback in callbacks:
                extra = callback.on_train_batch_outputs(self.args, self.state, model=unwrapped, inputs=inputs, outputs=outputs)
                if extra is not None:
                    loss = loss + extra
        if model.training:
            self._accumulate_loss_terms(outputs.loss_terms)
        return (loss, outputs) if return_outputs else loss

    def _unwrapped(self, model):
        # For the callbacks, once per wrapper: accelerate's unwrap_model walks every submodule, ~0.24 ms per step even
        # on the 6-MLP benchmark model (benchmarks/results/modulation_apply_overhead.md), more with a backbone.
        cached = self._unwrapped_model
        if cached is None or cached[0] is not model:
            cached = self._unwrapped_model = (model, self.accelerator.unwrap_model(model))
        return cached[1]

    def _replaced_loss(self, model, inputs, outputs) -> torch.Tensor:
        replacements = [
            (callback, callback.training_loss(self.args, self.state, model=model, inputs=inputs, outputs=outputs))
            for callback in self.balancing_callbacks
        ]
        replacements = [(callback, loss) for callback, loss in replacements if loss is not None]
        if len(replacements) > 1:
            names = [type(callback).__name__ for callback, _ in replacements]
            raise ValueError(f"several callbacks replace the training loss ({names}); only one may")
        return replacements[0][1] if replacements else outputs.loss

    def _accumulate_loss_terms(self, loss_terms: dict[str, torch.Tensor] | None) -> None:
        if not loss_terms:
            return
        for name, value in loss_terms.items():
            total = self._loss_term_sums.get(name)
            value = value.detach().float()
            self._loss_term_sums[name] = value if total is None else total + value
        self._loss_term_count += 1

    # ----- logging -----
    def _maybe_log_save_evaluate(self, *args, **kwargs):
        if self.control.should_log and self.state.global_step > self._globalstep_last_logged and self._loss_term_count:
            # Every rank is here: reduce the per-term means so the logged value is the global one.
            names = sorted(self._loss_term_sums)
            local = torch.stack([self._loss_term_sums[name] for name in names]) / self._loss_term_count
            mean = self.accelerator.reduce(local, reduction="mean")
            self._pending_logs.update({f"loss_{name}": round(float(v), 6) for name, v in zip(names, mean.tolist())})
            self._loss_term_sums, self._loss_term_count = {}, 0
        if self.control.should_log and self.state.global_step > self._globalstep_last_logged:
            for callback in self.balancing_callbacks:
                self._pending_logs.update(callback.metrics_to_log())
        return super()._maybe_log_save_evaluate(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._pending_logs:
            logs = {**logs, **self._pending_logs}
            self._pending_logs = {}
        super().log(logs, start_time)

    # ----- evaluation -----
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """`Trainer.evaluate`, with a dataset given here validated like the constructor's (a NaN row would otherwise be
        scored as class 0 and its loss dropped)."""
        if eval_dataset is not None and not isinstance(eval_dataset, str):
            eval_dataset = self._checked_dataset(eval_dataset, "eval_dataset")
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test"):
        """`Trainer.predict`, with `test_dataset` validated first (labels are optional)."""
        test_dataset = self._checked_dataset(test_dataset, "test_dataset", labels=False)
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def _checked_dataset(self, dataset, field: str, labels: bool = True):
        processor = multimodal_processor(self.processing_class)
        prepared = self._prepared_dataset(dataset, self.model, processor, field, self._validate_datasets, labels)
        self._check_schemaless(prepared, field, labels)
        return prepared

    def _check_schemaless(self, dataset, field: str, labels: bool = True) -> None:
        """A torch Dataset has no schema for `validate_dataset`: read it once, batch by batch (`datasets` inputs were
        checked by `_prepared_dataset`; a dict of eval datasets is checked part by part)."""
        if isinstance(dataset, dict):
            for name, part in dataset.items():
                self._check_schemaless(part, f"{field}[{name!r}]", labels)
        elif self._validate_datasets and not hasattr(dataset, "column_names"):
            check_batches(self.model, dataset, self.data_collator, field, labels=labels)

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys: Sequence[str] | None = None):
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad():
            outputs = model(**without_sample_ids(inputs))
        loss = outputs.loss.detach() if outputs.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        predictions: Any = outputs.logits.detach()
        if outputs.unimodal_logits:
            names = self.model.config.modality_names
            unimodal = torch.stack([outputs.unimodal_logits[name].detach() for name in names], dim=1)
            predictions = (predictions, unimodal)
        return loss, predictions, None if labels is None else labels.detach()

    # ----- model card -----
    def create_model_card(self, model_name: str | None = None, dataset=None, tags=None, **kwargs) -> None:
        """Write `README.md` in `output_dir`: our template (modalities, fusion, per-modality metrics, how to
        load) instead of `Trainer`'s generic card, which renders empty links for a model trained from scratch."""
        if not self.is_world_process_zero():
            return
        metrics = {}
        for entry in self.state.log_history:  # the latest evaluation wins, test over eval
            metrics.update({k: v for k, v in entry.items() if k.startswith(("eval_", "test_"))})
        has_test = any(key.startswith("test_") for key in metrics)
        metrics = {k: v for k, v in metrics.items() if k.startswith("test_" if has_test else "eval_")}
        callbacks = self.balancing_callbacks
        card = render_model_card(
            self.model.config,
            model_class=type(self.model).__name__,
            repo_id=self.hub_model_id or model_name or os.path.basename(os.path.abspath(self.args.output_dir)),
            metrics=metrics,
            eval_split="test split" if has_test else "validation split",
            dataset=dataset if isinstance(dataset, str) else None,
            has_processor=multimodal_processor(self.processing_class) is not None,
            methods=[cb.method_name for cb in callbacks if cb.method_name] + list(tags or []),
            citations=[cb.citation for cb in callbacks if cb.citation],
            training_summary=(
                f"{self.state.global_step} optimizer steps, {self.args.num_train_epochs:g} epochs, "
                f"learning rate {self.args.learning_rate:g}, batch size {self.args.per_device_train_batch_size} per device."
            ),
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    # ----- checkpoints -----
    def _save_checkpoint(self, model, trial) -> None:
        # Written before `super()` so `hub_strategy="checkpoint"` pushes them with the rest of the folder.
        if self.args.should_save and self.balancing_callbacks:
            checkpoint_dir = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            os.makedirs(checkpoint_dir, exist_ok=True)
            for callback in self.balancing_callbacks:
                callback.save_checkpoint_state(checkpoint_dir)
        super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._resume_checkpoint_dir = resume_from_checkpoint
        self._load_balancing_state()

    def _load_callback_state(self) -> None:
        super()._load_callback_state()
        # `restore_callback_states_from_checkpoint` may have replaced callbacks with new instances.
        self._load_balancing_state()

    def _load_balancing_state(self) -> None:
        if self._resume_checkpoint_dir is None:
            return
        for callback in self.balancing_callbacks:
            if id(callback) not in self._balancing_state_loaded:
                if self.method_state_on_resume == "restart":
                    logger.warning(f"{type(callback).__name__}: starting fresh, not from {self._resume_checkpoint_dir}")
                else:
                    callback.load_checkpoint_state(self._resume_checkpoint_dir)
                self._balancing_state_loaded.add(id(callback))

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """`Trainer.train`; `resume_from_checkpoint=True` picks the latest COMPLETE checkpoint of `output_dir` (one a
        kill interrupted while saving is skipped), and an incomplete folder given by path is refused by name."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no complete checkpoint found in output_dir {self.args.output_dir} to resume from")
        elif isinstance(resume_from_checkpoint, (str, os.PathLike)) and os.path.isdir(resume_from_checkpoint):
            if not is_complete_checkpoint(resume_from_checkpoint):
                raise CheckpointStateError(
                    f"checkpoint {resume_from_checkpoint} is incomplete (no readable {TRAINER_STATE_NAME}: its save was "
                    f"interrupted); resume from an earlier one, e.g. {last_complete_checkpoint(os.path.dirname(os.fspath(resume_from_checkpoint)))}"
                )
        return super().train(resume_from_checkpoint, *args, **kwargs)
