"""`hf-mmbalance train`: train a multimodal model from a recipe and write its metrics, plots and model card."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments, set_seed

from ..data import load_mfeat, load_multimodal_dataset, make_synthetic_classification, make_synthetic_regression, standardize
from ..data.validation import column_kind
from ..hub import render_model_card
from ..methods import build_method_callbacks
from ..modeling import MMBalanceConfig, MMBalanceForClassification, MMBalanceForRegression
from ..plotting import plot_training_curves
from ..trainer import MultimodalTrainer
from .modalities import build_processor, column_of, data_kind, split_settings
from .parser import RecipeError

DATASETS = ("mfeat", "synthetic", "synthetic_regression")


@dataclass
class DataArguments:
    dataset_name: str = field(
        default="mfeat",
        metadata={
            "help": "'mfeat' (bundled UCI mfeat), 'synthetic', 'synthetic_regression', a folder saved with "
            "DatasetDict.save_to_disk, or a CSV / JSON-lines manifest of files (image / audio paths, text, labels, "
            "optional split column; the modalities' kinds come from the recipe's `modalities`)"
        },
    )
    views: list[str] | None = field(default=None, metadata={"help": "modality columns to use (default: all)"})
    standardize: bool = field(default=True, metadata={"help": "z-score each modality with train-split statistics"})
    split_seed: int = field(default=0, metadata={"help": "seed of the bundled datasets' fixed split"})
    num_samples: int = field(default=1000, metadata={"help": "synthetic datasets: number of rows (all splits)"})
    disagreement: float = field(
        default=0.5,
        metadata={"help": "synthetic_regression: std of each modality's own label around the shared sentiment"},
    )
    test_split: str = field(default="test", metadata={"help": "split evaluated at the end ('' to skip)"})
    split_column: str | None = field(
        default=None, metadata={"help": "manifest column with train / validation / test (default: a seeded split)"}
    )


@dataclass
class ModelArguments:
    modalities: dict | str | None = field(
        default=None,
        metadata={
            "help": "per-modality settings (a recipe mapping, or JSON on the command line): the modality's "
            "MMBalanceConfig entry (encoder mlp | transformer | auto, backbone / backbone_config, pooling, frames, "
            "freeze, learning_rate, ...) plus its processor (processor, processor_type, processor_kwargs), raw "
            "column and kind; only these modalities are used. Unset: every feature column, with the options below"
        },
    )
    fusion: str = field(default="concat", metadata={"help": "concat | sum | gated | amw | afw (Ada2I: afw feeds amw)"})
    encoder: str = field(default="mlp", metadata={"help": "encoder of every modality (vector inputs: mlp)"})
    hidden_sizes: list[int] = field(default_factory=lambda: [64], metadata={"help": "MLP hidden sizes"})
    feature_size: int = field(default=32, metadata={"help": "size of each modality's feature z_m"})
    dropout: float = field(default=0.0, metadata={"help": "encoder dropout"})
    unimodal_heads: bool = field(default=True, metadata={"help": "one prediction head per modality"})
    fused_loss_weight: float | None = field(
        default=None, metadata={"help": "weight of the fused loss (default: mean of all terms, BMMAL Eq. 1)"}
    )
    unimodal_loss_weight: float | None = field(default=None, metadata={"help": "weight of each unimodal loss"})
    afw_rank: int = field(default=4, metadata={"help": "afw: tensor-ring rank r of the query/key cores (Ada2I Eq. 5)"})
    afw_beta: float = field(default=0.5, metadata={"help": "afw: weight beta of the original feature (Ada2I Eq. 7)"})
    amw_scale: float = field(default=1.0, metadata={"help": "amw/afw: scale of the modality-wise cosines (Ada2I Eq. 8)"})
    common_space_size: int | None = field(
        default=None, metadata={"help": "SUGRM d_c: project fused and unimodal features into a common space (ULGM)"}
    )
    mrm_reduction: int = field(default=4, metadata={"help": "mrm: bottleneck reduction of the recalibration (SUGRM 3.2.1)"})
    regression_loss: str = field(default="l1", metadata={"help": "regression: l1 (SUGRM) or mse"})


def load_data(data_args: DataArguments, kinds: dict[str, str] | None = None):
    """The recipe's `DatasetDict`: a bundled / synthetic set, a saved folder or a manifest of files (`kinds`: column
    -> image | audio | frames | text | features, for a manifest)."""
    name = data_args.dataset_name
    if name == "mfeat":
        return load_mfeat(views=data_args.views, seed=data_args.split_seed)
    if name == "synthetic":
        dataset = make_synthetic_classification(num_samples=data_args.num_samples, seed=data_args.split_seed)
    elif name == "synthetic_regression":
        dataset = make_synthetic_regression(
            num_samples=data_args.num_samples, seed=data_args.split_seed, disagreement=data_args.disagreement
        )
    elif os.path.isdir(name) or os.path.isfile(name):
        if os.path.isfile(name) and not kinds:
            raise RecipeError(f"dataset_name={name!r} is a manifest: declare its columns in the recipe's `modalities`")
        options = {"split_column": data_args.split_column, "seed": data_args.split_seed} if os.path.isfile(name) else {}
        try:
            dataset = load_multimodal_dataset(name, modalities=kinds, **options)
        except ValueError as error:  # a missing file, column or bad split: the message names it
            raise RecipeError(str(error)) from None
    else:
        raise RecipeError(
            f"dataset_name={name!r} is neither one of {list(DATASETS)} nor a saved DatasetDict folder or manifest file"
        )
    if data_args.views:
        truths = [c for c in dataset["train"].column_names if c in {f"true_{v}" for v in data_args.views}]
        dataset = dataset.select_columns([*data_args.views, "labels", "sample_idx", *truths])
    return dataset


def keep_modality_columns(dataset, model_settings: dict[str, dict], processing: dict[str, dict]):
    """Only the recipe's modalities: their raw or processed columns, namespaced extras, labels, ids, `true_<m>`."""
    names = list(model_settings)
    wanted = {column_of(name, processing[name]) for name in names} | {"labels", "sample_idx"}
    columns = dataset["train"].column_names
    missing = sorted(column for column in wanted - {"sample_idx"} if column not in columns)
    if missing:
        raise RecipeError(f"the dataset has no columns {missing} for the recipe's modalities; it has {columns}")
    keep = [c for c in columns if c in wanted or c.startswith(tuple(f"{n}_" for n in names)) or c in {f"true_{n}" for n in names}]
    return dataset.select_columns(keep)


