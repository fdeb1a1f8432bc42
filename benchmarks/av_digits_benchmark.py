"""Audio-visual digits benchmark (issue 13): every balancing method against vanilla on real recordings.

FSDD spoken digits paired with same-digit MNIST images (`hf_mmbalance.data.load_av_digits`), split by speaker.
Every run trains one recipe of `recipes/av_digits/` exactly as `hf-mmbalance train` does (the same argument parsing,
data preparation and `build_trainer`), with only the fold, the seed and the method's flags changed, so the table is
the recipes' own result. Protocol (the recipes): two ResNet-18-layout CNNs (2-2-2-2 basic blocks, 16-32-64-128
channels) over AST log-mel features (40 bins x 100 frames) and 28x28 images, concat fusion, fused loss only, SGD lr
0.01 momentum 0.9, batch 32, 15 epochs, the checkpoint chosen on the VALIDATION speaker's fused accuracy
(load_best_model_at_end), never on the test speaker.

Runs: folds 0-4 (test speaker george, jackson, lucas, nicolas, theo; validation the next speaker), seed 0 each;
runs of a fold share the split, the initialization of each encoder and the data order, so differences against
vanilla are paired by fold. Per run: fused test accuracy, each modality's linear-probe test accuracy on its frozen
encoder (harness.fit_probe: logistic regression on the train-split features), its gap to the same encoder trained
alone on that fold, the unimodal heads' test accuracy where the model has them, and rho / k over training
(vanilla is monitored: `modulation.monitor_only`, which reads the gradients and changes nothing).

Active learning (`recipes/av_digits/bmmal.yaml` through `hf-mmbalance active`): random / entropy / badge / bmmal,
folds 0-2, 100 clips a round up to 500; learning curves and the labels each strategy needs to reach random's final
accuracy.

Writes benchmarks/results/av_digits.jsonl (one line per run; resumable: finished runs are skipped),
av_digits.md (command on top, tables, wall time), av_digits_probes.png, av_digits_rho.png, av_digits_active.png.
Active-learning rounds are trained under --work-dir (default outputs/av_digits_benchmark; resumable there too).

Run: python benchmarks/av_digits_benchmark.py [--workers 2] [--folds 0 1 2 3 4] [--methods ...] [--no-active]
     python benchmarks/av_digits_benchmark.py --report   (tables and plots from the JSONL only)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness import RESULTS_DIR, fit_probe, mean_std
from paired_stats import describe_interval, paired_differences
from transformers import PrinterCallback

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "av_digits"
RESULTS = RESULTS_DIR / "av_digits.jsonl"
TABLE = RESULTS_DIR / "av_digits.md"
PROBE_PLOT = RESULTS_DIR / "av_digits_probes.png"
RHO_PLOT = RESULTS_DIR / "av_digits_rho.png"
ACTIVE_PLOT = RESULTS_DIR / "av_digits_active.png"
MODALITIES = ("audio", "image")
FOLDS = (0, 1, 2, 3, 4)
SEED = 0
ACTIVE_FOLDS = (0, 1, 2)
STRATEGIES = ("random", "entropy", "badge", "bmmal")
MONITOR = ("--modulation.mode", "ogm_ge", "--modulation.monitor_only", "true")
#: FSDD's speakers in sorted order: fold k tests on SPEAKERS[k] and validates on SPEAKERS[k + 1] (load_av_digits).
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the table: a recipe of recipes/av_digits, the flags that make it this variant, and for a modality
    trained alone the one modality kept."""

    name: str
    recipe: str
    flags: tuple[str, ...] = ()
    alone: str | None = None
    about: str = ""


def _alpha(alpha: float, *extra: str) -> tuple[str, ...]:
    return ("--modulation.alpha", str(alpha), *extra)


