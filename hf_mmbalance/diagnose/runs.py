"""The trainings of a diagnosis (issue 17): each modality alone, the joint vanilla model and, with `--budget full`,
the joint model under each balancing method; one seed each or several. Each training is a *part*, stored as JSON
(plus its weights) under `<output_dir>/diagnose_parts/` when it finishes, so a rerun skips it; a stored part made
with another configuration is refused by name (`DiagnoseError`), before anything is trained.

Every training uses the recipe's model settings and optimizer through the train command's own functions
(`cli.train.build_model`, `MultimodalTrainer`), evaluates on the validation split after every epoch and keeps the
best epoch's weights (the checkpoint picked on validation: max accuracy, or min MAE for regression, the earliest on
a tie, as `plotting.best_epoch`), held in memory instead of written as checkpoints. The joint vanilla model of a
classification task also carries `GradientModulationCallback(monitor_only=True)`, which logs the disparity ratios
rho_m (Ada2I Eq. 17) without touching a gradient.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PrinterCallback, TrainerCallback, set_seed

from ..cli.train import TrainingStarted, build_callbacks, build_model
from ..methods.bss import BSSCallback
from ..methods.bss.diagnostics import curriculum_epoch_of_step
from ..methods.modulation import GradientModulationCallback, ModulationConfig
from ..plotting import SELECTION_METRICS, epoch_of_entry
from ..progress import quiet_library_progress
from ..trainer import MultimodalTrainer
from ..trainer.checkpoint_state import write_json_atomic
from .config import DiagnoseError
from .measures import bss_unbalanced, labels_of, rho_curves, shapley_summary, split_features
from .probes import probe_scores

PARTS_DIR = "diagnose_parts"
PART_VERSION = 1  # bump when what a part measures changes: older part files are then refused, not mixed in
# TrainingArguments fields that do not change what a part learns or measures (left out of its fingerprint).
UNTRACKED_TRAINING_FIELDS = {
    "output_dir", "logging_dir", "disable_tqdm", "report_to", "push_to_hub", "hub_model_id", "hub_strategy",
    "hub_token", "hub_private_repo", "hub_always_push", "hub_revision", "run_name", "eval_strategy", "save_strategy",
    "save_steps", "save_total_limit", "logging_strategy", "logging_steps", "logging_first_step", "eval_steps",
    "resume_from_checkpoint", "overwrite_output_dir", "num_train_epochs", "seed", "load_best_model_at_end",
    "metric_for_best_model", "greater_is_better", "per_device_eval_batch_size", "dataloader_num_workers",
    "dataloader_persistent_workers", "dataloader_prefetch_factor", "do_train", "do_eval", "do_predict",
}


@dataclass(frozen=True)
class Part:
    """One training: `kind` solo (one modality) or joint (all), `method` vanilla or a balancing method's name."""

    kind: str
    method: str
    views: tuple[str, ...]
    seed: int

    @property
    def name(self) -> str:
        what = self.views[0] if self.kind == "solo" else self.method
        return f"{self.kind}-{what}-seed{self.seed}"


@dataclass
class DiagnosisContext:
    """What every part needs: the prepared data (`cli.train.PreparedData`), the recipe's model and training
    arguments, the method sections, the epochs and where the parts are stored."""

    data: Any
    model_args: Any
    training_args: Any
    method_sections: dict[str, dict]
    epochs: float
    output_dir: str
    config: Any  # DiagnoseConfig
    bss_criterion: str
    fingerprint_base: dict = field(default_factory=dict)


def selection_metric(task: str) -> tuple[str, bool]:
    """(eval key, higher is better) that picks the epoch: the first of `plotting.SELECTION_METRICS` for the task."""
    wanted = "eval_accuracy" if task == "classification" else "eval_mae"
    return next((key, higher) for key, higher in SELECTION_METRICS if key == wanted)


class BestOnValidation(TrainerCallback):
    """Keeps a copy of the weights of the best validation evaluation so far and loads it when training ends: the
    checkpoint picked on validation, without writing checkpoints (a tie keeps the earlier epoch)."""

    def __init__(self, metric: str, higher: bool):
        self.metric, self.higher = metric, higher
        self.best_value: float | None = None
        self.best_epoch: float | None = None
        self.best_step: int | None = None
        self._weights: dict[str, torch.Tensor] | None = None

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is None or model is None:
            return
        better = self.best_value is None or (value > self.best_value if self.higher else value < self.best_value)
        if better:
            self.best_value, self.best_epoch, self.best_step = float(value), float(state.epoch or 0), state.global_step
            self._weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._weights is not None and model is not None:
            model.load_state_dict(self._weights)