def modality_columns(dataset, names: list[str] | None = None) -> dict[str, int]:
    """Modality name -> feature length, for every fixed-length float column other than labels/ids (or `names`)."""
    features = dataset["train"].features
    columns = {}
    for name, feature in features.items():
        if names is not None and name not in names:
            continue
        if name in ("labels", "sample_idx") or name.endswith("_attention_mask") or name.startswith("true_"):
            continue  # `true_<m>`: known unimodal labels of synthetic data, for diagnostics only
        length = getattr(feature, "length", None)
        if length is None or length < 1:
            raise RecipeError(f"column {name!r} is not a fixed-length feature vector; declare its length in the dataset")
        columns[name] = length
    return columns


@dataclass
class PreparedData:
    """What a command needs of its data: the splits, each modality's model settings, the task and the processor."""

    dataset: Any
    modality_settings: dict[str, dict]  # name -> MMBalanceConfig entry
    task: str
    num_labels: int
    processor: Any = None  # a MultimodalProcessor for raw columns, or None


def build_model(model_args: ModelArguments, data: PreparedData):
    """The model of the recipe; every `auto` modality with a `backbone` starts from that backbone's weights."""
    loss_weights = None
    if model_args.fused_loss_weight is not None or model_args.unimodal_loss_weight is not None:
        fused = 1.0 if model_args.fused_loss_weight is None else model_args.fused_loss_weight
        unimodal = 1.0 if model_args.unimodal_loss_weight is None else model_args.unimodal_loss_weight
        loss_weights = {"fused": fused, **{name: unimodal for name in data.modality_settings}}
    try:
        config = MMBalanceConfig(
            modalities=data.modality_settings,
            fusion=model_args.fusion,
            task=data.task,
            num_labels=data.num_labels,
            unimodal_heads=model_args.unimodal_heads,
            loss_weights=loss_weights,
            afw_rank=model_args.afw_rank,
            afw_beta=model_args.afw_beta,
            amw_scale=model_args.amw_scale,
            common_space_size=model_args.common_space_size,
            mrm_reduction=model_args.mrm_reduction,
            regression_loss=model_args.regression_loss,
        )
        model_class = MMBalanceForClassification if data.task == "classification" else MMBalanceForRegression
        model = model_class(config)
    except ValueError as error:
        raise RecipeError(str(error)) from None
    pretrained = [name for name, settings in config.modalities.items() if settings["encoder"] == "auto" and settings.get("backbone")]
    if pretrained:
        model.load_backbone_weights(pretrained)
    return model


def encoder_settings(model_args: ModelArguments, input_size: int, given: dict | None = None) -> dict:
    """A feature-vector modality's encoder settings: the recipe's own, over the command's shared encoder options."""
    settings = {
        "input_size": input_size,
        "encoder": model_args.encoder,
        "hidden_sizes": list(model_args.hidden_sizes),
        "feature_size": model_args.feature_size,
        "dropout": model_args.dropout,
    }
    if given and given.get("encoder", model_args.encoder) != model_args.encoder:
        settings = {"input_size": input_size}  # another encoder kind: the shared MLP options do not apply
    return {**settings, **(given or {})}


