"""Shared benchmark harness for the balancing methods on mfeat (the protocol of ``shared/BENCHMARKS.md``).

Every method's script ``benchmarks/<method>_benchmark.py`` trains with the same recipe through this module, so
their tables sit side by side: only the method (fusion, callbacks, model/training overrides) differs.

Importing: ``benchmarks/`` is deliberately NOT a package. A script run as ``python benchmarks/<method>_benchmark.py``
has its own folder as ``sys.path[0]``, so it simply writes ``import harness`` (or ``from harness import ...``);
no ``sys.path`` manipulation is needed. ``hf_mmbalance`` comes from the venv (editable install).

Protocol (``ProtocolSettings`` defaults): MLP encoders hidden [64] -> feature 32, concat fusion, SGD lr 0.05 momentum
0.9, constant LR, gradient clipping at 1.0 (the ``Trainer`` default, as in ``recipes/mfeat/vanilla.yaml``), batch 32,
40 epochs, the fused loss only (``unimodal_heads=False``: unimodal heads would themselves counteract the imbalance
being measured), standardized inputs, the fixed ``load_mfeat`` split of seed 0 (1400/200/400 train/validation/test;
the numbers quoted in BENCHMARKS.md used a 70/30 train/test split, so they differ slightly), CPU, no saving, no
evaluation during training. A seed fixes the model initialization and the data order.

Metrics, on the test split: fused accuracy; per view, the accuracy of a fixed-recipe logistic-regression probe fit on
the frozen encoder's train-split features z_m; and the gap = (mean over seeds of the probe of that view's encoder
trained ALONE with the same recipe) - (the joint model's probe).

Results: ``run_grid`` appends one JSON line per (setting, method, seed) run and skips the runs already in the file, so
an interrupted benchmark resumes; solo probes are cached in one JSON file shared by all method scripts
(``benchmarks/results/solo_probes.json``). Both files record the protocol and refuse to mix runs of another one.
If a method's spec changes, delete its lines (or use a new results file).

Importing this module sets ``torch.set_num_threads(1)`` (see below), so several benchmark scripts can run side by side.

Command line: ``python benchmarks/harness.py --smoke`` (2-epoch check of the whole pipeline in a temp dir) and
``python benchmarks/harness.py --time all6 fou+zer`` (seconds of one full-protocol vanilla run per setting).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

from hf_mmbalance import (
    MFEAT_VIEWS,
    MMBalanceConfig,
    MMBalanceForClassification,
    MultimodalTrainer,
    load_mfeat,
    standardize,
)
from hf_mmbalance.data.mfeat import MFEAT_NUM_CLASSES

# One intra-op thread: the models are tiny, so a second thread buys nothing alone, and two benchmark processes each
# using 2 threads on the 2 cores oversubscribe them (measured: a 40-epoch fou+zer run 4.4 s -> 36 s).
torch.set_num_threads(1)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SOLO_CACHE_PATH = RESULTS_DIR / "solo_probes.json"

#: Seeds of the protocol (5 seeds; active learning uses the first 3).
SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)

#: Setting name -> the views trained jointly.
SETTINGS: dict[str, list[str]] = {
    "fac+kar": ["fac", "kar"],
    "fac+fou": ["fac", "fou"],
    "fou+zer": ["fou", "zer"],
    "all6": list(MFEAT_VIEWS),
}

#: Fixed probe recipe: seed of the logistic regression and its settings.
PROBE_SEED = 0
PROBE_MAX_ITER = 2000
PROBE_C = 1.0


@dataclasses.dataclass(frozen=True)
class ProtocolSettings:
    """The training recipe shared by every method and the vanilla baseline (BENCHMARKS.md)."""

    hidden_sizes: tuple[int, ...] = (64,)
    feature_size: int = 32
    unimodal_heads: bool = False
    learning_rate: float = 0.05
    optim: str = "sgd"
    optim_args: str = "momentum=0.9"
    lr_scheduler_type: str = "constant"
    max_grad_norm: float = 1.0
    batch_size: int = 32
    num_train_epochs: float = 40
    standardize: bool = True
    split_seed: int = 0
    use_cpu: bool = True
    dataloader_num_workers: int = 0

    def as_record(self) -> dict[str, Any]:
        """The settings as plain JSON values (how result files record the protocol they were run with)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One method of a benchmark: how it differs from vanilla joint training.

    ``make_callbacks`` is called once per run and must return fresh callback instances;
    ``model_overrides`` update the ``MMBalanceConfig`` kwargs (e.g. ``{"unimodal_heads": True}``) and
    ``training_overrides`` the ``TrainingArguments`` kwargs of the protocol.
    """

    name: str
    fusion: str = "concat"
    make_callbacks: Callable[[], list[TrainerCallback]] = lambda: []
    model_overrides: Mapping[str, Any] | None = None
    training_overrides: Mapping[str, Any] | None = None


# ----------------------------------------------------------------------------------------------------------------------
# data, model, trainer
# ----------------------------------------------------------------------------------------------------------------------
def load_protocol_data(views: Sequence[str], settings: ProtocolSettings):
    """The protocol's ``DatasetDict`` (train/validation/test) with the given views, standardized on train."""
    return _load_protocol_data(tuple(views), settings.standardize, settings.split_seed)


