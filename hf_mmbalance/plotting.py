"""PNG plots of the balance diagnostics found in a `Trainer`'s `log_history` and in a run's final metrics.

Every figure has a `*_figure` builder that returns the open matplotlib `Figure` (for tests and notebooks) and a
`plot_*` function that writes it as a PNG and returns the path. Epoch axes carry integer ticks; a log entry's epoch is
`epoch_of_step(entry["step"])` when a method lays its epochs out in one `Trainer` pass (BSS: see
`hf_mmbalance.methods.bss.diagnostics.curriculum_epoch_of_step`), else the entry's `curriculum_epoch`, else the
Trainer's `epoch`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

EpochOfStep = Callable[[float], float]
CURRICULUM_EPOCH_KEY = "curriculum_epoch"  # an entry's epoch when a method's epochs share one Trainer pass
LOSS_FIGURE = "loss_curves.png"
EVAL_FIGURE = "eval_curves.png"
IMBALANCE_FIGURE = "imbalance_summary.png"
# The fused metric that chooses the best epoch, and whether higher is better (the first one logged is used).
SELECTION_METRICS = (("eval_accuracy", True), ("eval_mae", False), ("eval_loss", False))


def series(log_history: Sequence[dict], key: str, x_key: str | Callable[[dict], float | None]) -> tuple[list[float], list[float]]:
    """The (x, y) points of `key` in `log_history`; `x_key` is a log key or a function entry -> x (None: skipped)."""
    x_of = (lambda entry: entry.get(x_key)) if isinstance(x_key, str) else x_key
    points = [(x_of(entry), entry[key]) for entry in log_history if key in entry]
    points = [(x, y) for x, y in points if x is not None]
    return [x for x, _ in points], [y for _, y in points]


def epoch_of_entry(epoch_of_step: EpochOfStep | None = None) -> Callable[[dict], float | None]:
    """entry -> its epoch: `epoch_of_step(entry["step"])` when given, else `curriculum_epoch`, else `epoch`."""

    def epoch(entry: dict) -> float | None:
        if epoch_of_step is not None and "step" in entry:
            return float(epoch_of_step(entry["step"]))
        value = entry.get(CURRICULUM_EPOCH_KEY, entry.get("epoch"))
        return None if value is None else float(value)

    return epoch


def training_time_entries(log_history: Sequence[dict]) -> list[dict]:
    """The entries logged while training: those before the Trainer's end-of-training summary (`train_runtime`).
    Evaluations run after `train()` (the CLI's final `evaluate()`) come after it and would repeat the last epoch."""
    ends = [i for i, entry in enumerate(log_history) if "train_runtime" in entry]
    return list(log_history[: ends[-1]]) if ends else list(log_history)


def best_epoch(log_history: Sequence[dict], epoch_of_step: EpochOfStep | None = None) -> dict[str, Any] | None:
    """The evaluation that would be chosen: max `eval_accuracy`, else min `eval_mae`, else min `eval_loss`, among the
    training-time evaluations (the earliest on a tie). Returns {"epoch", "step", "metric", "value"} or None."""
    entries = training_time_entries(log_history)
    x_of = epoch_of_entry(epoch_of_step)
    for metric, higher in SELECTION_METRICS:
        candidates = [e for e in entries if metric in e and x_of(e) is not None and _finite(e[metric])]
        if candidates:
            sign = -1.0 if higher else 1.0
            best = min(candidates, key=lambda e: sign * float(e[metric]))  # min keeps the first of equal values
            return {"epoch": x_of(best), "step": best.get("step"), "metric": metric, "value": float(best[metric])}
    return None


def modality_names_in(log_history_or_metrics: Sequence[dict] | Mapping[str, Any]) -> list[str]:
    """Modality names found in `eval_unimodal_<m>_<metric>` / `loss_<m>` keys (when the caller has none)."""
    entries = [log_history_or_metrics] if isinstance(log_history_or_metrics, Mapping) else log_history_or_metrics
    names: list[str] = []
    pattern = re.compile(r"^(?:eval|test)_unimodal_(.+)_(?:accuracy|mae)$")
    for entry in entries:
        for key in entry:
            match = pattern.match(key)
            if match and match.group(1) not in names:
                names.append(match.group(1))
    return names


# ----- training curves -----
def training_curves_figures(log_history: Sequence[dict], modality_names: Sequence[str] | None = None, *,
                            epoch_of_step: EpochOfStep | None = None, epoch_label: str = "epoch") -> dict[str, Any]:
    """The open figures of `plot_training_curves`, by file name (a figure with no data is left out)."""
    names = list(modality_names) if modality_names is not None else modality_names_in(log_history)
    entries = training_time_entries(log_history)
    x_of = epoch_of_entry(epoch_of_step)
    figures = {}
    loss_keys = [("loss_fused", "fused")] + [(f"loss_{name}", name) for name in names]
    if not any(key in entry for entry in entries for key, _ in loss_keys):
        loss_keys = [("loss", "training loss")]
    figure = _curves(entries, loss_keys, x_of, "training loss", "Training loss per head", epoch_label)
    if figure is not None:
        _add_step_axis(figure.axes[0], entries, x_of)
        figures[LOSS_FIGURE] = figure
    metric = "accuracy" if any("eval_accuracy" in entry for entry in log_history) else "mae"
    eval_keys = [(f"eval_{metric}", "fused")] + [(f"eval_unimodal_{name}_{metric}", name) for name in names]
    evaluated = entries if any(f"eval_{metric}" in e for e in entries) else list(log_history)  # eval after train only
    shown = "MAE" if metric == "mae" else metric
    figure = _curves(evaluated, eval_keys, x_of, f"eval {shown}", f"Evaluation {shown} per head", epoch_label)
    if figure is not None:
        best = best_epoch(evaluated, epoch_of_step)
        if best is not None:
            mark_best_epoch(figure.axes[0], best, star=best["metric"] == f"eval_{metric}")
        figures[EVAL_FIGURE] = figure
    return figures


def plot_training_curves(log_history: Sequence[dict], modality_names: Sequence[str] | None, output_dir: str, *,
                         epoch_of_step: EpochOfStep | None = None, epoch_label: str = "epoch") -> list[str]:
    """Write `loss_curves.png` (training loss of the fused head and of each unimodal head, against the epoch, with the
    optimizer step on the top axis) and `eval_curves.png` (evaluation metric of the fused head and of each unimodal
    head per epoch, the best epoch marked: max `eval_accuracy`, else min `eval_mae` / `eval_loss`).

    `epoch_of_step(step)` gives the epoch of a step when a method lays its epochs out in one Trainer pass (BSS:
    `curriculum_epoch_of_step(bss_callback)`); entries with a `curriculum_epoch` use it; else the Trainer's `epoch`.
    Evaluations logged after training (after the `train_runtime` entry) are not plotted. Returns the paths written
    (a figure with no data in the logs is skipped).
    """
    os.makedirs(output_dir, exist_ok=True)
    figures = training_curves_figures(log_history, modality_names, epoch_of_step=epoch_of_step, epoch_label=epoch_label)
    return [save_figure(figure, output_dir, filename) for filename, figure in figures.items()]


def _curves(entries, keys, x_of, y_label, title, x_label="epoch"):
    figure, axis = plt.subplots(figsize=(7, 4.5))
    plotted = False
    for key, label in keys:
        xs, ys = series(entries, key, x_of)
        if xs:
            style = {"linewidth": 2.5, "color": "black", "zorder": 3} if label == "fused" else {"linewidth": 1.3}
            axis.plot(xs, ys, label=label, marker="o" if len(xs) < 30 else None, markersize=3, **style)
            plotted = True
    if not plotted:
        plt.close(figure)
        return None
    axis.set_xlabel(x_label)
    integer_ticks(axis)
    axis.set_ylabel(y_label)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return figure


def mark_best_epoch(axis, best: Mapping[str, Any], star: bool = True) -> None:
    """A dashed vertical line at the chosen epoch (gid `best_epoch`) and, with `star`, a star on the fused curve
    (gid `best_epoch_marker`); the legend names the epoch and its value."""
    epoch, metric, value = best["epoch"], best["metric"].removeprefix("eval_"), best["value"]
    shown = f"{epoch:g}" if float(epoch).is_integer() else f"{epoch:.2f}"
    label = f"best: epoch {shown} ({metric} {value:.4g})"
    axis.axvline(epoch, color="tab:red", linestyle="--", linewidth=1, alpha=0.8, gid="best_epoch",
                 label=None if star else label)
    if star:
        axis.plot([epoch], [value], marker="*", markersize=13, color="tab:red", linestyle="none", zorder=4,
                  label=label, gid="best_epoch_marker")
    axis.legend(fontsize=8)


def _add_step_axis(axis, entries: Sequence[dict], x_of) -> None:
    """The optimizer step on the top axis, from the (epoch, step) pairs of the logs (monotone interpolation)."""
    pairs = sorted({(float(e["step"]), x_of(e)) for e in entries if "step" in e and x_of(e) is not None})
    if len(pairs) < 2:
        return
    steps = np.array([0.0] + [s for s, _ in pairs])
    epochs = np.maximum.accumulate(np.array([0.0] + [x for _, x in pairs]))
    keep = np.concatenate([[True], np.diff(epochs) > 0])  # strictly increasing for the inverse
    steps, epochs = steps[keep], epochs[keep]
    if len(steps) < 2:
        return

    top = axis.secondary_xaxis("top", functions=(piecewise_linear(epochs, steps), piecewise_linear(steps, epochs)))
    top.set_xlabel("optimizer step", fontsize=8)
    top.xaxis.set_major_locator(MaxNLocator(integer=True))
    top.tick_params(labelsize=7)


def piecewise_linear(xp: Sequence[float], fp: Sequence[float]) -> Callable:
    """x -> the piecewise-linear interpolation of (xp, fp) (xp increasing), extended linearly past both ends (a
    secondary axis is also asked for the values in the margins)."""
    xp, fp = np.asarray(xp, dtype=float), np.asarray(fp, dtype=float)
    low = (fp[1] - fp[0]) / (xp[1] - xp[0])
    high = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])

    def function(x):
        x = np.asarray(x, dtype=float)
        inside = np.interp(x, xp, fp)
        return np.where(x < xp[0], fp[0] + (x - xp[0]) * low, np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * high, inside))

    return function


