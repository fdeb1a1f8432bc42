"""Plots of the BSS curriculum: the pacing curve and the score histograms over epochs (appendix Fig. 1b / 2)."""

from __future__ import annotations


from ...plotting import plt, save_figure

FIGURE_NAME = "bss_curriculum.png"


def plot_bss_diagnostics(callback, output_dir: str) -> list[str]:
    """Write `bss_curriculum.png`: left, lambda(e) and the fraction of the training set used per epoch; right, the
    histogram of the balance scores at every scoring epoch. Returns `[path]`, or `[]` before any planning."""
    sampler = callback.sampler
    if sampler is None:
        return []
    figure, (pacing_axis, score_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    epochs = list(range(1, len(sampler.epoch_sizes) + 1))
    pacing_axis.plot(epochs, [size / sampler.num_samples for size in sampler.epoch_sizes], marker="o", markersize=3,
                     label="samples used / N")
    if callback.config.scheduler == "heuristic":
        pacing_axis.plot(epochs, [callback.fraction(e) for e in epochs], linestyle="--", label=f"λ(e), {callback.config.pacing}")
    pacing_axis.set_xlabel("epoch")
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
    return [save_figure(figure, output_dir, FIGURE_NAME)]


__all__ = ["plot_bss_diagnostics", "FIGURE_NAME"]