@functools.lru_cache(maxsize=None)
def _load_protocol_data(views: tuple[str, ...], standardized: bool, split_seed: int):
    dataset = load_mfeat(views=list(views), seed=split_seed)
    return standardize(dataset, list(views)) if standardized else dataset


def build_model(
    views: Sequence[str],
    seed: int,
    *,
    settings: ProtocolSettings,
    fusion: str = "concat",
    model_overrides: Mapping[str, Any] | None = None,
) -> MMBalanceForClassification:
    """A freshly initialized classifier over ``views``; ``seed`` fixes the initialization."""
    modalities = {
        view: {
            "input_size": MFEAT_VIEWS[view],
            "encoder": "mlp",
            "hidden_sizes": list(settings.hidden_sizes),
            "feature_size": settings.feature_size,
        }
        for view in views
    }
    config_kwargs = {
        "modalities": modalities,
        "fusion": fusion,
        "num_labels": MFEAT_NUM_CLASSES,
        "unimodal_heads": settings.unimodal_heads,
        **(model_overrides or {}),
    }
    set_seed(seed)
    return MMBalanceForClassification(MMBalanceConfig(**config_kwargs))


def training_arguments(
    seed: int,
    *,
    settings: ProtocolSettings,
    output_dir: str | Path,
    training_overrides: Mapping[str, Any] | None = None,
) -> TrainingArguments:
    """The protocol's ``TrainingArguments``; ``seed`` fixes the data order."""
    kwargs = {
        "output_dir": str(output_dir),
        "seed": seed,
        "learning_rate": settings.learning_rate,
        "optim": settings.optim,
        "optim_args": settings.optim_args,
        "lr_scheduler_type": settings.lr_scheduler_type,
        "max_grad_norm": settings.max_grad_norm,
        "per_device_train_batch_size": settings.batch_size,
        "num_train_epochs": settings.num_train_epochs,
        "use_cpu": settings.use_cpu,
        "dataloader_num_workers": settings.dataloader_num_workers,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        **(training_overrides or {}),
    }
    return TrainingArguments(**kwargs)


def build_trainer(
    views: Sequence[str],
    seed: int,
    *,
    settings: ProtocolSettings,
    output_dir: str | Path,
    fusion: str = "concat",
    callbacks: Iterable[TrainerCallback] = (),
    model_overrides: Mapping[str, Any] | None = None,
    training_overrides: Mapping[str, Any] | None = None,
    plain: bool = False,
) -> Trainer:
    """A ready-to-train trainer on the protocol's train split: ``MultimodalTrainer``, or with ``plain=True`` a plain
    ``transformers.Trainer`` on the same model and data (the reference of the step-time ratios)."""
    model = build_model(views, seed, settings=settings, fusion=fusion, model_overrides=model_overrides)
    overrides = dict(training_overrides or {})
    if plain:
        overrides.update(remove_unused_columns=False, label_names=["labels"])
    args = training_arguments(seed, settings=settings, output_dir=output_dir, training_overrides=overrides)
    train = load_protocol_data(views, settings)["train"]
    trainer_class = Trainer if plain else MultimodalTrainer
    trainer = trainer_class(
        model=model, args=args, train_dataset=train.with_format("torch"), callbacks=list(callbacks)
    )
    trainer.remove_callback(PrinterCallback)  # the harness reports runs itself
    return trainer


