"""The one-page PNG of a diagnosis (issue 17): (a) per modality, alone vs the joint model's probe (and the joint
unimodal heads), the fused model as a line; (b) the distribution of each modality's Shapley share Phi_m; (c) the
disparity ratios rho_m over training; (d) the method ranking (`--budget full`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..plotting import integer_ticks, plt


def diagnosis_figure(diagnosis: Mapping[str, Any]):
    """The open figure of `diagnosis.png`."""
    split = diagnosis["report_split"]
    names = diagnosis["modality_names"]
    metric = diagnosis["metric"]["name"]
    figure, axes = plt.subplots(2, 2, figsize=(13, 10))
    figure.suptitle(f"Modality balance diagnosis ({split} split, {diagnosis['budget']} budget, "
                    f"{len(diagnosis['seeds'])} seed(s), {diagnosis['epochs']:g} epochs)", fontsize=13)
    _bars(axes[0][0], diagnosis, split, names)
    _shapley(axes[0][1], diagnosis, split, names)
    _rho(axes[1][0], diagnosis, names)
    _ranking(axes[1][1], diagnosis, metric)
    verdict = diagnosis.get("verdict", {})
    summary = []
    if verdict.get("under_trained"):
        summary.append(f"under-trained: {verdict['under_trained']} (gap {verdict['gap']:.3f})")
    if verdict.get("dominant"):
        summary.append(f"dominant: {verdict['dominant']} (Φ {verdict['shapley_means'][verdict['dominant']]:.2f})")
    if "fused_margin" in verdict:
        summary.append(f"fused − best single ({verdict['best_single']}): {verdict['fused_margin']:+.3f}")
    figure.text(0.5, 0.005, "   ·   ".join(summary), ha="center", va="bottom", fontsize=11)
    figure.tight_layout(rect=(0, 0.03, 1, 0.96))
    return figure


def _bars(axis, diagnosis, split, names) -> None:
    report = diagnosis["modalities"]
    metric, probe = diagnosis["metric"]["name"], diagnosis["metric"]["probe"]
    series = [("alone: own model (" + metric + ")", lambda e: e["alone"][split][metric]),
              ("alone: probe (" + probe + ")", lambda e: e["alone_probe"][split]),
              ("joint: probe (" + probe + ")", lambda e: e["joint_probe"][split])]
    if all(report[m].get("unimodal_head") for m in names):
        series.append(("joint: unimodal head", lambda e: e["unimodal_head"][split][metric]))
    x = np.arange(len(names))
    width = 0.8 / len(series)
    lowest = 1.0
    for i, (label, get) in enumerate(series):
        means = np.array([get(report[m])["mean"] for m in names])
        stds = np.array([get(report[m])["std"] for m in names])
        axis.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=stds if stds.any() else None, capsize=2, label=label,
                 color=f"C{i}")
        lowest = min(lowest, float(np.min(means - stds)))
    fused = diagnosis["fused"][split][metric]["mean"]
    axis.axhline(fused, color="black", linestyle="--", linewidth=1.2, label=f"fused (joint) {fused:.3f}")
    higher = diagnosis["metric"]["higher_is_better"]
    if higher:
        bottom = max(0.0, min(lowest, fused) - 0.05)
        axis.set_ylim(bottom, 1.0 + 0.02 * (1.0 - bottom))
    gaps = [report[m]["gap"][split]["mean"] for m in names]
    axis.set_xticks(x, [f"{m}\ngap {gap:+.3f}" for m, gap in zip(names, gaps)])
    axis.set_ylabel(f"{split} score")
    axis.set_title("(a) each modality alone vs in the joint model")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)


def _shapley(axis, diagnosis, split, names) -> None:
    report = diagnosis["modalities"]
    for i, m in enumerate(names):
        shapley = report[m]["shapley"][split]
        edges = np.array(shapley["histogram"]["edges"])
        counts = np.array(shapley["histogram"]["counts"], dtype=float)
        density = counts / max(counts.sum(), 1.0)
        axis.stairs(density, edges, label=f"{m} (mean {shapley['mean']['mean']:.2f})", color=f"C{i}", linewidth=1.6)
        axis.axvline(shapley["mean"]["mean"], color=f"C{i}", linestyle=":", linewidth=1.2)
    axis.axvline(1 / len(names), color="grey", linestyle="--", linewidth=1, label=f"uniform 1/M = {1 / len(names):.2f}")
    axis.set_xlim(0, 1)
    axis.set_xlabel("Shapley share Φ_m of the fused prediction (per sample)")
    axis.set_ylabel("fraction of samples")
    axis.set_title("(b) distribution of Φ_m (exact Shapley, BMMAL Eq. 9-11)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)


def _rho(axis, diagnosis, names) -> None:
    report = diagnosis["modalities"]
    curves = {m: (report[m].get("rho") or {}).get("curve") or [] for m in names}
    if not any(curves.values()):
        axis.text(0.5, 0.5, "no disparity ratios\n(regression: Ada2I scores are class probabilities)",
                  ha="center", va="center", transform=axis.transAxes)
        axis.set_axis_off()
        return
    for i, m in enumerate(names):
        if curves[m]:
            epochs, values = zip(*curves[m])
            axis.plot(epochs, values, marker="o", markersize=3, label=f"{m} (mean {report[m]['rho']['mean']:.2f})",
                      color=f"C{i}")
    axis.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    axis.set_xlabel("epoch")
    axis.set_ylabel("ρ_m = s_m / min_j s_j (epoch mean)")
    axis.set_title("(c) disparity ratios over training (vanilla, monitored only)")
    integer_ticks(axis)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)


def _ranking(axis, diagnosis, metric) -> None:
    ranking = diagnosis.get("ranking")
    if not ranking:
        axis.text(0.5, 0.5, "method ranking: not run\n(quick budget; use --budget full)", ha="center", va="center",
                  transform=axis.transAxes, fontsize=11)
        axis.set_axis_off()
        return
    rows = {row["method"]: row for row in ranking["rows"]}
    order = ranking["by_validation"]
    y = np.arange(len(order))[::-1]
    means = [rows[m]["validation"]["mean"] for m in order]
    stds = [rows[m]["validation"]["std"] for m in order]
    axis.barh(y + 0.2, means, 0.4, xerr=stds, capsize=3, color="C0", label=f"validation fused {metric}")
    gap_axis = axis.twiny()
    gaps = [rows[m]["weak_gap"]["mean"] for m in order]
    gap_stds = [rows[m]["weak_gap"]["std"] for m in order]
    gap_axis.barh(y - 0.2, gaps, 0.4, xerr=gap_stds, capsize=3, color="C3", label=f"{ranking['weak_modality']} gap")
    gap_axis.set_xlabel(f"{ranking['weak_modality']}'s probe gap (alone − joint), red", color="C3")
    low = min(m - s for m, s in zip(means, stds))
    high = max(m + s for m, s in zip(means, stds))
    axis.set_xlim(low - 0.3 * (high - low + 1e-3), high + 0.1 * (high - low + 1e-3))
    axis.set_yticks(y, order)
    axis.set_xlabel(f"validation fused {metric}, blue (mean ± std over {rows[order[0]]['validation']['n']} seeds)",
                    color="C0")
    axis.set_title("(d) methods on the same budget, best first", pad=28)
    axis.grid(axis="x", alpha=0.3)


def plot_diagnosis(diagnosis: Mapping[str, Any], path: str) -> str:
    figure = diagnosis_figure(diagnosis)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


__all__ = ["diagnosis_figure", "plot_diagnosis"]
