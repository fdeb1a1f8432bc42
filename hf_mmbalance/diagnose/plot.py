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
        summary.append(f"fused model's advantage over the best single ({verdict['best_single']}): "
                       f"{verdict['fused_margin']:+.3f}")
    figure.text(0.5, 0.005, "   ·   ".join(summary), ha="center", va="bottom", fontsize=11)
    figure.tight_layout(rect=(0, 0.03, 1, 0.96))
    return figure


def _bars(axis, diagnosis, split, names) -> None:
    report = diagnosis["modalities"]
    # One scale and direction for every bar: regression shows Pearson's r (the probe's score), not the MAE
    higher = diagnosis["metric"]["higher_is_better"]
    metric = diagnosis["metric"]["name"] if higher else "pearson"
    probe = diagnosis["metric"]["probe"]
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
    bottom = max(0.0, min(lowest, fused) - 0.05) if min(lowest, fused) >= 0 else max(-1.0, min(lowest, fused) - 0.05)
    axis.set_ylim(bottom, 1.0 + 0.02 * (1.0 - bottom))
    gaps = [report[m]["gap"][split]["mean"] for m in names]
    axis.set_xticks(x, [f"{m}\n{gap:+.3f}" for m, gap in zip(names, gaps)])
    axis.set_ylabel(f"{split} score")
    axis.set_title("(a) each modality alone vs in the joint model (under each name: its probe gap)", fontsize=11)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)


def _shapley(axis, diagnosis, split, names) -> None:
    """Box per modality from the stored quantiles (whiskers 5-95%, box 25-75%, median line, mean marker)."""
    report = diagnosis["modalities"]
    boxes = []
    for m in names:
        shapley = report[m]["shapley"][split]
        q = shapley["quantiles"]
        boxes.append({"label": m, "whislo": q["q05"], "q1": q["q25"], "med": q["q50"], "q3": q["q75"],
                      "whishi": q["q95"], "mean": shapley["mean"]["mean"], "fliers": []})
    drawn = axis.bxp(boxes, showmeans=True, patch_artist=True, medianprops={"color": "black"}, meanprops={"marker": "D", "markerfacecolor": "black",
                                                                          "markeredgecolor": "black", "markersize": 5})
    for i, patch in enumerate(drawn["boxes"]):
        patch.set_facecolor(f"C{i}")
        patch.set_alpha(0.6)
    for i, m in enumerate(names, start=1):
        mean = report[m]["shapley"][split]["mean"]["mean"]
        axis.annotate(f"{mean:.2f}", (i, mean), textcoords="offset points", xytext=(9, -3), fontsize=8)
    axis.axhline(1 / len(names), color="grey", linestyle="--", linewidth=1, label=f"uniform 1/M = {1 / len(names):.2f}")
    axis.set_ylim(-0.02, 1.02)
    axis.set_ylabel("Shapley share Φ_m of the fused prediction")
    axis.set_title("(b) Φ_m per sample: box 25-75%, whiskers 5-95%, ◆ mean")
    axis.legend(fontsize=8, loc="upper right")
    axis.grid(axis="y", alpha=0.3)


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
    y = np.arange(len(order))[::-1].astype(float)
    means = [rows[m]["validation"]["mean"] for m in order]
    stds = [rows[m]["validation"]["std"] for m in order]
    axis.errorbar(means, y + 0.12, xerr=stds, fmt="o", color="C0", capsize=4, markersize=7)
    gap_axis = axis.twiny()
    gaps = [rows[m]["weak_gap"]["mean"] for m in order]
    gap_stds = [rows[m]["weak_gap"]["std"] for m in order]
    gap_axis.errorbar(gaps, y - 0.12, xerr=gap_stds, fmt="s", color="C3", capsize=4, markersize=7)
    gap_axis.set_xlabel(f"{ranking['weak_modality']}'s probe gap alone − joint (red squares; smaller is better)",
                        color="C3")
    gap_axis.tick_params(axis="x", colors="C3")
    axis.tick_params(axis="x", colors="C0")
    axis.set_yticks(y, order)
    axis.set_ylim(-0.6, len(order) - 0.4)
    axis.set_xlabel(f"validation fused {metric} (blue dots; mean ± std over {rows[order[0]]['validation']['n']} seeds)",
                    color="C0")
    axis.set_title("(d) methods on the same budget, best first", pad=28)
    axis.grid(axis="x", alpha=0.3)


def plot_diagnosis(diagnosis: Mapping[str, Any], path: str) -> str:
    figure = diagnosis_figure(diagnosis)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


__all__ = ["diagnosis_figure", "plot_diagnosis"]