def prepare_dataset(data_args: DataArguments, model_args: ModelArguments) -> PreparedData:
    """The recipe's `DatasetDict` (feature columns standardized if asked), each modality's settings, task, labels
    and the processor of its raw columns."""
    model_settings, processing = split_settings(model_args.modalities) if model_args.modalities else ({}, {})
    kinds = {column_of(n, processing[n]): data_kind(n, model_settings[n], processing[n]) for n in model_settings}
    dataset = load_data(data_args, kinds or None)
    if model_settings:
        dataset = keep_modality_columns(dataset, model_settings, processing)
        vector_names = [n for n, s in model_settings.items() if s.get("encoder", model_args.encoder) != "auto" and "processor" not in processing[n]]
        sizes = modality_columns(dataset, vector_names)
        settings = {
            name: given if name not in sizes else encoder_settings(model_args, sizes[name], given)
            for name, given in model_settings.items()
        }
    else:
        sizes = modality_columns(dataset)
        settings = {name: encoder_settings(model_args, size) for name, size in sizes.items()}
    numeric = [name for name in sizes if column_kind(dataset["train"].features[name]) == "numeric"]
    if data_args.standardize and numeric:
        dataset = standardize(dataset, numeric)
    task, num_labels = label_task(dataset)
    return PreparedData(dataset, settings, task, num_labels, build_processor(model_settings, processing))


def label_task(dataset) -> tuple[str, int]:
    """(task, num_labels) from the train split's `labels`: float labels mean regression (1 output)."""
    feature = dataset["train"].features["labels"]
    if getattr(feature, "dtype", "").startswith("float"):
        return "regression", 1
    return "classification", getattr(feature, "num_classes", None) or int(max(dataset["train"]["labels"])) + 1


def dataset_label(name: str) -> str:
    """How the model card names the data: a local file or folder by its base name, never its local path."""
    return os.path.basename(os.path.normpath(name)) if os.path.exists(name) else name


def format_report(metrics: dict[str, float], modality_names: list[str], prefix: str) -> str:
    """A small table: fused and each unimodal head's accuracy / macro-F1 (MAE / Pearson for regression)."""
    keys = ["accuracy", "f1_macro"] if f"{prefix}_accuracy" in metrics else ["mae", "pearson"]
    lines = [f"{'head':<12}" + "".join(f"{key:>12}" for key in keys)]
    lines.append(f"{'fused':<12}" + "".join(f"{metrics.get(f'{prefix}_{key}', float('nan')):>12.4f}" for key in keys))
    for name in modality_names:
        values = [metrics.get(f"{prefix}_unimodal_{name}_{key}") for key in keys]
        if all(value is not None for value in values):
            lines.append(f"{name:<12}" + "".join(f"{value:>12.4f}" for value in values))
    return "\n".join(lines)


def run_train(
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: TrainingArguments,
    method_sections: dict[str, dict] | None = None,
) -> dict:
    try:
        callbacks = build_method_callbacks(method_sections or {})
    except ValueError as error:
        raise RecipeError(str(error)) from None
    set_seed(training_args.seed)
    data = prepare_dataset(data_args, model_args)
    dataset = data.dataset
    model = build_model(model_args, data)
    try:
        trainer = MultimodalTrainer(
            model=model,
            args=training_args,
            train_dataset=dataset["train"],
            eval_dataset=dataset["validation"] if "validation" in dataset else None,
            callbacks=callbacks,
            processing_class=data.processor,
        )
    except ValueError as error:  # dataset validation: the message names the column
        raise RecipeError(str(error)) from None
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = {f"train_{k}" if not k.startswith("train") else k: v for k, v in train_result.metrics.items()}
    if "validation" in dataset:
        metrics.update(trainer.evaluate())
    if data_args.test_split and data_args.test_split in dataset:
        metrics.update(trainer.evaluate(dataset[data_args.test_split], metric_key_prefix="test"))
    if trainer.is_world_process_zero():
        write_run_outputs(trainer, metrics, data_args, training_args)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset=dataset_label(data_args.dataset_name))
    return metrics


def write_run_outputs(trainer, metrics: dict, data_args: DataArguments, training_args: TrainingArguments) -> None:
    output_dir = training_args.output_dir
    names = trainer.model.config.modality_names
    trainer.save_model(output_dir)
    with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2, sort_keys=True)
    with open(os.path.join(output_dir, "log_history.json"), "w", encoding="utf-8") as handle:
        json.dump(trainer.state.log_history, handle, indent=1)
    plots = plot_training_curves(trainer.state.log_history, names, output_dir)
    for callback in trainer.balancing_callbacks:
        plots += callback.plot_diagnostics(trainer.state.log_history, output_dir)
    trainer.create_model_card(dataset=dataset_label(data_args.dataset_name))
    prefix = "test" if any(key.startswith("test_") for key in metrics) else "eval"
    print(f"\nPer-modality report ({prefix} split, {dataset_label(data_args.dataset_name)}, fusion={trainer.model.config.fusion}):")
    print(format_report(metrics, names, prefix))
    print(f"\nwrote: {os.path.join(output_dir, 'metrics.json')}, model card README.md, plots {plots}")
