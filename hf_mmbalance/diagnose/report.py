"""The files of a diagnosis (issue 17): `diagnosis.json` (every number), `diagnosis.md` (tables and the verdict),
`diagnosis.png` (`plot.py`), and the "Balance report" section a later training's model card includes
(`hf-mmbalance train --balance_report diagnosis.json`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from ..trainer.checkpoint_state import write_json_atomic
from .config import DiagnoseError

JSON_NAME = "diagnosis.json"
MARKDOWN_NAME = "diagnosis.md"
FIGURE_NAME = "diagnosis.png"
# Keys every diagnosis.json holds (checked when a model card reads one).
REQUIRED_KEYS = ("task", "modality_names", "budget", "seeds", "metric", "report_split", "fused", "modalities", "bss",
                 "verdict")


def _ms(stat: Mapping[str, Any] | None, digits: int = 3) -> str:
    """'mean ± std' ('mean' for one seed; '–' when missing)."""
    if not stat or stat.get("mean") is None:
        return "–"
    if stat.get("n", 1) > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def modality_table(diagnosis: Mapping[str, Any], split: str) -> str:
    """Per modality: alone, alone probe, joint probe, gap, unimodal head, mean Phi, Phi dominant share, mean rho."""
    metric = diagnosis["metric"]["name"]
    probe = diagnosis["metric"]["probe"]
    fused = diagnosis["fused"][split][metric]
    header = ["modality", f"alone ({metric})", f"alone probe ({probe})", f"joint probe ({probe})", "gap (alone − joint)",
              f"joint unimodal head ({metric})", "mean Φ (Shapley)", "Φ largest on", "mean ρ (training)"]
    lines = [f"Fused (joint) {metric}: {_ms(fused)}.", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in diagnosis["modalities"].items():
        head = entry.get("unimodal_head")
        shapley = entry["shapley"][split]
        rho = (entry.get("rho") or {}).get("mean")
        dominant = shapley["dominant_fraction"]
        lines.append("| " + " | ".join([
            name, _ms(entry["alone"][split][metric]), _ms(entry["alone_probe"][split]), _ms(entry["joint_probe"][split]),
            _ms(entry["gap"][split]), _ms(head[split][metric]) if head else "no heads", _ms(shapley["mean"]),
            f"{dominant['mean']:.0%}", "–" if rho is None else f"{rho:.3f}",
        ]) + " |")
    return "\n".join(lines)


def ranking_table(ranking: Mapping[str, Any]) -> str:
    metric = ranking["metric"]
    weak = ranking["weak_modality"]
    header = ["rank (validation)", "method", f"validation fused {metric}", "vs vanilla (95% noise)", f"{weak} gap",
              "gap reduction vs vanilla (95% noise)", "rank (gap)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = {row["method"]: row for row in ranking["rows"]}

    def diff(row, key):
        if key not in row:
            return "–"
        noise = row[f"{key}_noise"]
        flag = {True: "noise", False: "not noise", None: "no estimate"}[row[f"{key}_is_noise"]]
        return f"{row[key]:+.3f} (±{noise:.3f}, {flag})" if noise is not None else f"{row[key]:+.3f} ({flag})"

    for rank, method in enumerate(ranking["by_validation"], start=1):
        row = rows[method]
        lines.append("| " + " | ".join([
            str(rank), method, _ms(row["validation"]), diff(row, "vs_vanilla_validation"), _ms(row["weak_gap"]),
            diff(row, "gap_reduction"), str(ranking["by_weak_gap"].index(method) + 1),
        ]) + " |")
    return "\n".join(lines)


def balance_report_section(diagnosis: Mapping[str, Any], heading: str = "## Balance report") -> str:
    """The model card's "Balance report" section: the verdict's sentences and the per-modality table of the report
    split (from `hf-mmbalance diagnose`)."""
    verdict = diagnosis["verdict"]
    split = diagnosis["report_split"]
    seeds = len(diagnosis["seeds"])
    lines = [
        heading, "",
        f"From `hf-mmbalance diagnose` ({diagnosis['budget']} budget, {diagnosis['epochs']:g} epochs, {seeds} "
        f"seed{'s' * (seeds > 1)}; {split} split): each modality trained alone against the joint vanilla model.",
        "",
        *[f"- {sentence}" for sentence in verdict["text"]],
        "",
        modality_table(diagnosis, split),
    ]
    if diagnosis.get("ranking"):
        lines += ["", ranking_table(diagnosis["ranking"])]
    return "\n".join(lines) + "\n"


def diagnosis_markdown(diagnosis: Mapping[str, Any]) -> str:
    splits = diagnosis["splits"]
    parts = [
        "# Modality balance diagnosis", "",
        f"Task: {diagnosis['task']} ({diagnosis['task_reason']}); modalities: {', '.join(diagnosis['modality_names'])}; "
        f"budget {diagnosis['budget']}: {diagnosis['epochs']:g} epochs per training, seeds {diagnosis['seeds']}; the "
        f"epoch of every training picked on the validation split.",
        "",
        "## Verdict", "", *[f"- {sentence}" for sentence in diagnosis["verdict"]["text"]], "",
    ]
    if diagnosis.get("command"):
        parts[2:2] = [f"Command: `{diagnosis['command']}`", ""]
    for split in splits:
        parts += [f"## Per modality ({split} split)", "", modality_table(diagnosis, split), ""]
    parts += [
        "Alone: the modality's own model (same recipe). Probe: a linear probe fit on the train split's frozen encoder "
        "features (standardized logistic regression; ridge + Pearson for regression). Gap > 0: the encoder learned "
        "less in the joint model than alone. Φ: exact Shapley share of the fused prediction (BMMAL Eq. 9-11, a "
        "missing modality = zero features); 'Φ largest on': the share of samples where this modality contributes most. "
        "ρ: Ada2I disparity ratio s_m / min_j s_j over training (monitored, gradients untouched).", "",
    ]
    bss = diagnosis["bss"]
    if bss.get("fraction_unbalanced"):
        fraction = bss["fraction_unbalanced"]
        spread = f" ± {fraction['std']:.1%}" if fraction["n"] > 1 else ""
        quantiles = ", ".join(f"{q} {v:.2f}" for q, v in bss["per_seed"][0]["score_quantiles"].items())
        parts += [f"BSS measurer ({bss['criterion']}, train split, joint model): {fraction['mean']:.1%}{spread} of the "
                  f"samples score below {bss['threshold']:g} (balance score quantiles, first seed: {quantiles}).", ""]
    if diagnosis.get("ranking"):
        parts += ["## Methods on the same budget", "", ranking_table(diagnosis["ranking"]), ""]
    parts += ["## Files", "", f"`{JSON_NAME}` (every number), `{FIGURE_NAME}`, the trainings under `diagnose_parts/`.", ""]
    return "\n".join(parts)


def write_outputs(diagnosis: dict[str, Any], output_dir: str) -> dict[str, str]:
    """Write diagnosis.json, diagnosis.md and diagnosis.png into `output_dir`; returns {kind: path}."""
    from .plot import plot_diagnosis

    files = {"json": os.path.join(output_dir, JSON_NAME), "markdown": os.path.join(output_dir, MARKDOWN_NAME),
             "figure": os.path.join(output_dir, FIGURE_NAME)}
    diagnosis["files"] = {kind: os.path.basename(path) for kind, path in files.items()}
    plot_diagnosis(diagnosis, files["figure"])
    with open(files["markdown"], "w", encoding="utf-8") as handle:
        handle.write(diagnosis_markdown(diagnosis))
    write_json_atomic(files["json"], diagnosis, indent=1)
    return diagnosis["files"]


def read_diagnosis(path: str) -> dict[str, Any]:
    """A `diagnosis.json` (a file, or the output folder holding one); refused by name when missing or incomplete."""
    if os.path.isdir(path):
        path = os.path.join(path, JSON_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            diagnosis = json.load(handle)
    except FileNotFoundError:
        raise DiagnoseError(f"balance report {path}: no such file (a diagnosis.json written by hf-mmbalance diagnose)") from None
    except (OSError, ValueError) as error:
        raise DiagnoseError(f"balance report {path}: not a readable JSON file ({error})") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(diagnosis, dict) or key not in diagnosis]
    if missing:
        raise DiagnoseError(f"balance report {path}: not a diagnosis.json (missing {missing})")
    return diagnosis


__all__ = ["FIGURE_NAME", "JSON_NAME", "MARKDOWN_NAME", "balance_report_section", "diagnosis_markdown",
           "read_diagnosis", "write_outputs"]