def training_fingerprint(training_args) -> dict:
    """The TrainingArguments fields that shape a part (see `UNTRACKED_TRAINING_FIELDS`), as JSON values."""
    values = training_args.to_dict()
    return {k: v for k, v in sorted(values.items()) if k not in UNTRACKED_TRAINING_FIELDS and not k.startswith("_")}


def method_model_overrides(part: Part, context: DiagnosisContext) -> dict[str, Any]:
    """Model settings a method needs that a vanilla recipe may lack: ULGM trains unimodal heads on its generated
    labels (SUGRM §3.3), and its SUGRM variant compares F*_s with F*_m in one common space (§3.2: common_space_size,
    here the recipe's feature_size when the recipe sets none). Every other part uses the recipe's model as is."""
    if part.method != "ulgm":
        return {}
    overrides: dict[str, Any] = {"unimodal_heads": True}
    variant = context.method_sections.get("ulgm", {}).get("variant", "sugrm")
    if variant == "sugrm" and context.model_args.common_space_size is None:
        overrides["common_space_size"] = context.model_args.feature_size
    return overrides


def part_fingerprint(part: Part, context: DiagnosisContext) -> dict:
    return json.loads(json.dumps({
        **context.fingerprint_base,
        "version": PART_VERSION,
        "part": dataclasses.asdict(part),
        "epochs": context.epochs,
        "method_options": context.method_sections.get(part.method, {}) if part.method != "vanilla" else {},
        "model_overrides": method_model_overrides(part, context) or None,  # None: the recipe's model as is
    }, sort_keys=True, default=str))


def part_path(output_dir: str, part: Part) -> str:
    return os.path.join(output_dir, PARTS_DIR, f"{part.name}.json")


