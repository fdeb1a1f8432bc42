"""`hf-mmbalance train`: train a multimodal model from a recipe and write its metrics, plots and model card."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transformers import TrainerCallback, TrainingArguments, set_seed

from ..data import (
    MFEAT_VIEWS,
    load_av_digits,
    load_mfeat,
    load_multimodal_dataset,
    make_synthetic_classification,
    make_synthetic_regression,
    standardize,
)
from ..data.validation import column_kind
from ..methods import METHOD_REGISTRY, build_method_callbacks
from ..modeling import MMBalanceConfig, MMBalanceForClassification, MMBalanceForRegression
from ..plotting import plot_imbalance_summary, plot_training_curves
from ..progress import quiet_library_progress
from ..trainer import MultimodalTrainer
from ..trainer.multimodal_trainer import is_complete_checkpoint, last_complete_checkpoint
from .errors import RunPhase
from .modalities import build_processor, column_of, data_kind, split_settings
from .parser import RecipeError, parse_recipe_and_flags

DATASETS = ("mfeat", "synthetic", "synthetic_regression", "av_digits")


@dataclass
class DataArguments:
    dataset_name: str = field(
        default="mfeat",
        metadata={
            "help": "'mfeat' (bundled UCI mfeat), 'synthetic', 'synthetic_regression', 'av_digits' (FSDD spoken digits "
            "+ MNIST images from --fsdd_dir / --mnist_dir), a folder saved with "
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
    method_state_on_resume: str = field(
        default="require",
        metadata={
            "help": "require: a resumed run restores every balancing method's state from the checkpoint and refuses a "
            "missing / changed one; restart: the methods start fresh from the checkpoint's weights"
        },
    )
    split_column: str | None = field(
        default=None, metadata={"help": "manifest column with train / validation / test (default: a seeded split)"}
    )
    balance_report: str | None = field(
        default=None,
        metadata={"help": "a diagnosis.json of `hf-mmbalance diagnose` (or its folder): the model card gets its Balance report"},
    )
    fsdd_dir: str | None = field(
        default=None, metadata={"help": "av_digits: a Free Spoken Digit Dataset clone (or its recordings/ folder)"}
    )
    mnist_dir: str | None = field(
        default=None, metadata={"help": "av_digits: the folder with MNIST's t10k-images-idx3-ubyte / -labels files"}
    )
    fold: int | None = field(
        default=None,
        metadata={"help": "av_digits: speaker fold k: test = k-th speaker (sorted), validation = the next one"},
    )
    image_noise: float = field(
        default=0.0, metadata={"help": "av_digits: std of Gaussian noise on the [0, 1] images (a weaker image modality)"}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "keep only N training rows, evenly spaced over the split (a quick run or a debugging session)"}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "keep only N rows of every other split (validation, test), evenly spaced"}
    )
    preprocess: bool = field(
        default=False,
        metadata={
            "help": "run the modalities' processors over every split once before training (datasets.map) instead "
            "of in the data collator at every batch: faster when processing costs more than a step (audio features)"
        },
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
    modal_loss_weight: float | None = field(
        default=None, metadata={"help": "amw/afw: weight of Ada2I's L_modal (Eq. 13; default 1, Eq. 14)"}
    )
    feature_loss_weight: float | None = field(
        default=None, metadata={"help": "afw: weight of Ada2I's L_feature (Eq. 12; default 1, Eq. 14)"}
    )
    afw_rank: int = field(default=4, metadata={"help": "afw: tensor-ring rank r of the query/key cores (Ada2I Eq. 5)"})
    afw_beta: float = field(default=0.5, metadata={"help": "afw: weight beta of the original feature (Ada2I Eq. 7)"})
    amw_scale: float = field(default=1.0, metadata={"help": "amw/afw: scale of the modality-wise cosines (Ada2I Eq. 8)"})
    common_space_size: int | None = field(
        default=None, metadata={"help": "SUGRM d_c: project fused and unimodal features into a common space (ULGM)"}
    )
    mrm_reduction: int = field(default=4, metadata={"help": "mrm: bottleneck reduction of the recalibration (SUGRM 3.2.1)"})
    regression_loss: str = field(default="l1", metadata={"help": "regression: l1 (SUGRM) or mse"})


def load_data(data_args: DataArguments, kinds: dict[str, str] | None = None, sources: dict[str, str] | None = None):
    """The recipe's `DatasetDict`: a bundled / synthetic set, a saved folder or a manifest of files (`kinds`: column
    -> image | audio | frames | text | features, for a manifest). Every split gets a `sample_idx` column when the
    data has none. `sources` (field -> "flag" | "recipe <path>") lets an error say where a wrong value was set."""
    name = data_args.dataset_name
    if name == "mfeat":
        check_views(data_args, list(MFEAT_VIEWS), sources)
        return truncate_splits(load_mfeat(views=data_args.views, seed=data_args.split_seed), data_args)
    if name == "synthetic":
        dataset = make_synthetic_classification(num_samples=data_args.num_samples, seed=data_args.split_seed)
    elif name == "synthetic_regression":
        dataset = make_synthetic_regression(
            num_samples=data_args.num_samples, seed=data_args.split_seed, disagreement=data_args.disagreement
        )
    elif name == "av_digits":
        dataset = load_av_digits_data(data_args)
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
    if "train" not in dataset:
        raise RecipeError(f"dataset {dataset_label(name)!r} has no 'train' split (its splits: {list(dataset)})")
    dataset = truncate_splits(with_sample_ids(dataset), data_args)
    if data_args.views:
        check_views(data_args, feature_columns(dataset), sources)
        truths = [c for c in dataset["train"].column_names if c in {f"true_{v}" for v in data_args.views}]
        labels = [c for c in ("labels",) if c in dataset["train"].column_names]
        dataset = dataset.select_columns([*data_args.views, *labels, "sample_idx", *truths])
    return dataset


def load_av_digits_data(data_args: DataArguments):
    """`dataset_name: av_digits`: the FSDD + MNIST folders named by `fsdd_dir` / `mnist_dir`, split by speaker
    (`fold`), paired by `split_seed`."""
    missing = [flag for flag in ("fsdd_dir", "mnist_dir") if not getattr(data_args, flag)]
    if missing:
        raise RecipeError(
            f"dataset_name='av_digits' reads local copies of FSDD and MNIST: set {' and '.join(missing)} (e.g. "
            "--fsdd_dir free-spoken-digit-dataset/recordings --mnist_dir mnist)"
        )
    try:
        return load_av_digits(
            data_args.fsdd_dir, data_args.mnist_dir, fold=data_args.fold, seed=data_args.split_seed,
            image_noise=data_args.image_noise,
        )
    except ValueError as error:  # a missing folder / file, a bad fold: the message names it
        raise RecipeError(str(error)) from None


def truncate_splits(dataset, data_args: DataArguments):
    """`max_train_samples` rows of train and `max_eval_samples` of every other split, evenly spaced over the split
    (not the first N, as the transformers example scripts take: a split sorted by class, as av_digits is, would keep
    one class); `sample_idx` comes first, so the kept rows keep their ids."""
    limits = {"max_train_samples": data_args.max_train_samples, "max_eval_samples": data_args.max_eval_samples}
    for flag, limit in limits.items():
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise RecipeError(f"{flag} must be a whole number >= 1, got {limit!r}")
    truncated = {}
    for split, rows in dataset.items():
        limit = limits["max_train_samples" if split == "train" else "max_eval_samples"]
        if limit is None or limit >= len(rows):
            truncated[split] = rows
        else:
            truncated[split] = rows.select(np.linspace(0, len(rows) - 1, limit).round().astype(int).tolist())
    return type(dataset)(truncated)


def with_sample_ids(dataset):
    """`dataset` with a `sample_idx` column in every split (the methods key their per-sample state by it): where one is
    missing, ids 0..N-1 per split, continuing across splits (after the largest id of the splits that have one)."""
    missing = [split for split, part in dataset.items() if "sample_idx" not in part.column_names]
    if not missing:
        return dataset
    start = 0
    for split, part in dataset.items():
        if split not in missing and len(part):
            start = max(start, int(np.max(part.select_columns(["sample_idx"]).with_format("numpy")[:]["sample_idx"])) + 1)
    for split in missing:
        count = len(dataset[split])
        dataset[split] = dataset[split].add_column("sample_idx", np.arange(start, start + count, dtype=np.int64))
        start += count
    return dataset


def feature_columns(dataset) -> list[str]:
    """The modality columns of a dataset: all but labels, ids, masks and `true_<m>` (known unimodal labels of synthetic
    data, for diagnostics only)."""
    return [
        name for name in dataset["train"].column_names
        if name not in ("labels", "sample_idx") and not name.endswith("_attention_mask") and not name.startswith("true_")
    ]


def check_views(data_args: DataArguments, available: list[str], sources: dict[str, str] | None = None) -> None:
    """Refuse views that are not columns of the dataset, naming them, the dataset's own and where the views were set
    (a recipe's views carried to another `--dataset_name` are refused, not silently dropped)."""
    if not data_args.views:
        return
    missing = [view for view in data_args.views if view not in available]
    if not missing:
        return
    origin = (sources or {}).get("views", "")
    from_recipe = origin.startswith("recipe")
    overridden = from_recipe and (sources or {}).get("dataset_name") == "flag"
    which = "none of them is a column" if len(missing) == len(data_args.views) else f"{missing} are not columns"
    raise RecipeError(
        (f"the {origin} sets views {list(data_args.views)}" if from_recipe else f"--views {list(data_args.views)}")
        + f", but {which} of dataset {dataset_label(data_args.dataset_name)!r}"
        + (" (given with --dataset_name)" if overridden else "")
        + f", whose modality columns are {available}; pass --views {' '.join(available)} (or some of them) to choose"
        + (" this dataset's columns instead of the recipe's" if from_recipe else " among them")
    )


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
    for name in feature_columns(dataset):
        if names is not None and name not in names:
            continue
        feature = features[name]
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
    task_reason: str = ""  # why the task was inferred, e.g. "labels are float32" (-> regression)


def build_model(model_args: ModelArguments, data: PreparedData):
    """The model of the recipe; every `auto` modality with a `backbone` starts from that backbone's weights."""
    loss_weights = recipe_loss_weights(model_args, list(data.modality_settings))
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


def recipe_loss_weights(model_args: ModelArguments, names: list[str]) -> dict[str, float] | None:
    """`MMBalanceConfig.loss_weights` from the recipe's weight fields, or None (the config's default) when none is
    set. Unset fused / unimodal weights keep the default: 1 each when only the fused or only the unimodal weight is
    given (as before), the mean of the terms (BMMAL Eq. 1) when only an Ada2I term's weight is given."""
    head_weights = (model_args.fused_loss_weight, model_args.unimodal_loss_weight)
    auxiliary = {"modal": model_args.modal_loss_weight, "feature": model_args.feature_loss_weight}
    if all(weight is None for weight in (*head_weights, *auxiliary.values())):
        return None
    if any(weight is not None for weight in head_weights):
        default = 1.0
    else:
        default = 1.0 / (1 + len(names)) if model_args.unimodal_heads else 1.0
    fused = default if model_args.fused_loss_weight is None else model_args.fused_loss_weight
    unimodal = default if model_args.unimodal_loss_weight is None else model_args.unimodal_loss_weight
    weights = {"fused": fused, **({name: unimodal for name in names} if model_args.unimodal_heads else {})}
    return {**weights, **{term: weight for term, weight in auxiliary.items() if weight is not None}}


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


def prepare_dataset(data_args: DataArguments, model_args: ModelArguments, sources: dict[str, str] | None = None) -> PreparedData:
    """The recipe's `DatasetDict` (feature columns standardized if asked), each modality's settings, task, labels
    and the processor of its raw columns."""
    model_settings, processing = split_settings(model_args.modalities) if model_args.modalities else ({}, {})
    kinds = {column_of(n, processing[n]): data_kind(n, model_settings[n], processing[n]) for n in model_settings}
    dataset = load_data(data_args, kinds or None, sources)
    if "labels" not in dataset["train"].column_names:
        raise RecipeError(
            f"dataset {dataset_label(data_args.dataset_name)!r} has no 'labels' column (train columns: "
            f"{dataset['train'].column_names}); name the label column `labels`"
        )
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
    task, num_labels, reason = infer_task(dataset)
    processor = build_processor(model_settings, processing)
    if data_args.preprocess and processor is not None:
        dataset = preprocess_splits(dataset, processor)
    return PreparedData(dataset, settings, task, num_labels, processor, reason)


def preprocess_splits(dataset, processor):
    """Every split run through `processor` once (`Dataset.map`, rows unpadded), in torch format: the collator then
    only pads and stacks. The same batches as processing in the collator (tests/test_processing.py)."""
    try:
        with quiet_library_progress():
            processed = dataset.map(processor.transform, batched=True, remove_columns=processor.raw_columns)
    except ValueError as error:  # an unreadable file or value: the processor's message names the modality
        raise RecipeError(str(error)) from None
    return processed.with_format("torch")


def infer_task(dataset) -> tuple[str, int, str]:
    """(task, num_labels, why) from the train split's `labels`: float labels mean regression (1 output); a ClassLabel
    or integer labels mean classification. `why` names the labels' type, e.g. "labels are float32"."""
    feature = dataset["train"].features["labels"]
    dtype = str(getattr(feature, "dtype", ""))
    if dtype.startswith("float"):
        return "regression", 1, f"labels are {dtype}"
    num_classes = getattr(feature, "num_classes", None)
    if num_classes:
        return "classification", num_classes, f"labels are a ClassLabel with {num_classes} classes"
    labels = dataset["train"].select_columns(["labels"]).with_format("numpy")[:]["labels"]
    if not np.issubdtype(np.asarray(labels).dtype, np.integer):
        raise RecipeError(f"labels of dtype {dtype or type(feature).__name__} are neither class ids (integers or a "
                          "ClassLabel: classification) nor floats (regression)")
    num_labels = int(np.max(labels)) + 1 if len(labels) else 0
    return "classification", num_labels, f"labels are {dtype}, {num_labels} classes (the largest label + 1)"


# Which task each method needs (the CLI checks it before building the model; the callbacks check again at train start).
CLASSIFICATION_ONLY = {
    "modulation": "modulation is classification-only (it scores each modality by the softmax probability of the true class)",
}
REGRESSION_ONLY = {
    "ulgm": "ulgm generates unimodal labels for a regression task (labels in [-H, H])",
}


def method_task_problem(name: str, config: Any, task: str) -> str | None:
    """Why method `name` (with `config`) cannot run on `task`, or None when it can."""
    if task != "classification" and name in CLASSIFICATION_ONLY:
        return CLASSIFICATION_ONLY[name]
    if task != "regression" and name in REGRESSION_ONLY:
        return REGRESSION_ONLY[name]
    if name == "bss" and task != "classification" and config is not None:
        learned = getattr(config, "scheduler", None) == "learned"
        similarity = config.similarity if learned else config.criterion
        if "prediction_similarity" in str(similarity):
            option = f"similarity={config.similarity!r}" if learned else f"criterion={config.criterion!r}"
            return (f"bss {option} compares class probabilities and is classification-only (use a feature_similarity "
                    "criterion for regression)")
    return None


def check_methods_fit_task(callbacks: dict[str, Any], data: PreparedData) -> None:
    for name, callback in callbacks.items():
        problem = method_task_problem(name, getattr(callback, "config", None), data.task)
        if problem is None:
            continue
        fix = (" (for classification, store the labels as integers or a ClassLabel)" if data.task == "regression"
               else " (e.g. --dataset_name synthetic_regression)")
        raise RecipeError(f"{problem}, but this dataset's task is {data.task} ({data.task_reason}: {data.task}){fix}")


def build_callbacks(method_sections: dict[str, dict]) -> dict[str, Any]:
    """Method name -> its callback, one per section (option errors become one-line messages)."""
    callbacks = {}
    for name, options in method_sections.items():
        try:
            (callbacks[name],) = build_method_callbacks({name: options})
        except (TypeError, ValueError) as error:
            raise RecipeError(str(error) if str(error).startswith(name) else f"{name}: {error}") from None
    return callbacks


class TrainingStarted(TrainerCallback):
    """Marks the first training step: a `ValueError` raised before it is a bad input (one line), after it a bug."""

    def on_step_begin(self, args, state, control, **kwargs):
        RunPhase.training_started = True


def resolve_resume(value, output_dir: str | None):
    """`--resume_from_checkpoint` as `Trainer.train` takes it: true / last -> True (the latest complete checkpoint of
    output_dir); a checkpoint folder -> itself; an output directory -> its latest complete checkpoint."""
    if value is None or value is False:
        return None
    text = str(value).strip()
    if value is True or text.lower() in ("true", "last", "latest"):
        if output_dir is None or last_complete_checkpoint(output_dir) is None:
            raise RecipeError(
                f"--resume_from_checkpoint {text}: no complete checkpoint-<step> folder in output_dir {output_dir} to "
                "resume from (drop the flag to start a new run)"
            )
        return True
    if text.lower() in ("", "false", "no", "none", "null"):
        return None
    if not os.path.exists(text):
        raise RecipeError(
            f"--resume_from_checkpoint {text}: no such folder; give a checkpoint-<step> folder, an output directory "
            f"(its latest complete checkpoint is used) or true / last (the latest in output_dir {output_dir})"
        )
    if not os.path.isdir(text):
        raise RecipeError(f"--resume_from_checkpoint {text}: a file, not a checkpoint folder")
    if re.fullmatch(r"checkpoint-\d+", os.path.basename(os.path.normpath(text))) or is_complete_checkpoint(text):
        return text  # an interrupted (incomplete) checkpoint given by path is refused by MultimodalTrainer, by name
    latest = last_complete_checkpoint(text)
    if latest is None:
        raise RecipeError(
            f"--resume_from_checkpoint {text}: neither a checkpoint folder nor an output directory with a complete "
            "checkpoint-<step> folder"
        )
    if output_dir is not None and os.path.realpath(text) == os.path.realpath(output_dir):
        return True  # MultimodalTrainer picks the same latest complete checkpoint
    return latest


def check_eval_split(training_args: TrainingArguments, dataset, data_args: DataArguments, has_eval: bool) -> None:
    """`eval_strategy` other than "no" needs an evaluation split: say which one is missing and what to do."""
    strategy = getattr(training_args.eval_strategy, "value", training_args.eval_strategy)
    if strategy == "no" or has_eval:
        return
    fixes = "--eval_strategy no" + (" --load_best_model_at_end false" if training_args.load_best_model_at_end else "")
    raise RecipeError(
        f"eval_strategy={strategy!r} evaluates on the 'validation' split, and dataset "
        f"{dataset_label(data_args.dataset_name)!r} has only the splits {list(dataset)}: add a 'validation' split to "
        f"the dataset, or pass {fixes}"
    )


def parse_train_args(argv: list[str]):
    """`hf-mmbalance train` flags -> (DataArguments, ModelArguments, TrainingArguments, method sections)."""
    return parse_recipe_and_flags(
        (DataArguments, ModelArguments, TrainingArguments), argv, method_names=tuple(METHOD_REGISTRY),
        method_options={name: entry.config_class for name, entry in METHOD_REGISTRY.items()},
    )


def describe_run(command: str, data: PreparedData, training_args: TrainingArguments) -> str:
    device = getattr(training_args.device, "type", training_args.device)
    return (f"hf-mmbalance {command}: {data.task_reason}: {data.task}; modalities {', '.join(data.modality_settings)}; "
            f"world size {training_args.world_size} ({device})")


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


def build_trainer(
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: TrainingArguments,
    method_sections: dict[str, dict] | None = None,
    *,
    sources: dict[str, str] | None = None,
    data: PreparedData | None = None,
) -> tuple[MultimodalTrainer, PreparedData]:
    """The recipe's `MultimodalTrainer` (model, methods, train / validation splits, processor) and its data, every
    input checked first. `data`: a `prepare_dataset` result of the same data and model arguments to reuse (a
    benchmark training many recipes on one fold), else the data are prepared here."""
    callbacks = build_callbacks(method_sections or {})
    set_seed(training_args.seed)
    if data is None:
        data = prepare_dataset(data_args, model_args, sources)
    check_methods_fit_task(callbacks, data)
    dataset = data.dataset
    check_eval_split(training_args, dataset, data_args, "validation" in dataset)
    model = build_model(model_args, data)
    try:
        trainer = MultimodalTrainer(
            model=model,
            args=training_args,
            train_dataset=dataset["train"],
            eval_dataset=dataset["validation"] if "validation" in dataset else None,
            callbacks=[*callbacks.values(), TrainingStarted()],
            processing_class=data.processor,
            method_state_on_resume=data_args.method_state_on_resume,
        )
    except ValueError as error:  # dataset validation: the message names the column
        raise RecipeError(str(error)) from None
    return trainer, data


def run_train(
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: TrainingArguments,
    method_sections: dict[str, dict] | None = None,
    *,
    sources: dict[str, str] | None = None,
) -> dict:
    build_callbacks(method_sections or {})  # the methods' options are checked before the output folder is read
    if data_args.balance_report:
        from ..diagnose import read_diagnosis

        read_diagnosis(data_args.balance_report)  # a missing / wrong file is refused before training
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    trainer, data = build_trainer(data_args, model_args, training_args, method_sections, sources=sources)
    dataset = data.dataset
    if trainer.is_world_process_zero():
        print(describe_run("train", data, training_args)
              + (f"; resuming from {resume if resume is not True else 'the latest checkpoint in ' + str(training_args.output_dir)}"
                 if resume else ""), flush=True)
    train_result = trainer.train(resume_from_checkpoint=resume)
    metrics = {f"train_{k}" if not k.startswith("train") else k: v for k, v in train_result.metrics.items()}
    if "validation" in dataset:
        metrics.update(trainer.evaluate())
    if data_args.test_split and data_args.test_split in dataset:
        metrics.update(trainer.evaluate(dataset[data_args.test_split], metric_key_prefix="test"))
    if trainer.is_world_process_zero():
        write_run_outputs(trainer, metrics, data_args, training_args)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset=dataset_label(data_args.dataset_name))
    if training_args.world_size > 1:
        trainer.end()  # several processes (accelerate launch / torchrun): destroy the process group
    return metrics


