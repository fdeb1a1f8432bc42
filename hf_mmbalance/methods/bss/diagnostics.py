"""Plots of the BSS curriculum: the pacing curve and the score histograms over epochs (appendix Fig. 1b / 2), and the
training curves on the curriculum's epoch axis.

BSS lays its E epochs out in ONE `Trainer` pass (`sampler.py`), so the Trainer's `epoch` in `log_history` is the
fraction of that pass (0.33, 0.67, 1.0 for E = 3). `curriculum_epoch_of_step(callback)` maps a logged `step` back to
the curriculum epoch from the planned epoch sizes: a step that completes epoch e maps to exactly e (the evaluation the
callback triggers there), a step inside epoch e to e - 1 + the fraction of epoch e's samples consumed.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

from ...plotting import CURRICULUM_EPOCH_KEY, integer_ticks, plot_training_curves, plt, save_figure

FIGURE_NAME = "bss_curriculum.png"


def curriculum_epoch_of_step(callback) -> Callable[[float], float] | None:
    """step -> curriculum epoch (float) for the run `callback` planned; None before any plan."""
    sampler = callback.sampler
    if sampler is None:
        return None
    sizes = list(sampler.epoch_sizes)
    ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    total, batch = ends[-1], max(int(getattr(callback, "_total_batch_size", 1) or 1), 1)

    def completed_at(step: float) -> int:
        return bisect.bisect_right(ends, min(max(step, 0) * batch, total))

    def epoch_of_step(step: float) -> float:
        step = float(step)
        completed = completed_at(step)
        if completed >= len(sizes):
            return float(len(sizes))
        if step >= 1 and completed > completed_at(step - 1):
            return float(completed)  # this step finished epoch `completed` (its evaluation belongs to it)
        start = ends[completed - 1] if completed else 0
        return completed + (min(step * batch, total) - start) / sizes[completed]

    return epoch_of_step


def bss_curriculum_figure(callback):
    """The open figure of `bss_curriculum.png`, or None before any planning."""
    sampler = callback.sampler
    if sampler is None:
        return None
    figure, (pacing_axis, score_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    epochs = list(range(1, len(sampler.epoch_sizes) + 1))
    pacing_axis.plot(epochs, [size / sampler.num_samples for size in sampler.epoch_sizes], marker="o", markersize=3,
                     label="samples used / N")
    if callback.config.scheduler == "heuristic":
        pacing_axis.plot(epochs, [callback.fraction(e) for e in epochs], linestyle="--", label=f"λ(e), {callback.config.pacing}")
    pacing_axis.set_xlabel("curriculum epoch")
    integer_ticks(pacing_axis)
    pacing_axis.set_ylabel("fraction of the training set")
    pacing_axis.set_ylim(0, 1.05)
    pacing_axis.set_title(f"BSS pacing ({callback.config.scheduler})")
    pacing_axis.grid(alpha=0.3)
    pacing_axis.legend(fontsize=8)
    colours = plt.cm.viridis
    history = sorted(callback.score_history.items())
    for rank, (epoch, entry) in enumerate(history):
        edges = entry["edges"]
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        score_axis.plot(centres, entry["counts"], color=colours(rank / max(len(history) - 1, 1)), label=f"epoch {epoch}")
    score_axis.set_xlabel("balance score (higher = more balanced)")
    score_axis.set_ylabel("samples")
    score_axis.set_title(f"Score distribution ({callback.config.criterion if callback.config.scheduler == 'heuristic' else 'learned'})")
    score_axis.grid(alpha=0.3)
    if 0 < len(history) <= 10:
        score_axis.legend(fontsize=7)
    return figure


def plot_bss_diagnostics(callback, output_dir: str, log_history: Sequence[dict] | None = None) -> list[str]:
    """Write `bss_curriculum.png`: left, lambda(e) and the fraction of the training set used per curriculum epoch;
    right, the histogram of the balance scores at every scoring epoch. Then, when the run logged losses or
    evaluations (`log_history`, default: the trainer's, which the callback holds) without a `curriculum_epoch` key,
    it rewrites `loss_curves.png` and `eval_curves.png` on the curriculum's epoch axis (the ones `plot_training_curves`
    writes from the Trainer's `epoch`, which is the fraction of BSS's single pass). Returns the paths written
    (`bss_curriculum.png` first), or `[]` before any planning."""
    figure = bss_curriculum_figure(callback)
    if figure is None:
        return []
    written = [save_figure(figure, output_dir, FIGURE_NAME)]
    if log_history is None:
        state = getattr(callback, "_state", None)
        log_history = state.log_history if state is not None else []
    if log_history and not any(CURRICULUM_EPOCH_KEY in entry for entry in log_history):
        model = getattr(callback, "_model", None)
        names = list(model.config.modality_names) if getattr(model, "config", None) is not None else None
        written += plot_training_curves(log_history, names, output_dir, epoch_of_step=curriculum_epoch_of_step(callback),
                                        epoch_label="curriculum epoch")
    return written


__all__ = ["plot_bss_diagnostics", "bss_curriculum_figure", "curriculum_epoch_of_step", "FIGURE_NAME"]
