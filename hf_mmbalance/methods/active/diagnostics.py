"""Active-learning plots: fused accuracy per labels used for each strategy, and the mean Phi per modality per
round (BMMAL Fig. 2-3 style)."""

from __future__ import annotations

from collections.abc import Mapping

from ...plotting import plt, save_figure
from .state import ActiveLearningState


def plot_learning_curves(states: Mapping[str, ActiveLearningState], output_dir: str, metric: str = "eval_accuracy",
                         filename: str = "learning_curves.png") -> str:
    """One line per strategy: `metric` of each round's model against the labels it was trained on."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, state in states.items():
        points = [(r.metrics["labels_used"], r.metrics[metric]) for r in state.rounds if r.metrics and metric in r.metrics]
        axis.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=3, label=name)
    axis.set_xlabel("labels used")
    axis.set_ylabel(metric)
    axis.set_title("Active learning: accuracy per labels used")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return save_figure(figure, output_dir, filename)


def plot_contributions(state: ActiveLearningState, output_dir: str, filename: str = "contributions.png") -> str | None:
    """Mean Phi per modality over the scored pool at every acquisition round (bmmal only); None without them."""
    rounds = [r for r in state.rounds if r.mean_contributions]
    if not rounds:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name in rounds[0].mean_contributions:
        axis.plot([r.round for r in rounds], [r.mean_contributions[name] for r in rounds], marker="o", label=name)
    axis.set_xlabel("acquisition round")
    axis.set_ylabel(r"mean $\Phi_m$ over the unlabelled pool")
    axis.set_title("Modality contributions (Shapley) per round")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return save_figure(figure, output_dir, filename)


__all__ = ["plot_learning_curves", "plot_contributions"]