METHODS: tuple[Method, ...] = (
    Method("audio_alone", "vanilla", alone="audio", about="the audio encoder trained alone"),
    Method("image_alone", "vanilla", alone="image", about="the image encoder trained alone"),
    Method("vanilla", "vanilla", MONITOR, about="joint, fused loss (rho / k monitored, nothing modulated)"),
    Method("unimodal_heads", "unimodal_heads", about="joint + one head per modality (mean of 3 CE terms)"),
    *(Method(f"ogm_ge_a{a}", "ogm_ge", _alpha(a), about=f"OGM-GE, alpha {a}, every epoch")
      for a in (0.1, 0.5, 1.0)),
    Method("ogm_ge_a0.5_first_half", "ogm_ge", _alpha(0.5, "--modulation.end_epoch", "6"),
           about="OGM-GE, alpha 0.5, epochs 0-6 only (released code: the first half)"),
    *(Method(f"ada2i_a{a}", "ada2i", _alpha(a), about=f"Ada2I modulation on concat, alpha {a}")
      for a in (0.1, 0.5, 1.0)),
    Method("ada2i_full", "ada2i_full", about="Ada2I: AFW + AMW fusion and modulation, alpha 0.5"),
    Method("ada2i_full_lfeature0.01", "ada2i_full", ("--feature_loss_weight", "0.01"),
           about="as ada2i_full with L_feature weighted 0.01 (Eq. 14 weighs it 1; see the diagnosis)"),
    Method("bss_heuristic", "bss_heuristic", about="BSS heuristic: scored once, root pacing, t_grow 8"),
    Method("bss_learned", "bss_learned", about="BSS learned: rescored every epoch, summed scores"),
    Method("bss_ogm_ge", "bss_ogm_ge", about="BSS heuristic + OGM-GE alpha 0.5, composed"),
)
METHOD_BY_NAME = {method.name: method for method in METHODS}


# ----------------------------------------------------------------------------------------------------------------------
# one training run
# ----------------------------------------------------------------------------------------------------------------------
_PREPARED: dict[str, Any] = {}


def recipe_arguments(method: Method, fold: int, seed: int, output_dir: str, extra: Sequence[str] = ()):
    """The `hf-mmbalance train` arguments of this run: the recipe, then fold / seed / output, the method's flags and
    `extra` (the smoke check's short budget)."""
    from hf_mmbalance.cli.train import parse_train_args

    argv = ["--config", str(RECIPES / f"{method.recipe}.yaml"), "--fold", str(fold), "--seed", str(seed),
            "--output_dir", output_dir, "--save_only_model", "true", *method.flags, *extra]
    data_args, model_args, training_args, sections = parse_train_args(argv)
    if method.alone:
        model_args.modalities = {method.alone: model_args.modalities[method.alone]}
    return data_args, model_args, training_args, sections


def prepared_data(data_args, model_args):
    """`prepare_dataset` once per process for each (data fields, modalities): the log-mel features of a fold are
    computed once and shared by all its runs."""
    from hf_mmbalance.cli.train import prepare_dataset

    key = json.dumps([dataclasses.asdict(data_args), model_args.modalities], sort_keys=True, default=str)
    if key not in _PREPARED:
        _PREPARED.clear()  # one fold at a time: the runs are ordered by fold
        _PREPARED[key] = prepare_dataset(data_args, model_args)
    return _PREPARED[key]