def write_run_outputs(trainer, metrics: dict, data_args: DataArguments, training_args: TrainingArguments) -> None:
    output_dir = training_args.output_dir
    names = trainer.model.config.modality_names
    with quiet_library_progress(transformers=training_args.disable_tqdm):
        trainer.save_model(output_dir)
    with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2, sort_keys=True)
    with open(os.path.join(output_dir, "log_history.json"), "w", encoding="utf-8") as handle:
        json.dump(trainer.state.log_history, handle, indent=1)
    plots = plot_training_curves(trainer.state.log_history, names, output_dir)
    for callback in trainer.balancing_callbacks:
        plots += callback.plot_diagnostics(trainer.state.log_history, output_dir)
    summary = plot_imbalance_summary(metrics, names, output_dir)
    plots = list(dict.fromkeys([*plots, *([summary] if summary else [])]))  # BSS redraws the curves on its epochs
    trainer.create_model_card(dataset=dataset_label(data_args.dataset_name))
    if data_args.balance_report:
        from ..diagnose import balance_report_section, read_diagnosis
        from ..hub.model_card import add_card_section

        add_card_section(os.path.join(output_dir, "README.md"), balance_report_section(read_diagnosis(data_args.balance_report)))
    prefix = "test" if any(key.startswith("test_") for key in metrics) else "eval"
    print(f"\nPer-modality report ({prefix} split, {dataset_label(data_args.dataset_name)}, fusion={trainer.model.config.fusion}):")
    print(format_report(metrics, names, prefix))
    print(f"\nwrote: {os.path.join(output_dir, 'metrics.json')}, model card README.md, plots {plots}")
