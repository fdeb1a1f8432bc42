"""Active-learning plots: fused accuracy per labels used for each strategy, and the mean Phi per modality per
round (BMMAL Fig. 2-3 style)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from ...plotting import integer_ticks, piecewise_linear, plt, save_figure
from .state import STATE_FILE, ActiveLearningState

StatesOrFolder = Mapping[str, ActiveLearningState] | str | os.PathLike


def find_states(folder: str | os.PathLike, max_depth: int = 2) -> dict[str, ActiveLearningState]:
    """Every active-learning run under `folder` (its own `active_learning_state.json` and those of the folders below
    it, `max_depth` levels deep; `round-<r>` folders are skipped), by name: the run folder's path relative to
    `folder` (the strategy's name for `folder` itself), in sorted order."""
    folder = os.fspath(folder)
    found: dict[str, ActiveLearningState] = {}
    for root, dirs, files in os.walk(folder):
        relative = os.path.relpath(root, folder)
        depth = 0 if relative == "." else relative.count(os.sep) + 1
        dirs[:] = sorted(d for d in dirs if not d.startswith("round-") and not d.startswith(".") and depth < max_depth)
        if STATE_FILE in files:
            state = ActiveLearningState.load(root)
            if state is not None:
                name = str(state.config.get("strategy", "run")) if relative == "." else relative
                found[name] = state
    return dict(sorted(found.items()))


def _states(states: StatesOrFolder) -> dict[str, ActiveLearningState]:
    if isinstance(states, (str, os.PathLike)):
        found = find_states(states)
        if not found:
            raise FileNotFoundError(f"no {STATE_FILE} in {os.fspath(states)!r} or the folders below it")
        return found
    return dict(states)


def _points(state: ActiveLearningState, metric: str) -> list[tuple[int, float, float]]:
    """(round, labels used, metric) of every trained round."""
    return [(r.round, r.metrics["labels_used"], r.metrics[metric]) for r in state.rounds
            if r.metrics and metric in r.metrics and "labels_used" in r.metrics]


def learning_curves_figure(states: StatesOrFolder, metric: str = "eval_accuracy"):
    """The open figure of `plot_learning_curves`: one line per strategy (run), `metric` against the labels used, and
    the acquisition round on the top axis (integer ticks on both)."""
    runs = _states(states)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    reference = None
    for name, state in runs.items():
        points = _points(state, metric)
        axis.plot([x for _, x, _ in points], [y for _, _, y in points], marker="o", markersize=3, label=name, gid=name)
        if points and (reference is None or len(points) > len(reference[1])):
            reference = (name, points)
    axis.set_xlabel("labels used")
    integer_ticks(axis)
    axis.set_ylabel(metric)
    axis.set_title(f"Active learning: {metric.removeprefix('eval_')} per labels used")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    if reference is not None and len(reference[1]) >= 2:
        name, points = reference
        rounds = np.array([r for r, _, _ in points], dtype=float)
        labels = np.array([x for _, x, _ in points], dtype=float)
        if np.all(np.diff(labels) > 0):
            schedules = {tuple(x for _, x, _ in _points(s, metric)) for s in runs.values() if _points(s, metric)}
            same = all(s == tuple(labels[: len(s)]) or tuple(labels) == s[: len(labels)] for s in schedules)
            top = axis.secondary_xaxis("top", functions=(piecewise_linear(labels, rounds), piecewise_linear(rounds, labels)))
            top.set_xticks(rounds.astype(int).tolist())
            top.set_xlabel("round" if same else f"round ({name})", fontsize=8)
            top.tick_params(labelsize=7)
    return figure


def plot_learning_curves(states: StatesOrFolder, output_dir: str | os.PathLike | None = None,
                         metric: str = "eval_accuracy", filename: str = "learning_curves.png") -> str:
    """One line per strategy: `metric` of each round's model against the labels it was trained on.

    `states`: {name: ActiveLearningState}, or a folder: its own run and every run in the folders below it (e.g. the
    parent of one output_dir per strategy; see `find_states`). `output_dir` defaults to that folder."""
    if output_dir is None:
        if not isinstance(states, (str, os.PathLike)):
            raise ValueError("plot_learning_curves: pass output_dir (or a folder of runs as `states`)")
        output_dir = states
    return save_figure(learning_curves_figure(states, metric), os.fspath(output_dir), filename)


def contributions_figure(state: ActiveLearningState):
    """The open figure of `plot_contributions`, or None without Shapley contributions."""
    rounds = [r for r in state.rounds if r.mean_contributions]
    if not rounds:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name in rounds[0].mean_contributions:
        axis.plot([r.round for r in rounds], [r.mean_contributions[name] for r in rounds], marker="o", label=name)
    axis.set_xlabel("acquisition round")
    integer_ticks(axis)
    axis.set_ylabel(r"mean $\Phi_m$ over the unlabelled pool")
    axis.set_title("Modality contributions (Shapley) per round")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return figure


def plot_contributions(state: ActiveLearningState, output_dir: str, filename: str = "contributions.png") -> str | None:
    """Mean Phi per modality over the scored pool at every acquisition round (bmmal only); None without them."""
    figure = contributions_figure(state)
    return None if figure is None else save_figure(figure, output_dir, filename)


__all__ = ["plot_learning_curves", "plot_contributions", "find_states", "learning_curves_figure", "contributions_figure"]