def encoder_features(trainer, split) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each modality's frozen encoder feature z_m over `split` (through the trainer's collator), and the labels."""
    model = trainer.model.eval()
    names = model.config.modality_names
    features: dict[str, list[np.ndarray]] = {name: [] for name in names}
    labels = []
    with torch.no_grad():
        for batch in trainer.get_eval_dataloader(split):
            inputs = {key: value for key, value in batch.items() if key not in ("labels", "sample_idx")}
            for name, value in model.encode(inputs).items():
                features[name].append(value.float().numpy())
            labels.append(batch["labels"].numpy())
    return {name: np.concatenate(parts) for name, parts in features.items()}, np.concatenate(labels)


def epoch_of_step(trainer):
    """step -> training epoch of this run. BSS lays its epochs out in one Trainer pass of varying epoch sizes, so its
    epochs come from its plan (`curriculum_epoch_of_step`); otherwise every epoch has the same number of steps."""
    from hf_mmbalance.methods.bss.diagnostics import curriculum_epoch_of_step

    for callback in trainer.balancing_callbacks:
        if getattr(callback, "sampler", None) is not None:
            return curriculum_epoch_of_step(callback)
    steps_per_epoch = trainer.state.max_steps / trainer.state.num_train_epochs
    return lambda step: float(step) / steps_per_epoch


def curves(log_history: Sequence[Mapping[str, Any]], epoch_at) -> dict[str, list[list[float]]]:
    """rho_m / k_m (modulation) logged over training: {"rho_audio": [[epoch, value], ...], ...}."""
    out: dict[str, list[list[float]]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.startswith("modulation/") and ("rho_" in key or "k_" in key):
                out.setdefault(key.split("/", 1)[1], []).append([round(epoch_at(entry["step"]), 4), float(value)])
    return out


def train_run(method_name: str, fold: int, seed: int, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Train one (method, fold, seed) from its recipe and measure it (see the module docstring)."""
    from hf_mmbalance.cli.train import build_trainer

    method = METHOD_BY_NAME[method_name]
    with tempfile.TemporaryDirectory() as output_dir:
        data_args, model_args, training_args, sections = recipe_arguments(method, fold, seed, output_dir, extra)
        data = prepared_data(data_args, model_args)
        trainer, data = build_trainer(data_args, model_args, training_args, sections, data=data)
        trainer.remove_callback(PrinterCallback)
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.train()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        best_step = int(Path(trainer.state.best_model_checkpoint).name.split("-")[1])
        epoch_at = epoch_of_step(trainer)
        dataset = data.dataset
        validation = trainer.evaluate(dataset["validation"])
        test = trainer.evaluate(dataset["test"], metric_key_prefix="test")
        train_features, train_y = encoder_features(trainer, dataset["train"])
        test_features, test_y = encoder_features(trainer, dataset["test"])
    names = list(train_features)
    return {
        "method": method.name,
        "recipe": method.recipe,
        "flags": list(method.flags),
        "alone": method.alone,
        "fold": fold,
        "seed": seed,
        "test_speaker": SPEAKERS[fold],
        "fused_acc": test["test_accuracy"],
        "validation_acc": validation["eval_accuracy"],
        "best_epoch": round(epoch_at(best_step), 2),
        "heads": {name: test[f"test_unimodal_{name}_accuracy"] for name in names
                  if f"test_unimodal_{name}_accuracy" in test},
        "probe": {name: fit_probe(train_features[name], train_y, test_features[name], test_y) for name in names},
        "curves": curves(trainer.state.log_history, epoch_at),
        "train_seconds": wall,
        "cpu_seconds": cpu,
    }


