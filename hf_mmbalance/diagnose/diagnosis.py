"""`diagnose_balance`: is a multimodal model imbalanced, by how much, and what would help? (issue 17)

It plans the trainings (`runs.Part`: every modality alone and the joint vanilla model per seed; with `budget="full"`
also the joint model under every applicable balancing method), trains the ones not stored yet (`runs.train_part`),
aggregates their numbers over the seeds, states the verdict (`verdict.py`) and writes `diagnosis.json`,
`diagnosis.md` and `diagnosis.png` into the output directory (`report.py`, `plot.py`).

Layer: this sits beside the `cli` commands, not under them: it reads a recipe exactly as `hf-mmbalance train` does,
through the train command's own functions (`prepare_dataset`, `build_model`, `build_callbacks`,
`method_task_problem`), so it accepts any dataset and model the train command accepts and refuses bad input with
the same errors. Nothing below (methods, trainer, modeling, data, hub) imports it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..cli.parser import RecipeError
from ..cli.train import build_callbacks, method_task_problem, prepare_dataset
from ..methods.bss import BSSConfig
from ..methods.bss.measurer import criterion_parts
from ..progress import progress, progress_disabled
from .config import DIAGNOSE_METHODS, DiagnoseConfig, DiagnoseError
from .probes import probe_metric
from .report import write_outputs
from .runs import DiagnosisContext, Part, stored_part, train_part, training_fingerprint
from .verdict import build_verdict, rank_methods, stats

# DataArguments fields that do not change what is trained or measured.
UNTRACKED_DATA_FIELDS = ("method_state_on_resume", "balance_report")


def diagnose_balance(data_args, model_args, training_args, config: DiagnoseConfig | None = None,
                     method_sections: Mapping[str, dict] | None = None, *, sources: Mapping[str, str] | None = None,
                     log=print, command: str | None = None) -> dict[str, Any]:
    """Diagnose the modality balance of the recipe (`cli.train.DataArguments`, `ModelArguments`,
    `TrainingArguments`) and return the diagnosis (the content of `diagnosis.json`).

    `config`: `DiagnoseConfig` (budget, seeds, epochs, methods, BSS criterion); `method_sections`: the recipe's
    method sections (`{"bss": {...}}`), the options of the methods `budget="full"` compares. Results go to
    `training_args.output_dir`; a rerun there skips every finished part and refuses parts stored with another
    configuration. `log`: where the per-part progress lines go (None: nowhere); `command`: the command line, recorded
    in the outputs.
    """
    config = config or DiagnoseConfig()
    log = log or (lambda *_: None)
    method_sections = {name: dict(options) for name, options in (method_sections or {}).items()}
    build_callbacks(method_sections)  # options checked before any data is loaded, as the train command does
    data = prepare_dataset(data_args, model_args, dict(sources or {}))
    names = list(data.modality_settings)
    if len(names) < 2:
        raise DiagnoseError(f"diagnose compares modalities and needs at least 2; the recipe has {names}")
    if "validation" not in data.dataset:
        raise DiagnoseError(f"diagnose picks each training's epoch on the 'validation' split, and the dataset has only "
                            f"the splits {list(data.dataset)}: add a 'validation' split")
    methods = _methods(config, data, method_sections)
    epochs = float(config.diagnose_epochs or training_args.num_train_epochs)
    if "bss" in methods and "t_grow" not in method_sections.get("bss", {}):
        # BSSConfig's t_grow (40) is for longer runs: use all samples from 3/4 of the budget (as bss_heuristic.yaml).
        method_sections.setdefault("bss", {})["t_grow"] = max(1, int(0.75 * epochs))
    criterion = config.bss_criterion or method_sections.get("bss", {}).get("criterion") or BSSConfig().criterion
    try:
        criterion_parts(criterion)
    except ValueError as error:
        raise DiagnoseError(f"bss_criterion: {error}") from None
    output_dir = training_args.output_dir
    seeds = [int(training_args.seed) + i for i in range(config.seeds_count)]
    parts = [Part("solo", "vanilla", (m,), s) for s in seeds for m in names]
    parts += [Part("joint", method, tuple(names), s) for method in ("vanilla", *methods) for s in seeds]
    context = DiagnosisContext(
        data=data, model_args=model_args, training_args=training_args, method_sections=method_sections,
        epochs=epochs, output_dir=output_dir, config=config, bss_criterion=criterion,
        fingerprint_base={
            "data": {k: v for k, v in dataclasses.asdict(data_args).items() if k not in UNTRACKED_DATA_FIELDS},
            "model": dataclasses.asdict(model_args), "modalities": data.modality_settings,
            "training": training_fingerprint(training_args),
            "measures": {"probe_max_iter": config.probe_max_iter, "bss_criterion": criterion,
                         "bss_threshold": config.bss_threshold},
        },
    )
    records = {part: stored_part(part, context) for part in parts}  # a changed configuration is refused up front
    done = sum(record is not None for record in records.values())
    log(f"hf-mmbalance diagnose: {data.task_reason}: {data.task}; modalities {', '.join(names)}; budget "
        f"{config.budget}: {len(parts)} trainings of {epochs:g} epochs ({len(seeds)} seed{'s' * (len(seeds) > 1)}"
        f"{'; methods ' + ', '.join(methods) if methods else ''}){f'; {done} already done in {output_dir}' if done else ''}")
    os.makedirs(output_dir, exist_ok=True)
    bar = progress(total=len(parts), desc="diagnose", unit="training", disable=progress_disabled(training_args))
    with bar:
        for index, part in enumerate(parts, start=1):
            if records[part] is None:
                start = time.perf_counter()
                records[part] = train_part(part, context)
                status = f"trained in {time.perf_counter() - start:.1f}s"
            else:
                status = "stored, skipped"
            record = records[part]
            metric_key = "accuracy" if data.task == "classification" else "mae"
            line = (f"[{index}/{len(parts)}] {part.name}: {status}; best epoch {record['best_epoch']:g}, validation "
                    f"{metric_key} {record['metrics']['validation'].get(metric_key):.4f}")
            if bar.disable or log is not print:
                log(line)
            else:
                bar.write(line, file=sys.stderr)  # above the bar (on stderr), not through it
            bar.update(1)
    diagnosis = aggregate(records, names, data, config, seeds, methods, epochs, criterion)
    diagnosis["command"] = command
    diagnosis["verdict"] = build_verdict(diagnosis)
    diagnosis["files"] = write_outputs(diagnosis, output_dir)
    return diagnosis


def _methods(config: DiagnoseConfig, data, method_sections: Mapping[str, dict]) -> list[str]:
    """The methods `budget="full"` compares: the asked ones (refused where the task does not fit, with the train
    command's reason), else every one of `DIAGNOSE_METHODS` that fits the task."""
    if config.budget != "full":
        return []
    asked = config.diagnose_methods
    methods = []
    for name in asked if asked is not None else DIAGNOSE_METHODS:
        options = method_sections.get(name, {})
        problem = method_task_problem(name, next(iter(build_callbacks({name: options}).values())).config, data.task)
        if problem is None:
            methods.append(name)
        elif asked is not None:
            raise RecipeError(f"diagnose_methods: {problem}, but this dataset's task is {data.task} ({data.task_reason})")
    return methods


def _series(records, parts, getter) -> list[float]:
    return [float(getter(records[p])) for p in parts]


def aggregate(records: Mapping[Part, dict], names: list[str], data, config: DiagnoseConfig, seeds: list[int],
              methods: list[str], epochs: float, criterion: str) -> dict[str, Any]:
    """The diagnosis dict (without its verdict) from the parts' records: every number over the seeds."""
    task = data.task
    dataset = data.dataset
    splits = [s for s in ("validation", "test") if s in dataset]
    metric, higher = ("accuracy", True) if task == "classification" else ("mae", False)
    keys = ("accuracy", "f1_macro") if task == "classification" else ("mae", "pearson")
    joint = {method: [Part("joint", method, tuple(names), s) for s in seeds] for method in ("vanilla", *methods)}
    solo = {m: [Part("solo", "vanilla", (m,), s) for s in seeds] for m in names}
    vanilla = joint["vanilla"]
    report_split = "test" if "test" in splits else "validation"

    modalities: dict[str, Any] = {}
    for m in names:
        entry: dict[str, Any] = {
            "alone": {s: {k: stats(_series(records, solo[m], lambda r: r["metrics"][s][k])) for k in keys} for s in splits},
            "alone_probe": {s: stats(_series(records, solo[m], lambda r: r["probe"][s][m])) for s in splits},
            "joint_probe": {s: stats(_series(records, vanilla, lambda r: r["probe"][s][m])) for s in splits},
        }
        entry["gap"] = {s: stats([a - j for a, j in zip(entry["alone_probe"][s]["values"], entry["joint_probe"][s]["values"])])
                        for s in splits}
        head_key = f"unimodal_{m}_{metric}"
        entry["unimodal_head"] = (
            {s: {k: stats(_series(records, vanilla, lambda r: r["metrics"][s][f"unimodal_{m}_{k}"])) for k in keys}
             for s in splits} if head_key in records[vanilla[0]]["metrics"][splits[0]] else None
        )
        entry["shapley"] = {s: _shapley_over_seeds([records[p]["shapley"][s][m] for p in vanilla]) for s in splits}
        entry["rho"] = _rho_over_seeds([records[p]["rho"].get(m, []) for p in vanilla]) if task == "classification" else None
        modalities[m] = entry

    bss_records = [records[p]["bss"] for p in vanilla]
    fractions = [b["fraction_unbalanced"] for b in bss_records if b and b.get("fraction_unbalanced") is not None]
    diagnosis: dict[str, Any] = {
        "version": 1,
        "task": task,
        "task_reason": data.task_reason,
        "modality_names": names,
        "budget": config.budget,
        "seeds": seeds,
        "epochs": epochs,
        "metric": {"name": metric, "higher_is_better": higher, "probe": probe_metric(task), "keys": list(keys)},
        "splits": splits,
        "report_split": report_split,
        "split_sizes": {s: len(dataset[s]) for s in ("train", *splits)},
        "fused": {s: {k: stats(_series(records, vanilla, lambda r: r["metrics"][s][k])) for k in keys} for s in splits},
        "modalities": modalities,
        "bss": {"criterion": criterion, "threshold": config.bss_threshold,
                "fraction_unbalanced": stats(fractions) if fractions else None,
                "per_seed": bss_records},
        "best_epochs": {p.name: records[p]["best_epoch"] for p in records},
        "train_seconds": {p.name: records[p]["train_seconds"] for p in records},
        "config": config.to_dict(),
        "ranking": None,
    }
    if methods:
        weak = max(names, key=lambda m: modalities[m]["gap"][report_split]["mean"])
        alone = modalities[weak]["alone_probe"][report_split]["values"]
        by_method = {
            method: {
                "validation": _series(records, parts, lambda r: r["metrics"]["validation"][metric]),
                "gap": [a - records[p]["probe"][report_split][weak] for a, p in zip(alone, parts)],
                "probe": {m: stats(_series(records, parts, lambda r: r["probe"][report_split][m])) for m in names},
            }
            for method, parts in joint.items()
        }
        ranking = rank_methods(by_method, weak, metric, higher, len(dataset["validation"]))
        for row in ranking["rows"]:
            row["probe"] = by_method[row["method"]]["probe"]
        diagnosis["ranking"] = ranking
    return diagnosis


def _shapley_over_seeds(summaries: list[dict]) -> dict[str, Any]:
    """Per-seed Shapley summaries of one modality -> mean Phi and dominant fraction over seeds, quantiles averaged,
    histogram counts summed."""
    result = {
        "mean": stats([s["mean"] for s in summaries]),
        "dominant_fraction": stats([s["dominant_fraction"] for s in summaries]),
        "quantiles": {q: float(np.mean([s["quantiles"][q] for s in summaries])) for q in summaries[0]["quantiles"]},
        "histogram": {"edges": summaries[0]["histogram"]["edges"],
                      "counts": np.sum([s["histogram"]["counts"] for s in summaries], axis=0).astype(int).tolist()},
    }
    if "mean_phi" in summaries[0]:
        result["mean_phi"] = stats([s["mean_phi"] for s in summaries])
    return result


def _rho_over_seeds(curves: list[list[list[float]]]) -> dict[str, Any]:
    """rho_m curves of the seeds -> the mean curve (by logged epoch) and the mean over training and seeds."""
    by_epoch: dict[float, list[float]] = {}
    for curve in curves:
        for epoch, value in curve:
            by_epoch.setdefault(round(epoch, 6), []).append(value)
    curve = [[epoch, float(np.mean(values))] for epoch, values in sorted(by_epoch.items())]
    means = [float(np.mean([v for _, v in c])) for c in curves if c]
    return {"curve": curve, "mean": float(np.mean(means)) if means else None, "per_seed_mean": means}


__all__ = ["aggregate", "diagnose_balance"]
