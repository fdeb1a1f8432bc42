"""Plot of generated unimodal label trajectories for a few samples over epochs (SUGRM Fig. 4 style), with the true
unimodal labels when the training set has them (`true_<m>` columns, e.g. `make_synthetic_regression`)."""

from __future__ import annotations

import torch

from ...plotting import integer_ticks, plt, save_figure

FIGURE_NAME = "ulgm_label_trajectories.png"


def label_trajectories_figure(callback):
    """The open figure of `ulgm_label_trajectories.png`, or None before any epoch was tracked. One panel per tracked
    sample: each modality's generated label y_s per epoch (solid), its true unimodal label (dotted, same colour;
    gid `true_<m>`) when the data has one, and the multimodal label y_m (dashed black)."""
    tracked = {sample_id: points for sample_id, points in callback.trajectories.items() if points}
    if not tracked:
        return None
    figure, axes = plt.subplots(1, len(tracked), figsize=(3.2 * len(tracked), 3.4), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    true_labels = getattr(callback, "true_labels", {}) or {}
    for axis, (sample_id, points) in zip(axes[0], tracked.items()):
        row = int(callback.rows_of(torch.tensor([int(sample_id)]))[0])
        epochs = list(range(1, len(points) + 1))
        for index, name in enumerate(callback.names):
            colour = colours[index % len(colours)]
            axis.plot(epochs, [p[index] for p in points], marker="o", markersize=2, color=colour, label=f"{name} (generated)",
                      gid=f"generated_{name}")
            if name in true_labels:
                axis.axhline(float(true_labels[name][row]), color=colour, linestyle=":", linewidth=1.6,
                             label=f"{name} (true)", gid=f"true_{name}")
        y_m = float(callback.labels["fused"][row])
        axis.axhline(y_m, color="black", linestyle="--", linewidth=1, label="y_m (multimodal)", gid="multimodal")
        axis.set_title(f"sample {sample_id}", fontsize=9)
        axis.set_xlabel("epoch")
        integer_ticks(axis)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("unimodal label")
    axes[0][0].legend(fontsize=6)
    return figure


def plot_label_trajectories(callback, output_dir: str) -> list[str]:
    """Write `ulgm_label_trajectories.png` (see `label_trajectories_figure`); `[path]`, or `[]` without trajectories."""
    figure = label_trajectories_figure(callback)
    return [] if figure is None else [save_figure(figure, output_dir, FIGURE_NAME)]


__all__ = ["plot_label_trajectories", "label_trajectories_figure", "FIGURE_NAME"]
