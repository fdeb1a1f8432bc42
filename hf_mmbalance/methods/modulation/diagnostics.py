"""Plot of the disparity ratios and coefficients over training (Ada2I Fig. 4 style), from `log_history`."""

from __future__ import annotations

from collections.abc import Sequence

from ...plotting import epoch_of_entry, integer_ticks, plt, save_figure, series

FIGURE_NAME = "disparity_ratios.png"
# Prefix of the per-modality values `GradientModulationCallback` logs: `modulation/rho_<m>`, `modulation/k_<m>`.
LOG_PREFIX = "modulation/"


def disparity_ratios_figure(log_history: Sequence[dict], modality_names: Sequence[str], monitored: bool = False):
    """The open figure of `disparity_ratios.png`, or None without logged ratios. The x axis is the entries'
    `curriculum_epoch` when present (modulation together with BSS), else the Trainer's `epoch`. `monitored`: the run
    only measured rho / k (`monitor_only`): the title says no gradient was changed."""
    panels = (("rho", "disparity ratio $\\rho_m$ (Eq. 17)"), ("k", "coefficient $k_m$ (Eq. 18)"))
    if not any(LOG_PREFIX + f"rho_{name}" in entry for entry in log_history for name in modality_names):
        return None
    epoch = epoch_of_entry()
    figure, axes = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    for axis, (quantity, label) in zip(axes, panels):
        for name in modality_names:
            xs, ys = series(log_history, f"{LOG_PREFIX}{quantity}_{name}", epoch)
            axis.plot(xs, ys, label=name, linewidth=1.3)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axes[0].legend(fontsize=8, ncol=min(len(modality_names), 6))
    axes[0].set_title(
        "Disparity ratios, monitored only: no gradient was changed" if monitored
        else "Gradient modulation per modality (mean over each logging window)"
    )
    axes[1].set_xlabel("epoch")
    integer_ticks(axes[1])
    return figure


def plot_disparity_ratios(
    log_history: Sequence[dict], modality_names: Sequence[str], output_dir: str, monitored: bool = False
) -> list[str]:
    """Write `disparity_ratios.png`: rho_m (top) and k_m (bottom) per modality against the epoch, from the
    `modulation/rho_<m>` / `modulation/k_<m>` entries the callback logs. Returns `[path]`, or `[]` without them."""
    figure = disparity_ratios_figure(log_history, modality_names, monitored)
    return [] if figure is None else [save_figure(figure, output_dir, FIGURE_NAME)]


__all__ = ["plot_disparity_ratios", "disparity_ratios_figure", "FIGURE_NAME"]