# ----------------------------------------------------------------------------------------------------------------------
# active learning
# ----------------------------------------------------------------------------------------------------------------------
def active_run(strategy: str, fold: int, work_dir: str, extra: Sequence[str] = ()) -> dict[str, Any]:
    """One active-learning run of recipes/av_digits/bmmal.yaml (the `hf-mmbalance active` path), resumable in
    `work_dir`: per round, labels used, fused and unimodal test accuracy, mean Shapley contributions."""
    from hf_mmbalance.cli.active import parse_active_args, run_active

    output_dir = os.path.join(work_dir, f"active-{strategy}-fold{fold}")
    argv = ["--config", str(RECIPES / "bmmal.yaml"), "--fold", str(fold), "--seed", str(SEED),
            "--output_dir", output_dir, "--active.strategy", strategy, "--active.seed", str(SEED), *extra]
    data_args, model_args, training_args, sections = parse_active_args(argv)
    options = sections.pop("active", {})
    wall, cpu = time.perf_counter(), time.process_time()
    state = run_active(data_args, model_args, training_args, options, method_sections=sections)
    rounds = [
        {"labels": int(r.metrics["labels_used"]), "fused_acc": r.metrics["eval_accuracy"],
         "heads": {m: r.metrics.get(f"eval_unimodal_{m}_accuracy") for m in MODALITIES},
         "phi": dict(r.mean_contributions or {})}
        for r in state.rounds
    ]
    return {"method": f"active_{strategy}", "strategy": strategy, "fold": fold, "seed": SEED, "rounds": rounds,
            "train_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}


# ----------------------------------------------------------------------------------------------------------------------
# the grid
# ----------------------------------------------------------------------------------------------------------------------
def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _run_job(job: tuple) -> dict[str, Any]:
    torch.set_num_threads(1)
    kind, *args = job
    return train_run(*args) if kind == "train" else active_run(*args)


def _key(record: Mapping[str, Any]) -> tuple:
    return record["method"], record["fold"], record["seed"]


def pending_jobs(results: Path, methods: Sequence[str], folds: Sequence[int], active_folds: Sequence[int],
                 work_dir: str, extra: Sequence[str] = (), active_extra: Sequence[str] = ()) -> list[tuple]:
    """The runs not yet in `results`: training runs fold by fold (a worker prepares each fold's features once),
    then the active-learning runs."""
    done = {_key(record) for record in read_records(results)}
    jobs = [("train", name, fold, SEED, tuple(extra)) for fold in folds for name in methods
            if (name, fold, SEED) not in done]
    jobs += [("active", strategy, fold, work_dir, tuple(active_extra)) for fold in active_folds
             for strategy in STRATEGIES if (f"active_{strategy}", fold, SEED) not in done]
    return jobs


def run_jobs(jobs: list[tuple], workers: int, results: Path) -> None:
    """Run the jobs on `workers` processes (one thread each), appending each record to the JSONL as it finishes."""
    results.parent.mkdir(parents=True, exist_ok=True)

    def finished(record: dict[str, Any]) -> None:
        with results.open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        probes = " ".join(f"{m}={v:.3f}" for m, v in record.get("probe", {}).items())
        fused = record.get("fused_acc", record.get("rounds", [{}])[-1].get("fused_acc"))
        print(f"[{record['method']} fold {record['fold']}] fused={fused:.3f} {probes} "
              f"{record['train_seconds']:.0f}s", flush=True)

    if workers <= 1:
        for job in jobs:
            finished(_run_job(job))
        return
    with multiprocessing.get_context("spawn").Pool(workers, maxtasksperchild=None) as pool:
        for record in pool.imap_unordered(_run_job, jobs):
            finished(record)


# ----------------------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------------------
def _by_method(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[tuple, Mapping[str, Any]]]:
    out: dict[str, dict[tuple, Mapping[str, Any]]] = {}
    for record in records:
        out.setdefault(record["method"], {})[(record["fold"], record["seed"])] = record
    return out


def _fmt(values: Sequence[float]) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    return f"{mean:.3f} ± {std:.3f}"


def main_table(records: Sequence[Mapping[str, Any]]) -> str:
    runs = _by_method(r for r in records if "probe" in r)
    vanilla = {key: r["fused_acc"] for key, r in runs.get("vanilla", {}).items()}
    alone = {m: {key: r["probe"][m] for key, r in runs.get(f"{m}_alone", {}).items()} for m in MODALITIES}
    header = ["method", "runs", "fused test acc", "Δ fused vs vanilla [95% CI]", "audio probe",
              "audio gap to alone [95% CI]", "image probe", "image gap to alone [95% CI]", "heads audio / image",
              "best epoch", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in METHODS:
        by_run = runs.get(method.name)
        if not by_run:
            continue
        fused = {key: r["fused_acc"] for key, r in by_run.items()}
        row = [f"`{method.name}`", str(len(by_run)), _fmt(list(fused.values())),
               "–" if method.name == "vanilla" or method.alone else describe_interval(paired_differences(fused, vanilla))]
        for m in MODALITIES:
            probe = {key: r["probe"][m] for key, r in by_run.items() if m in r["probe"]}
            row.append(_fmt(list(probe.values())))
            gaps = paired_differences(alone[m], probe)
            row.append("–" if method.alone or not gaps else describe_interval(gaps))
        heads = [r["heads"] for r in by_run.values() if r["heads"]]
        row.append(" / ".join(_fmt([h[m] for h in heads]) for m in MODALITIES) if heads else "–")
        row.append(f"{np.mean([r['best_epoch'] for r in by_run.values()]):.1f}")
        row.append(f"{np.mean([r['train_seconds'] for r in by_run.values()]):.0f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


PER_FOLD_METHODS = ("audio_alone", "image_alone", "vanilla", "unimodal_heads", "ogm_ge_a0.1", "ada2i_a0.1",
                    "bss_heuristic", "bss_learned")


def per_fold_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Fused test accuracy per fold (test speaker) for the baselines and the methods at their mildest setting,
    with vanilla's audio probe: where joint training falls below the image alone."""
    runs = _by_method(r for r in records if "probe" in r)
    shown = [name for name in PER_FOLD_METHODS if name in runs]
    header = ["fold (test speaker)", *shown, "vanilla audio probe"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for fold in sorted({key[0] for by_run in runs.values() for key in by_run}):
        row = [f"{fold} ({SPEAKERS[fold]})"]
        for name in shown:
            record = runs[name].get((fold, SEED))
            row.append("–" if record is None else f"{record['fused_acc']:.3f}")
        vanilla = runs.get("vanilla", {}).get((fold, SEED))
        row.append("–" if vanilla is None else f"{vanilla['probe']['audio']:.3f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def rho_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Mean rho_audio / rho_image and k over the first epoch and over the last epoch, per modulated method."""
    runs = _by_method(r for r in records if r.get("curves"))
    lines = ["| method | ρ image, epoch 1 | ρ image, last epoch | k image, epoch 1 | k image, last epoch | "
             "ρ audio, last epoch |", "|---|---|---|---|---|---|"]
    for method in METHODS:
        if method.name not in runs:
            continue
        cells = []
        for key, first in (("rho_image", True), ("rho_image", False), ("k_image", True), ("k_image", False),
                           ("rho_audio", False)):
            values = []
            for record in runs[method.name].values():
                points = record["curves"].get(key, [])
                last_epoch = max((e for e, _ in points), default=0.0)
                chosen = [v for e, v in points if (e <= 1.0 if first else e > last_epoch - 1.0)]
                if chosen:
                    values.append(float(np.mean(chosen)))
            cells.append(_fmt(values))
        lines.append(f"| `{method.name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def active_curves(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, list[float]]]:
    """{strategy: {labels: [fused acc per fold]}}."""
    out: dict[str, dict[int, list[float]]] = {}
    for record in records:
        if "strategy" in record:
            for point in record["rounds"]:
                out.setdefault(record["strategy"], {}).setdefault(point["labels"], []).append(point["fused_acc"])
    return out


def labels_to_reach(points: Mapping[int, Sequence[float]], target: float) -> int | None:
    """The fewest labels whose mean fused accuracy reaches `target` (None: never within the budget)."""
    reached = [labels for labels, accs in sorted(points.items()) if np.mean(accs) >= target]
    return reached[0] if reached else None


def active_table(records: Sequence[Mapping[str, Any]]) -> str:
    curves_ = active_curves(records)
    if not curves_:
        return "(no active-learning runs)"
    labels = sorted({n for points in curves_.values() for n in points})
    target = float(np.mean(curves_["random"][labels[-1]])) if "random" in curves_ else None
    header = ["strategy", *(f"{n} labels" for n in labels), "labels to reach random's final"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for strategy in STRATEGIES:
        if strategy not in curves_:
            continue
        points = curves_[strategy]
        reach = labels_to_reach(points, target) if target is not None else None
        lines.append(f"| {strategy} | " + " | ".join(_fmt(points.get(n, [])) for n in labels)
                     + f" | {reach if reach is not None else '> ' + str(labels[-1])} |")
    phi = {}
    for record in records:
        if record.get("strategy") == "bmmal":
            for point in record["rounds"]:
                if point["phi"]:
                    phi.setdefault(point["labels"], []).append(point["phi"])
    if phi:
        lines += ["", "BMMAL's mean Shapley contribution Φ per round (the share of the fused prediction; mean over folds):",
                  "", "| labels | " + " | ".join(f"Φ {m}" for m in MODALITIES) + " |", "|---|" + "---|" * len(MODALITIES)]
        for n, values in sorted(phi.items()):
            lines.append(f"| {n} | " + " | ".join(_fmt([v[m] for v in values]) for m in MODALITIES) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------------------------------
def plot_probes(records: Sequence[Mapping[str, Any]], path: Path = PROBE_PLOT) -> None:
    """Per method: fused test accuracy and each modality's probe (mean ± std over folds, value at the bar's end);
    dashed lines: the same measure for vanilla and for the modality trained alone."""
    from hf_mmbalance.plotting import plt, save_figure

    runs = _by_method(r for r in records if "probe" in r)
    shown = [m for m in METHODS if m.name in runs and not m.alone]
    panels = [("fused test accuracy", lambda r: r["fused_acc"], ("audio_alone", "image_alone"))]
    panels += [(f"{m} probe (linear, frozen {m} encoder)", lambda r, m=m: r["probe"][m], (f"{m}_alone",))
               for m in MODALITIES]
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 0.36 * len(shown) + 2.2))
    for ax, (title, value, alone) in zip(axes, panels):
        stats = [mean_std([value(r) for r in runs[m.name].values()]) for m in shown]
        y = np.arange(len(shown))
        ax.barh(y, [s[0] for s in stats], xerr=[s[1] for s in stats], capsize=2,
                color=["C7" if m.name == "vanilla" else "C0" for m in shown])
        for i, (mean, _) in enumerate(stats):
            ax.text(0.005, i, f"{mean:.3f}", va="center", ha="left", fontsize=7, color="white",
                    transform=ax.get_yaxis_transform())
        ax.set_yticks(y, [m.name for m in shown], fontsize=8)
        ax.invert_yaxis()
        references = [("vanilla", "C7")] + [(name, "C3" if name.startswith("audio") else "C2") for name in alone]
        for name, color in references:
            if name in runs:
                reference = float(np.mean([value(r) for r in runs[name].values()]))
                ax.axvline(reference, color=color, linestyle="--", linewidth=1.2,
                           label=f"{name.replace('_', ' ')}: {reference:.3f}")
        ax.set_xlim(0.0, 1.0)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=3, frameon=False)
    fig.suptitle("Audio-visual digits (FSDD + MNIST), test speaker of each fold: mean ± std over folds", fontsize=11)
    save_figure(fig, str(path.parent), path.name)


#: Ada2I's alpha grid tracks OGM-GE's closely for two modalities; the plot shows one of each kind.
RHO_PLOT_METHODS = ("vanilla", "ogm_ge_a0.1", "ogm_ge_a0.5", "ogm_ge_a1.0", "ogm_ge_a0.5_first_half", "ada2i_a0.5",
                    "ada2i_full", "ada2i_full_lfeature0.01", "bss_ogm_ge")


def plot_rho(records: Sequence[Mapping[str, Any]], path: Path = RHO_PLOT, fold: int = 0) -> None:
    """rho_image and k_image over training (one fold) for vanilla (monitored) and the modulated methods."""
    from hf_mmbalance.plotting import plt, save_figure

    runs = _by_method(r for r in records if r.get("curves") and r["fold"] == fold)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, method in enumerate(m for m in METHODS if m.name in runs and m.name in RHO_PLOT_METHODS):
        record = next(iter(runs[method.name].values()))
        for ax, key in zip(axes, ("rho_image", "k_image")):
            points = np.asarray(record["curves"].get(key, []))
            if len(points):
                ax.plot(points[:, 0], points[:, 1], label=method.name, color=f"C{i % 10}",
                        linestyle="--" if method.name == "vanilla" else "-", linewidth=1.2)
    axes[0].set_title("ρ_image = s_image / s_audio (disparity ratio, Eq. 17)", fontsize=10)
    axes[1].set_title("k_image = 1 − tanh(α ρ): the image encoder's gradient scale in the window", fontsize=10)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Audio-visual digits, fold {fold}: the image dominates throughout", fontsize=11)
    save_figure(fig, str(path.parent), path.name)


def plot_active(records: Sequence[Mapping[str, Any]], path: Path = ACTIVE_PLOT) -> None:
    from hf_mmbalance.plotting import plt, save_figure

    curves_ = active_curves(records)
    if not curves_:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, strategy in enumerate(s for s in STRATEGIES if s in curves_):
        labels = sorted(curves_[strategy])
        stats = np.asarray([mean_std(curves_[strategy][n]) for n in labels])
        ax.plot(labels, stats[:, 0], marker="o", label=strategy, color=f"C{i}")
        ax.fill_between(labels, stats[:, 0] - stats[:, 1], stats[:, 0] + stats[:, 1], color=f"C{i}", alpha=0.15)
    ax.set_xlabel("labels used")
    ax.set_ylabel("fused test accuracy")
    ax.set_title("Active learning on audio-visual digits (mean ± std over folds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, str(path.parent), path.name)


# ----------------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------------
def write_report(records: Sequence[Mapping[str, Any]], command: str, wall_seconds: float | None,
                 path: Path = TABLE) -> str:
    train_runs = [r for r in records if "probe" in r]
    cpu_total = sum(r["cpu_seconds"] for r in records)
    timing = (f"Grid: {len(train_runs)} training runs and {len(records) - len(train_runs)} active-learning runs, "
              f"{cpu_total / 60:.0f} CPU-minutes in all (one thread each)")
    if wall_seconds is not None:
        timing += f"; {wall_seconds / 60:.1f} min wall on 2 cores (2 worker processes)"
    methods = "\n".join(f"- `{m.name}`: {m.about} (recipe `{m.recipe}.yaml`{', flags ' + ' '.join(m.flags) if m.flags else ''})"
                        for m in METHODS)
    text = "\n".join([
        "# Audio-visual digits: balancing methods against vanilla (FSDD speech + MNIST images)",
        "",
        f"Command: `{command}`",
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        "",
        __doc__.split("\n\n")[2].replace("\n", " "),
        "",
        timing + ".",
        "",
        "Δ = paired difference against vanilla on the same fold (mean and Student-t 95% CI over folds; * = the CI "
        "excludes 0). Gap = the modality's probe when trained alone on that fold − its probe in the joint model "
        "(positive: the joint encoder learned less). Probe = logistic regression on the frozen encoder's train-split "
        "features, test speaker accuracy.",
        "",
        "## Methods",
        "",
        methods,
        "",
        "## Fused accuracy, per-modality probes and gaps",
        "",
        main_table(records),
        "",
        "## Per fold: fused test accuracy (the audio-alone column is the audio model's own prediction)",
        "",
        per_fold_table(records),
        "",
        "## Disparity ratio ρ and coefficient k over training (modulation's own logs; vanilla monitored with α 0.1)",
        "",
        "k is the coefficient computed at each step (logged also outside a modulation window, where the gradients are "
        "left alone); ρ of the weaker modality is below 1 for OGM-GE (s_audio / s_image) and 1 for Ada2I (s_m / min s).",
        "",
        rho_table(records),
        "",
        "## Active learning (recipes/av_digits/bmmal.yaml)",
        "",
        active_table(records),
        "",
    ])
    path.write_text(text)
    return text


SMOKE_FLAGS = ("--num_train_epochs", "1", "--max_train_samples", "200", "--max_eval_samples", "60",
               "--logging_steps", "2")
SMOKE_ACTIVE_FLAGS = ("--num_train_epochs", "1", "--max_train_samples", "200", "--max_eval_samples", "60",
                      "--active.budget_per_round", "30", "--active.total_budget", "60")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="training processes (one thread each)")
    parser.add_argument("--folds", type=int, nargs="+", default=list(FOLDS))
    parser.add_argument("--methods", nargs="+", default=[m.name for m in METHODS], choices=[m.name for m in METHODS])
    parser.add_argument("--active-folds", type=int, nargs="*", default=list(ACTIVE_FOLDS))
    parser.add_argument("--work-dir", default=str(ROOT / "outputs" / "av_digits_benchmark"))
    parser.add_argument("--report", action="store_true", help="only rewrite the tables and plots from the JSONL")
    parser.add_argument("--wall-minutes", type=float, default=None,
                        help="with --report: the wall time the run invocations measured, to state in the report")
    parser.add_argument("--smoke", action="store_true",
                        help="1 epoch on 200 clips per run, fold 0, into a temp folder: checks the whole pipeline")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # the recipes name the data relative to the repository root
    results, table = RESULTS, TABLE
    plots = {"probes": PROBE_PLOT, "rho": RHO_PLOT, "active": ACTIVE_PLOT}
    extra, active_extra = (), ()
    if args.smoke:
        scratch = Path(tempfile.mkdtemp(prefix="av_digits_smoke_"))
        results, table, args.work_dir = scratch / "av_digits.jsonl", scratch / "av_digits.md", str(scratch / "work")
        plots = {name: scratch / path.name for name, path in plots.items()}
        args.folds, args.active_folds, extra, active_extra = [0], [0], SMOKE_FLAGS, SMOKE_ACTIVE_FLAGS
    start = time.perf_counter()
    wall = None if args.wall_minutes is None else args.wall_minutes * 60
    if not args.report:
        jobs = pending_jobs(results, args.methods, args.folds, args.active_folds, args.work_dir, extra, active_extra)
        print(f"{len(jobs)} runs to do ({len(read_records(results))} already in {results})", flush=True)
        run_jobs(jobs, args.workers, results)
        wall = time.perf_counter() - start
    records = read_records(results)
    command = "python benchmarks/av_digits_benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(write_report(records, command.strip(), wall, table))
    plot_probes(records, plots["probes"])
    plot_rho(records, plots["rho"])
    plot_active(records, plots["active"])
    print(f"wrote {table} and plots {[str(p) for p in plots.values()]}")


if __name__ == "__main__":
    main()
