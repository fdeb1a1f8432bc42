"""The verdict of a diagnosis (issue 17) and the method ranking, from the aggregated numbers.

Noise: with several seeds, the 95% confidence half-width of a mean (paired over seeds for a difference), Student t
with n - 1 degrees of freedom; with one seed, the sampling error of the evaluation split instead: 1.96 * sqrt(sum of
p(1 - p) / n) for accuracies (binomial), 1.96 * sqrt(sum of (1 - r^2)^2 / (n - 2)) for Pearson's r; none for MAE. A
difference whose interval holds 0 is called noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def stats(values: Sequence[float]) -> dict[str, Any]:
    """mean, sample std (0 for one value), the values themselves and their count."""
    values = [float(v) for v in values]
    return {
        "mean": float(np.mean(values)) if values else None,
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "values": values,
        "n": len(values),
    }


def t_half_width(values: Sequence[float]) -> float | None:
    """95% confidence half-width of the mean of `values` (None for fewer than 2)."""
    values = [float(v) for v in values]
    if len(values) < 2:
        return None
    from scipy.stats import t

    return float(t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))


def sampling_half_width(scores: Sequence[float], metric: str, n: int) -> float | None:
    """95% half-width of a difference of single-seed scores measured on `n` samples (see the module docstring)."""
    if n < 3 or metric not in ("accuracy", "pearson"):
        return None
    if metric == "accuracy":
        variance = sum(p * (1 - p) for p in scores) / n
    else:
        variance = sum((1 - r * r) ** 2 for r in scores) / (n - 2)
    return float(1.96 * math.sqrt(variance))


def difference_noise(a: Sequence[float], b: Sequence[float], metric: str, n: int) -> tuple[float, float | None]:
    """(mean of a - b, its 95% half-width): paired over seeds when there are several, else the split's sampling
    error of the two scores."""
    differences = [x - y for x, y in zip(a, b)]
    mean = float(np.mean(differences))
    if len(differences) > 1:
        return mean, t_half_width(differences)
    return mean, sampling_half_width([a[0], b[0]], metric, n)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _noise_text(half: float | None) -> str:
    return f" (95% noise ±{half:.3f})" if half is not None else " (no noise estimate)"


def is_noise(mean: float, half: float | None) -> bool | None:
    return None if half is None else abs(mean) <= half


def build_verdict(diagnosis: Mapping[str, Any]) -> dict[str, Any]:
    """Which modality dominates (largest mean Shapley share), which is under-trained and by how much (largest probe
    gap alone - joint), whether the fused model beats the best single modality; every number plus sentences."""
    split = diagnosis["report_split"]
    metric, higher = diagnosis["metric"]["name"], diagnosis["metric"]["higher_is_better"]
    probe_metric = diagnosis["metric"]["probe"]
    n = diagnosis["split_sizes"][split]
    report = diagnosis["modalities"]
    names = list(report)
    sentences: list[str] = []
    verdict: dict[str, Any] = {"split": split}

    gaps = {m: report[m]["gap"][split] for m in names}
    weakest = max(names, key=lambda m: gaps[m]["mean"])
    _, gap_half = difference_noise(report[weakest]["alone_probe"][split]["values"],
                                   report[weakest]["joint_probe"][split]["values"], probe_metric, n)
    gap = gaps[weakest]["mean"]
    under_trained = weakest if gap > (gap_half or 0.0) else None
    verdict.update(under_trained=under_trained, largest_gap_modality=weakest, gap=gap, gap_noise=gap_half,
                   gaps={m: gaps[m]["mean"] for m in names})
    alone, joint = report[weakest]["alone_probe"][split]["mean"], report[weakest]["joint_probe"][split]["mean"]
    if under_trained:
        relative = gap / alone if alone else float("nan")
        sentences.append(
            f"{weakest} is under-trained in the joint model: a linear probe on its joint encoder scores {joint:.3f} "
            f"({probe_metric}) against {alone:.3f} for its encoder trained alone, a gap of {gap:.3f}{_noise_text(gap_half)}, "
            f"{relative:.0%} of what it reaches alone; the largest gap of the {len(names)} modalities."
        )
    else:
        sentences.append(
            f"No modality is measurably under-trained: the largest probe gap (alone - joint) is {weakest}'s {gap:.3f}"
            f"{_noise_text(gap_half)}."
        )

    shapley = {m: report[m]["shapley"][split]["mean"]["mean"] for m in names if report[m].get("shapley")}
    dominant = max(shapley, key=shapley.get) if shapley else None
    verdict.update(dominant=dominant, shapley_means=shapley)
    if dominant is not None:
        decided = report[dominant]["shapley"][split]["dominant_fraction"]["mean"]
        rho = {m: report[m]["rho"]["mean"] for m in names if report[m].get("rho") and report[m]["rho"]["mean"] is not None}
        rho_text = (f"; its mean disparity ratio over training is rho = {rho[dominant]:.2f} (weakest: "
                    f"{min(rho, key=rho.get)} at {min(rho.values()):.2f})") if dominant in rho else ""
        verdict["rho_means"] = rho
        sentences.append(
            f"{dominant} dominates the fused prediction: its mean Shapley share is Phi = {shapley[dominant]:.2f} "
            f"(uniform would be {1 / len(names):.2f}) and it has the largest share on {decided:.0%} of the {split} "
            f"samples{rho_text}."
        )

    fused = diagnosis["fused"][split][metric]
    alone_scores = {m: report[m]["alone"][split][metric] for m in names}
    best = (max if higher else min)(names, key=lambda m: alone_scores[m]["mean"])
    sign = 1.0 if higher else -1.0
    margin, margin_half = difference_noise([sign * v for v in fused["values"]],
                                           [sign * v for v in alone_scores[best]["values"]], metric, n)
    noise = is_noise(margin, margin_half)
    beats = None if noise else margin > 0  # None: level within the noise
    verdict.update(best_single=best, fused=fused["mean"], best_single_score=alone_scores[best]["mean"],
                   fused_margin=margin, fused_margin_noise=margin_half, fused_beats_best_single=beats)
    outcome = {True: "beats", False: "falls below", None: "is level with"}[beats]
    sentences.append(
        f"The fused model ({metric} {fused['mean']:.3f}) {outcome} the best single modality, {best} alone "
        f"({alone_scores[best]['mean']:.3f}): the fused model's advantage is {margin:+.3f}{_noise_text(margin_half)}"
        + ("." if higher else f" (lower {metric} is better).")
    )

    bss = diagnosis.get("bss") or {}
    if bss.get("fraction_unbalanced") and bss["fraction_unbalanced"].get("mean") is not None:
        sentences.append(
            f"The BSS measurer ({bss['criterion']}) finds {bss['fraction_unbalanced']['mean']:.0%} of the training "
            f"samples unbalanced (balance score below {bss['threshold']:g})."
        )
    ranking = diagnosis.get("ranking")
    if ranking:
        sentences.append(ranking_sentence(ranking, metric))
    elif diagnosis["budget"] == "quick":
        sentences.append("Run with --budget full to compare the balancing methods on the same budget.")
    verdict["text"] = sentences
    return verdict


def rank_methods(by_method: Mapping[str, Mapping[str, Any]], weak: str, metric: str, higher: bool,
                 n: int) -> dict[str, Any]:
    """Rank the methods (vanilla included) by the validation fused metric and by the weak modality's gap.

    `by_method`: method -> {"validation": [fused metric per seed], "gap": [weak modality's gap per seed on the report
    split]}, the seeds in the same order for every method. Each row also holds the difference to vanilla, paired
    over seeds, with its 95% half-width and whether it is noise."""
    rows = []
    base = by_method.get("vanilla")
    for method, values in by_method.items():
        row = {"method": method, "validation": stats(values["validation"]), "weak_gap": stats(values["gap"])}
        if base is not None and method != "vanilla":
            sign = 1.0 if higher else -1.0
            diff, half = difference_noise([sign * v for v in values["validation"]],
                                          [sign * v for v in base["validation"]], metric, n)
            gap_diff, gap_half = difference_noise(base["gap"], values["gap"], "", n)  # one seed: none
            row.update(vs_vanilla_validation=diff, vs_vanilla_validation_noise=half,
                       vs_vanilla_validation_is_noise=is_noise(diff, half),
                       gap_reduction=gap_diff, gap_reduction_noise=gap_half, gap_reduction_is_noise=is_noise(gap_diff, gap_half))
        rows.append(row)
    by_fused = sorted(rows, key=lambda r: -r["validation"]["mean"] if higher else r["validation"]["mean"])
    by_gap = sorted(rows, key=lambda r: r["weak_gap"]["mean"])
    return {"weak_modality": weak, "metric": metric, "rows": rows,
            "by_validation": [r["method"] for r in by_fused], "by_weak_gap": [r["method"] for r in by_gap]}


def ranking_sentence(ranking: Mapping[str, Any], metric: str) -> str:
    rows = {r["method"]: r for r in ranking["rows"]}
    top, closest = ranking["by_validation"][0], ranking["by_weak_gap"][0]

    def versus(method: str, key: str) -> str:
        row = rows[method]
        if method == "vanilla" or f"{key}_is_noise" not in row:
            return ""
        noise = row[f"{key}_is_noise"]
        label = "noise" if noise else ("not noise" if noise is False else "no noise estimate")
        return f", {row[key]:+.3f} vs vanilla ({label}, ±{_fmt(row[key + '_noise'])})"

    return (f"Methods ranked on the same budget ({rows[top]['validation']['n']} seeds): best validation {metric}: "
            f"{top} ({rows[top]['validation']['mean']:.3f}{versus(top, 'vs_vanilla_validation')}); smallest gap of "
            f"{ranking['weak_modality']}: {closest} ({rows[closest]['weak_gap']['mean']:.3f}"
            f"{versus(closest, 'gap_reduction')}).")


__all__ = ["build_verdict", "difference_noise", "rank_methods", "sampling_half_width", "stats", "t_half_width"]
