"""PNG plots of the balance diagnostics found in a `Trainer`'s `log_history`."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def series(log_history: Sequence[dict], key: str, x_key: str) -> tuple[list[float], list[float]]:
    points = [(entry[x_key], entry[key]) for entry in log_history if key in entry and x_key in entry]
    return [x for x, _ in points], [y for _, y in points]


def plot_training_curves(log_history: Sequence[dict], modality_names: Sequence[str], output_dir: str) -> list[str]:
    """Write `loss_curves.png` (training loss of the fused head and of each unimodal head, per step) and
    `eval_curves.png` (evaluation metric of the fused head and of each unimodal head, per epoch).

    Returns the paths written (a figure with no data in the logs is skipped).
    """
    os.makedirs(output_dir, exist_ok=True)
    written = []
    loss_keys = [("loss_fused", "fused")] + [(f"loss_{name}", name) for name in modality_names]
    path = _plot(log_history, loss_keys, "step", "training loss", "Training loss per head", output_dir, "loss_curves.png")
    if path:
        written.append(path)
    metric = "accuracy" if any("eval_accuracy" in entry for entry in log_history) else "mae"
    eval_keys = [(f"eval_{metric}", "fused")] + [(f"eval_unimodal_{name}_{metric}", name) for name in modality_names]
    path = _plot(log_history, eval_keys, "epoch", f"eval {metric}", f"Evaluation {metric} per head", output_dir, "eval_curves.png")
    if path:
        written.append(path)
    return written


def _plot(log_history, keys, x_key, y_label, title, output_dir, filename) -> str | None:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    plotted = False
    for key, label in keys:
        xs, ys = series(log_history, key, x_key)
        if xs:
            style = {"linewidth": 2.5, "color": "black"} if label == "fused" else {"linewidth": 1.3}
            axis.plot(xs, ys, label=label, marker="o" if len(xs) < 30 else None, markersize=3, **style)
            plotted = True
    if not plotted:
        plt.close(figure)
        return None
    axis.set_xlabel(x_key)
    axis.set_ylabel(y_label)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return save_figure(figure, output_dir, filename)


def save_figure(figure, output_dir: str, filename: str) -> str:
    """Lay out, write `output_dir/filename` (PNG, 110 dpi) and close `figure`; returns the path."""
    os.makedirs(output_dir, exist_ok=True)
    figure.tight_layout()
    path = os.path.join(output_dir, filename)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