def train_joint(
    views: Sequence[str],
    seed: int,
    *,
    settings: ProtocolSettings,
    fusion: str = "concat",
    callbacks: Iterable[TrainerCallback] = (),
    model_overrides: Mapping[str, Any] | None = None,
    training_overrides: Mapping[str, Any] | None = None,
    output_dir: str | Path,
) -> tuple[MMBalanceForClassification, MultimodalTrainer, float]:
    """Train ``views`` jointly with the protocol (plus the method's fusion, callbacks and overrides).

    Returns the trained model, its trainer and the wall-clock seconds of ``trainer.train()``.
    """
    trainer = build_trainer(
        views,
        seed,
        settings=settings,
        output_dir=output_dir,
        fusion=fusion,
        callbacks=callbacks,
        model_overrides=model_overrides,
        training_overrides=training_overrides,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return trainer.model, trainer, seconds


# ----------------------------------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------------------------------
def _model_inputs(model: MMBalanceForClassification, split) -> dict[str, torch.Tensor]:
    """The whole split as one batch of the model's modality tensors."""
    names = model.config.modality_names
    columns = split.with_format("torch", columns=names)[:]
    return {name: columns[name].to(model.device) for name in names}


def fused_accuracy(model: MMBalanceForClassification, dataset_split) -> float:
    """Accuracy of the fused prediction on ``dataset_split`` (the whole split in one batch)."""
    model.eval()
    with torch.no_grad():
        logits = model(**_model_inputs(model, dataset_split)).logits
    labels = np.asarray(dataset_split["labels"])
    return float((logits.argmax(dim=-1).cpu().numpy() == labels).mean())


def encoder_features(model: MMBalanceForClassification, dataset_split) -> dict[str, np.ndarray]:
    """Each view's frozen encoder feature z_m on ``dataset_split``, ``{view: (N, feature_size)}``."""
    model.eval()
    with torch.no_grad():
        features = model.encode(_model_inputs(model, dataset_split))
    return {name: value.cpu().numpy() for name, value in features.items()}


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """The fixed probe recipe: standardize, logistic regression, test accuracy."""
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=PROBE_MAX_ITER, C=PROBE_C, random_state=PROBE_SEED)
    )
    probe.fit(train_x, train_y)
    return float(probe.score(test_x, test_y))


def probe_accuracies(
    model: MMBalanceForClassification, dataset, views: Sequence[str] | None = None
) -> dict[str, float]:
    """Linear-probe test accuracy of each view's frozen encoder (default: every view of the model), each probe fit
    on the train split's features; the features of all views are extracted in one pass per split."""
    train, test = dataset["train"], dataset["test"]
    train_features, test_features = encoder_features(model, train), encoder_features(model, test)
    train_y, test_y = np.asarray(train["labels"]), np.asarray(test["labels"])
    views = list(train_features) if views is None else list(views)
    return {view: fit_probe(train_features[view], train_y, test_features[view], test_y) for view in views}


def linear_probe_accuracy(model: MMBalanceForClassification, dataset, view: str) -> float:
    """Linear-probe test accuracy of ``view``'s frozen encoder, fit on the train split's features."""
    return probe_accuracies(model, dataset, [view])[view]


# ----------------------------------------------------------------------------------------------------------------------
# result files
# ----------------------------------------------------------------------------------------------------------------------
def _check_protocol(recorded: Mapping[str, Any], settings: ProtocolSettings, path: Path) -> None:
    if dict(recorded) != settings.as_record():
        raise ValueError(
            f"{path} holds results of another protocol ({dict(recorded)}); this run uses {settings.as_record()}. "
            "Use another file for a different protocol."
        )