def _differences(saved: Any, wanted: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(wanted, dict):
        keys = sorted(set(saved) | set(wanted))
        return [d for k in keys for d in _differences(saved.get(k), wanted.get(k), f"{prefix}{k}.")]
    return [] if saved == wanted else [f"{prefix.rstrip('.')}: {saved!r} -> {wanted!r}"]


def stored_part(part: Part, context: DiagnosisContext) -> dict | None:
    """The stored record of `part`, or None when it has not finished yet; a file from another configuration (or an
    unreadable one) is refused by name."""
    path = part_path(context.output_dir, part)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)
        saved, record = stored["fingerprint"], stored["record"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DiagnoseError(f"{path} is not a readable diagnosis part ({error}); delete it to retrain that part") from None
    # A field missing on one side counts as None: a field added to the arguments later, unset, changes nothing.
    changed = _differences(saved, part_fingerprint(part, context))
    if changed:
        raise DiagnoseError(
            f"{path} was computed with another configuration ({'; '.join(changed[:4])}"
            f"{' ...' if len(changed) > 4 else ''}); use another --output_dir, or delete {os.path.dirname(path)} "
            "to diagnose again"
        )
    return record


def _restricted(data, views: tuple[str, ...]):
    """`data` (`PreparedData`) with only `views` as modalities (their settings and processors)."""
    if list(views) == list(data.modality_settings):
        return data
    processor = data.processor
    if processor is not None:
        from ..processing import MultimodalProcessor

        kept = {n: m for n, m in processor.modalities.items() if n in views}
        processor = None if not kept else MultimodalProcessor(
            {n: m.processor for n, m in kept.items()}, columns={n: m.column for n, m in kept.items()},
            main_inputs={n: m.main_input for n, m in kept.items()}, frames={n: m.frames for n, m in kept.items()},
            processor_kwargs={n: m.processor_kwargs for n, m in kept.items()},
        )
    settings = {name: data.modality_settings[name] for name in views}
    return dataclasses.replace(data, modality_settings=settings, processor=processor)


def _part_arguments(part: Part, context: DiagnosisContext, output_dir: str):
    return dataclasses.replace(
        context.training_args, output_dir=output_dir, seed=part.seed, num_train_epochs=context.epochs,
        eval_strategy="epoch", save_strategy="no", logging_strategy="epoch", load_best_model_at_end=False,
        disable_tqdm=True, push_to_hub=False, report_to=[], resume_from_checkpoint=None,
    )


def _bare(metrics: dict, prefix: str) -> dict[str, float]:
    return {k[len(prefix) + 1:]: float(v) for k, v in metrics.items() if k.startswith(prefix + "_")
            and isinstance(v, (int, float)) and not k.endswith(("_runtime", "_per_second"))}


def train_part(part: Part, context: DiagnosisContext) -> dict:
    """Train `part`, measure it and return its record (see the module docstring); the weights go to
    `<output_dir>/diagnose_parts/<part>/`."""
    data = _restricted(context.data, part.views)
    dataset = data.dataset
    task = data.task
    folder = os.path.join(context.output_dir, PARTS_DIR, part.name)
    callbacks = list(build_callbacks({part.method: context.method_sections.get(part.method, {})}).values()) \
        if part.method != "vanilla" else []
    monitored = part.kind == "joint" and task == "classification" and len(part.views) > 1
    if monitored and part.method != "modulation":
        callbacks.append(GradientModulationCallback(ModulationConfig(mode="ada2i", monitor_only=True, noise=False)))
    metric, higher = selection_metric(task)
    best = BestOnValidation(metric, higher)
    set_seed(part.seed)
    overrides = method_model_overrides(part, context)
    model = build_model(dataclasses.replace(context.model_args, **overrides), data)
    args = _part_arguments(part, context, folder)
    trainer = MultimodalTrainer(
        model=model, args=args, train_dataset=dataset["train"], eval_dataset=dataset["validation"],
        callbacks=[*callbacks, best, TrainingStarted()], processing_class=data.processor,
        method_state_on_resume="restart",
    )
    trainer.remove_callback(PrinterCallback)  # the diagnosis reports each part itself
    start = time.perf_counter()
    with quiet_library_progress(transformers=True):
        trainer.train()
    seconds = time.perf_counter() - start
    model = trainer.model
    # BSS lays its curriculum epochs out in one Trainer pass: its evaluations are placed by curriculum epoch
    epoch_of_step = next((curriculum_epoch_of_step(cb) for cb in callbacks if isinstance(cb, BSSCallback)), None)
    best_epoch = best.best_epoch if epoch_of_step is None or best.best_step is None else float(epoch_of_step(best.best_step))
    splits = [s for s in ("validation", "test") if s in dataset]
    record: dict[str, Any] = {
        "part": part.name, "kind": part.kind, "method": part.method, "views": list(part.views), "seed": part.seed,
        "epochs": context.epochs, "best_epoch": best_epoch, "selection_metric": metric,
        "train_seconds": round(seconds, 3), "model_overrides": overrides, "metrics": {},
    }
    for split in splits:
        prefix = "eval" if split == "validation" else split
        record["metrics"][split] = _bare(trainer.evaluate(dataset[split], metric_key_prefix=prefix), prefix)
    collate = trainer._method_collator
    batch = args.per_device_eval_batch_size
    with quiet_library_progress():
        features = {s: split_features(model, dataset[s], batch, collate) for s in ["train", *splits]}
        labels = {s: labels_of(dataset[s]) for s in ["train", *splits]}
    numpy_features = {s: {m: z.numpy() for m, z in f.items()} for s, f in features.items()}
    record["probe"] = probe_scores(numpy_features["train"], labels["train"],
                                   {s: (numpy_features[s], labels[s]) for s in splits}, task, context.config.probe_max_iter)
    if part.kind == "joint":
        record["shapley"] = {s: shapley_summary(model, features[s], task) for s in splits} if len(part.views) > 1 else {}
        record["rho"] = rho_curves(trainer.state.log_history, list(part.views), epoch_of_entry(epoch_of_step)) if task == "classification" else {}
        record["bss"] = _bss_summary(model, dataset["train"], context, collate, batch) if len(part.views) > 1 else None
    with quiet_library_progress(transformers=True):
        model.save_pretrained(folder)
    write_json_atomic(part_path(context.output_dir, part), {"fingerprint": part_fingerprint(part, context),
                                                           "record": record}, indent=1)
    return record


def _bss_summary(model, train, context: DiagnosisContext, collate, batch: int) -> dict | None:
    try:
        return bss_unbalanced(model, train, context.bss_criterion, context.config.bss_threshold,
                              batch_size=batch, collate_fn=collate)
    except ValueError as error:  # e.g. feature similarity of modalities with different feature sizes
        return {"criterion": context.bss_criterion, "fraction_unbalanced": None, "not_measured": str(error)}


__all__ = ["BestOnValidation", "DiagnosisContext", "PARTS_DIR", "Part", "part_fingerprint", "stored_part", "train_part"]
