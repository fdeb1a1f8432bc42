"""Plot of generated unimodal label trajectories for a few samples over epochs (SUGRM Fig. 4 style)."""

from __future__ import annotations

import torch

from ...plotting import plt, save_figure

FIGURE_NAME = "ulgm_label_trajectories.png"


def plot_label_trajectories(callback, output_dir: str) -> list[str]:
    """One panel per tracked sample: each modality's generated label per epoch, and the multimodal label."""
    tracked = {sample_id: points for sample_id, points in callback.trajectories.items() if points}
    if not tracked:
        return []
    figure, axes = plt.subplots(1, len(tracked), figsize=(3.2 * len(tracked), 3.2), squeeze=False, sharey=True)
    for axis, (sample_id, points) in zip(axes[0], tracked.items()):
        epochs = list(range(1, len(points) + 1))
        for index, name in enumerate(callback.names):
            axis.plot(epochs, [p[index] for p in points], marker="o", markersize=2, label=name)
        y_m = float(callback.labels["fused"][callback.rows_of(torch.tensor([int(sample_id)]))[0]])
        axis.axhline(y_m, color="black", linestyle="--", linewidth=1, label="y_m")
        axis.set_title(f"sample {sample_id}", fontsize=9)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("generated label")
    axes[0][0].legend(fontsize=7)
    return [save_figure(figure, output_dir, FIGURE_NAME)]


__all__ = ["plot_label_trajectories"]