def _write_json_atomically(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The run records of a ``run_grid`` JSONL file (empty when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append_result(path: Path, record: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record, sort_keys=True, default=repr) + "\n")  # repr: overrides may hold objects


# ----------------------------------------------------------------------------------------------------------------------
# solo probes and the grid
# ----------------------------------------------------------------------------------------------------------------------
def solo_probe_accuracies(
    views: Iterable[str],
    seeds: Iterable[int],
    settings: ProtocolSettings,
    cache_path: str | Path = SOLO_CACHE_PATH,
) -> dict[str, list[float]]:
    """Probe accuracy of each view's encoder trained ALONE (1-modality model, same recipe), ``{view: [per seed]}``.

    Results are cached in ``cache_path`` under ``"<view>/<seed>"`` (written after every run) and reused by every
    method script.
    """
    cache_path = Path(cache_path)
    if cache_path.is_file():
        cache = json.loads(cache_path.read_text())
    else:
        cache = {"protocol": settings.as_record(), "runs": {}}
    _check_protocol(cache["protocol"], settings, cache_path)
    views, seeds = list(views), list(seeds)
    for view in views:
        for seed in seeds:
            key = f"{view}/{seed}"
            if key in cache["runs"]:
                continue
            with tempfile.TemporaryDirectory() as output_dir:
                model, _, _ = train_joint([view], seed, settings=settings, output_dir=output_dir)
            cache["runs"][key] = linear_probe_accuracy(model, load_protocol_data([view], settings), view)
            _write_json_atomically(cache_path, cache)
    return {view: [cache["runs"][f"{view}/{seed}"] for seed in seeds] for view in views}


def _method_specs(methods: Mapping[str, MethodSpec | Callable[[], list[TrainerCallback]]]) -> list[MethodSpec]:
    """``{name: MethodSpec or callbacks factory}`` -> specs (a bare factory means concat fusion, no overrides)."""
    specs = []
    for name, method in methods.items():
        spec = method if isinstance(method, MethodSpec) else MethodSpec(name, make_callbacks=method)
        if spec.name != name:
            raise ValueError(f"methods[{name!r}] is a MethodSpec named {spec.name!r}; use the same name")
        specs.append(spec)
    return specs


def run_one(
    spec: MethodSpec,
    setting: str,
    seed: int,
    *,
    settings: ProtocolSettings,
    solo: Mapping[str, list[float]],
) -> dict[str, Any]:
    """Train one (setting, method, seed) and return its record: fused accuracy, per-view probe accuracy and gap to
    the solo probe mean, training seconds."""
    views = SETTINGS[setting]
    with tempfile.TemporaryDirectory() as output_dir:
        model, _, seconds = train_joint(
            views,
            seed,
            settings=settings,
            fusion=spec.fusion,
            callbacks=spec.make_callbacks(),
            model_overrides=spec.model_overrides,
            training_overrides=spec.training_overrides,
            output_dir=output_dir,
        )
    dataset = load_protocol_data(views, settings)
    probe = probe_accuracies(model, dataset)
    return {
        "setting": setting,
        "method": spec.name,
        "seed": seed,
        "views": views,
        "fusion": spec.fusion,
        "model_overrides": dict(spec.model_overrides or {}),
        "training_overrides": dict(spec.training_overrides or {}),
        "fused_acc": fused_accuracy(model, dataset["test"]),
        "probe": probe,
        "gap": {view: float(np.mean(solo[view])) - probe[view] for view in views},
        "solo_probe": {view: list(solo[view]) for view in views},
        "train_seconds": seconds,
        "protocol": settings.as_record(),
    }


def run_grid(
    methods: Mapping[str, MethodSpec | Callable[[], list[TrainerCallback]]],
    settings_names: Sequence[str],
    seeds: Sequence[int] = SEEDS,
    *,
    settings: ProtocolSettings = ProtocolSettings(),
    results_path: str | Path,
    solo_cache_path: str | Path = SOLO_CACHE_PATH,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train every (setting, method, seed), appending each record to ``results_path`` (JSONL) as it finishes.

    Runs already in the file are skipped, so an interrupted benchmark resumes. Returns the records of the requested
    grid (old and new), in grid order.
    """
    results_path = Path(results_path)
    specs = _method_specs(methods)
    unknown = [name for name in settings_names if name not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; expected names among {list(SETTINGS)}")
    all_views = list(dict.fromkeys(view for name in settings_names for view in SETTINGS[name]))
    solo = solo_probe_accuracies(all_views, seeds, settings, solo_cache_path)

    done = {}
    for record in read_results(results_path):
        _check_protocol(record["protocol"], settings, results_path)
        done[(record["setting"], record["method"], record["seed"])] = record
    records = []
    for setting in settings_names:
        for spec in specs:
            for seed in seeds:
                key = (setting, spec.name, seed)
                if key not in done:
                    done[key] = run_one(spec, setting, seed, settings=settings, solo=solo)
                    _append_result(results_path, done[key])
                    log(_describe(done[key]))
                records.append(done[key])
    return records


def _describe(record: Mapping[str, Any]) -> str:
    probes = " ".join(f"{view}={acc:.3f}(gap {record['gap'][view]:+.3f})" for view, acc in record["probe"].items())
    return (
        f"[{record['setting']} {record['method']} seed {record['seed']}] fused={record['fused_acc']:.3f} "
        f"probe {probes} {record['train_seconds']:.1f}s"
    )


# ----------------------------------------------------------------------------------------------------------------------
# reports
# ----------------------------------------------------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)


def _fmt(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.3f} ± {std:.3f}"


def _group(results: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, list[Mapping[str, Any]]]]:
    """``{setting: {method: [records]}}`` in order of first appearance."""
    grouped: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for record in results:
        grouped.setdefault(record["setting"], {}).setdefault(record["method"], []).append(record)
    return grouped


def _solo_values(records: Sequence[Mapping[str, Any]], view: str) -> list[float]:
    return list(records[0]["solo_probe"][view])


def format_markdown_tables(results: Iterable[Mapping[str, Any]]) -> str:
    """One markdown table per setting: mean ± std over seeds of fused accuracy, per-view probe accuracy and gap."""
    sections = []
    for setting, by_method in _group(results).items():
        views = next(iter(by_method.values()))[0]["views"]
        header = ["method", "seeds", "fused acc", *(f"{v} probe" for v in views), *(f"{v} gap" for v in views)]
        header.append("train s")
        first = next(iter(by_method.values()))
        solo_row = ["solo (view alone)", str(len(_solo_values(first, views[0]))), "–"]
        solo_row += [_fmt(_solo_values(first, v)) for v in views] + ["–"] * len(views) + ["–"]
        rows = [solo_row]
        for method, records in by_method.items():
            row = [method, str(len(records)), _fmt([r["fused_acc"] for r in records])]
            row += [_fmt([r["probe"][v] for r in records]) for v in views]
            row += [_fmt([r["gap"][v] for r in records]) for v in views]
            row.append(f"{np.mean([r['train_seconds'] for r in records]):.1f}")
            rows.append(row)
        lines = [f"## {setting}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def write_markdown_table(results: Iterable[Mapping[str, Any]], path: str | Path, command: str, title: str) -> str:
    """Write the tables of ``format_markdown_tables`` under ``title``, with the producing ``command`` at the top;
    returns the markdown."""
    results = list(results)
    protocol = results[0]["protocol"] if results else ProtocolSettings().as_record()
    text = "\n".join(
        [
            f"# {title}",
            "",
            f"Command: `{command}`",
            "",
            f"Protocol: {json.dumps(protocol, sort_keys=True)}.",
            "Test split of `load_mfeat` (1400/200/400). Probe: logistic regression on the frozen encoder's train-split "
            "features. Gap = solo probe mean − joint probe (positive: the view's encoder learned less jointly). "
            "Mean ± sample std over seeds.",
            "",
            format_markdown_tables(results),
            "",
        ]
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def plot_probe_bars(results: Iterable[Mapping[str, Any]], path: str | Path) -> None:
    """PNG with one panel per setting: grouped bars (methods side by side, error bars = std over seeds) of fused
    accuracy and each view's probe accuracy; a black line marks each view's solo probe mean. The y axis starts
    near the lowest value shown, not at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = _group(results)
    panel_views = {setting: next(iter(by_method.values()))[0]["views"] for setting, by_method in grouped.items()}
    widths = [2.0 + 1.1 * (1 + len(views)) for views in panel_views.values()]
    fig, axes = plt.subplots(
        1, len(grouped), figsize=(sum(widths), 4.4), squeeze=False, gridspec_kw={"width_ratios": widths}
    )
    # One slot and colour per method across all panels, so a method missing from a setting leaves a gap
    # instead of shifting the others' colours.
    methods = list(dict.fromkeys(method for by_method in grouped.values() for method in by_method))
    width = 0.8 / len(methods)
    for ax, (setting, by_method) in zip(axes[0], grouped.items()):
        views = panel_views[setting]
        lowest = 1.0
        for method, records in by_method.items():
            i = methods.index(method)
            stats = [mean_std([r["fused_acc"] for r in records])]
            stats += [mean_std([r["probe"][v] for r in records]) for v in views]
            x = np.arange(1 + len(views)) - 0.4 + width * (i + 0.5)
            ax.bar(x, [m for m, _ in stats], width, yerr=[s for _, s in stats], capsize=2, label=method,
                   color=f"C{i % 10}")
            lowest = min(lowest, *(m - s for m, s in stats))
        solo_records = next(iter(by_method.values()))
        for j, view in enumerate(views, start=1):
            solo_mean = float(np.mean(_solo_values(solo_records, view)))
            label = "solo probe" if j == 1 else None
            ax.hlines(solo_mean, j - 0.45, j + 0.45, colors="black", linewidth=2, label=label)
            lowest = min(lowest, solo_mean)
        ax.set_xticks(np.arange(1 + len(views)), ["fused", *views])
        ax.set_title(setting)
        ax.set_ylim(max(0.0, lowest - 0.05), 1.0)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (probe for views)")
    legend = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------------
# speed
# ----------------------------------------------------------------------------------------------------------------------
class _StepStart(TrainerCallback):
    """Records the start of each optimizer step; inserted FIRST so the other callbacks' step hooks are timed."""

    def __init__(self, clock: list[float]):
        self.clock = clock

    def on_step_begin(self, args, state, control, **kwargs):
        self.clock.append(time.perf_counter())


class _StepEnd(TrainerCallback):
    """Turns each step's start into a duration; appended LAST, after the other callbacks' ``on_step_end``."""

    def __init__(self, clock: list[float], durations: list[float]):
        self.clock, self.durations = clock, durations

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self.clock.pop())


def timed_steps(make_trainer: Callable[[int], Trainer], steps: int, warmup: int) -> float:
    """Median duration of one run's optimizer steps (forward, backward, optimizer and every callback's step hooks),
    after dropping the first ``warmup`` steps. ``make_trainer(max_steps)`` builds a fresh trainer for that many steps.
    """
    clock: list[float] = []
    durations: list[float] = []
    trainer = make_trainer(warmup + steps)
    trainer.callback_handler.callbacks.insert(0, _StepStart(clock))
    trainer.add_callback(_StepEnd(clock, durations))
    trainer.train()
    return statistics.median(durations[warmup:])


def median_step_seconds(
    make_trainer: Callable[[int], Trainer], repeats: int = 5, steps: int = 30, warmup: int = 5
) -> float:
    """Median over ``repeats`` fresh runs of the median step seconds (see ``timed_steps``)."""
    return statistics.median(timed_steps(make_trainer, steps, warmup) for _ in range(repeats))


def step_time_ratio(
    spec: MethodSpec,
    views: Sequence[str],
    *,
    settings: ProtocolSettings = ProtocolSettings(),
    seed: int = 0,
    repeats: int = 5,
    steps: int = 30,
    warmup: int = 5,
) -> dict[str, float]:
    """Step time of ``spec`` (``MultimodalTrainer`` with its callbacks) over a plain ``transformers.Trainer`` on the
    same model and data, in this process, alternating the two each repeat to cancel drift.

    Returns ``{"method_s", "plain_s", "ratio"}`` (medians over repeats of each run's median step seconds).
    The default ``warmup + steps`` stays within one epoch (44 steps), so no epoch boundary is timed.
    """

    def make(plain: bool, output_dir: str) -> Callable[[int], Trainer]:
        def factory(max_steps: int) -> Trainer:
            return build_trainer(
                views,
                seed,
                settings=settings,
                output_dir=output_dir,
                fusion=spec.fusion,
                callbacks=() if plain else spec.make_callbacks(),
                model_overrides=spec.model_overrides,
                training_overrides={**(spec.training_overrides or {}), "max_steps": max_steps},
                plain=plain,
            )

        return factory

    method_runs, plain_runs = [], []
    with tempfile.TemporaryDirectory() as output_dir:  # nothing is saved there (save_strategy="no")
        for _ in range(repeats):
            method_runs.append(timed_steps(make(False, output_dir), steps, warmup))
            plain_runs.append(timed_steps(make(True, output_dir), steps, warmup))
    method_s, plain_s = statistics.median(method_runs), statistics.median(plain_runs)
    return {"method_s": method_s, "plain_s": plain_s, "ratio": method_s / plain_s}


# ----------------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------------
def method_benchmark_parser(doc: str, default_settings: Sequence[str], timing_repeats: int) -> argparse.ArgumentParser:
    """The command line every method's benchmark script takes: settings, seeds, and whether to re-time."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(default_settings), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--skip-timing", action="store_true", help="reuse the timing of the last timed run")
    parser.add_argument("--timing-repeats", type=int, default=timing_repeats)
    return parser


def smoke() -> None:
    """2 epochs, 1 seed, vanilla on fou+zer (solo probes included) in a temp dir: table, plot and a step-time ratio."""
    settings = dataclasses.replace(ProtocolSettings(), num_train_epochs=2)
    vanilla = {"vanilla": MethodSpec("vanilla")}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = run_grid(
            vanilla, ["fou+zer"], [0], settings=settings,
            results_path=tmp / "smoke.jsonl", solo_cache_path=tmp / "solo.json",
        )
        command = "python benchmarks/harness.py --smoke"
        print(write_markdown_table(results, tmp / "smoke.md", command, "Harness smoke check (2 epochs)"))
        plot_probe_bars(results, tmp / "smoke.png")
        grid_seconds = time.perf_counter() - start
    print(f"grid (solo fou, zer + joint, with probes), table and plot: {grid_seconds:.1f}s")
    ratio = step_time_ratio(vanilla["vanilla"], SETTINGS["fou+zer"], settings=settings, repeats=2, steps=10)
    print(f"step time vanilla MultimodalTrainer / plain Trainer: {ratio}")


def time_full_runs(setting_names: Sequence[str]) -> None:
    """Seconds of one full-protocol vanilla run (seed 0) per setting, to plan a benchmark's budget."""
    for name in setting_names:
        with tempfile.TemporaryDirectory() as output_dir:
            _, _, seconds = train_joint(SETTINGS[name], 0, settings=ProtocolSettings(), output_dir=output_dir)
        print(f"{name}: one {ProtocolSettings().num_train_epochs:g}-epoch vanilla run took {seconds:.1f}s")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--smoke", action="store_true", help="2-epoch check of the whole pipeline in a temp dir")
    group.add_argument("--time", nargs="+", choices=list(SETTINGS), metavar="SETTING", help="time full vanilla runs")
    args = parser.parse_args(argv)
    if args.smoke:
        smoke()
    else:
        time_full_runs(args.time)


if __name__ == "__main__":
    main()