def integer_ticks(axis, which: str = "x") -> None:
    """Integer major ticks on the x (or y) axis: epochs, rounds, labels."""
    (axis.xaxis if which == "x" else axis.yaxis).set_major_locator(MaxNLocator(integer=True))


# ----- imbalance summary -----
def imbalance_summary_figure(metrics: Mapping[str, Any], modality_names: Sequence[str] | None = None):
    """The open figure of `plot_imbalance_summary`, or None without any fused / unimodal metric."""
    names = list(modality_names) if modality_names is not None else modality_names_in(metrics)
    metric = "accuracy" if any(k.endswith("_accuracy") and k.split("_")[0] in ("eval", "test") for k in metrics) else "mae"
    splits = [p for p in ("eval", "test") if f"{p}_{metric}" in metrics or
              any(f"{p}_unimodal_{n}_{metric}" in metrics for n in names)]
    if not splits:
        return None
    heads = ["fused", *names]
    figure, axis = plt.subplots(figsize=(min(11.0, max(5.5, 0.6 * len(heads) * len(splits) + 2.5)), 4.5))
    width = 0.8 / len(splits)
    colours = {"eval": "tab:blue", "test": "tab:orange"}
    for index, split in enumerate(splits):
        values = [metrics.get(f"{split}_{metric}") if head == "fused" else metrics.get(f"{split}_unimodal_{head}_{metric}")
                  for head in heads]
        xs = [h + (index - (len(splits) - 1) / 2) * width for h in range(len(heads))]
        shown = [float(v) if v is not None and _finite(v) else 0.0 for v in values]
        bars = axis.bar(xs, shown, width=width * 0.95, color=colours[split], alpha=0.85,
                        label="validation" if split == "eval" else "test", gid=f"imbalance_{split}")
        for bar, value in zip(bars, values):
            if value is not None and _finite(value):
                axis.annotate(f"{float(value):.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                              ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    split = splits[-1]
    fused = metrics.get(f"{split}_{metric}")
    if fused is not None and _finite(fused):
        axis.axhline(float(fused), color="black", linestyle="--", linewidth=0.9, alpha=0.7, gid="fused_level",
                     label=f"fused ({'test' if split == 'test' else 'validation'})")
    axis.set_xticks(range(len(heads)), ["fused model" if h == "fused" else f"{h} head" for h in heads])
    if metric == "accuracy":
        axis.set_ylim(0, 1.2)
        axis.set_ylabel("accuracy (higher is better)")
    else:
        axis.set_ylabel("MAE (lower is better)")
        axis.set_ylim(0, axis.get_ylim()[1] * 1.2)
    unimodal = {n: metrics.get(f"{split}_unimodal_{n}_{metric}") for n in names}
    unimodal = {n: float(v) for n, v in unimodal.items() if v is not None and _finite(v)}
    title = f"Modality imbalance: each unimodal head vs the fused model ({'MAE' if metric == 'mae' else metric})"
    if len(unimodal) >= 2:
        best, worst = (max, min) if metric == "accuracy" else (min, max)
        strong, weak = best(unimodal, key=unimodal.get), worst(unimodal, key=unimodal.get)
        title += f"\n{'test' if split == 'test' else 'validation'}: strongest {strong} {unimodal[strong]:.3f}, weakest {weak} {unimodal[weak]:.3f}"
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3, axis="y")
    axis.legend(fontsize=8, loc="upper right", ncol=3)
    return figure


def plot_imbalance_summary(metrics: Mapping[str, Any], modality_names: Sequence[str] | None, output_dir: str,
                           filename: str = IMBALANCE_FIGURE) -> str | None:
    """Write `imbalance_summary.png`: the fused head and every unimodal head side by side, from a run's final metrics
    (`eval_accuracy` / `eval_unimodal_<m>_accuracy`, and the `test_` ones when present; MAE for regression). Works
    for any run, vanilla included. Returns the path, or None when `metrics` hold none of these values."""
    figure = imbalance_summary_figure(metrics, modality_names)
    return None if figure is None else save_figure(figure, output_dir, filename)


def save_figure(figure, output_dir: str, filename: str) -> str:
    """Lay out, write `output_dir/filename` (PNG, 110 dpi) and close `figure`; returns the path."""
    os.makedirs(output_dir, exist_ok=True)
    figure.tight_layout()
    path = os.path.join(output_dir, filename)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


__all__ = [
    "best_epoch",
    "epoch_of_entry",
    "imbalance_summary_figure",
    "integer_ticks",
    "mark_best_epoch",
    "plot_imbalance_summary",
    "plot_training_curves",
    "save_figure",
    "series",
    "training_curves_figures",
    "training_time_entries",
]
