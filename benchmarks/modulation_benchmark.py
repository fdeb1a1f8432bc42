"""Benchmark of disparity-ratio gradient modulation (issue 4) on the bundled mfeat data.

Methods, all with the protocol of `harness.py` (only the method differs):
  * vanilla            — concat fusion, fused loss only;
  * ogm_ge             — concat + OGM-GE modulation (2-view settings only: OGM-GE is defined for M = 2);
  * ada2i_modulation   — concat + Ada2I modulation (any M);
  * ada2i_full         — AFW + AMW fusion (with L_modal, L_feature) + Ada2I modulation;
  * ada2i_alpha0.5     — concat + Ada2I modulation with alpha 0.5 (a stronger brake on the dominant views).
Modulation options are otherwise the library defaults (alpha 0.1, dot scores, GE noise).

Writes under benchmarks/results/: modulation.jsonl (one line per run, resumable), modulation.md (tables, the
step-time ratios and the disparity-ratio summary), modulation_probes.png and modulation_rho.png (rho of each view
over training, Ada2I Fig. 4 style, seed 0), modulation_timing.json (reused by --skip-timing).

Run: python benchmarks/modulation_benchmark.py [--settings fou+zer all6 ...] [--seeds 0 1 2 3 4] [--skip-timing]
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import tempfile

import harness
from harness import RESULTS_DIR, SETTINGS, MethodSpec, ProtocolSettings

from hf_mmbalance.methods.modulation import GradientModulationCallback, ModulationConfig

RESULTS = RESULTS_DIR / "modulation.jsonl"
TABLE = RESULTS_DIR / "modulation.md"
PROBE_PLOT = RESULTS_DIR / "modulation_probes.png"
RHO_PLOT = RESULTS_DIR / "modulation_rho.png"
TIMING = RESULTS_DIR / "modulation_timing.json"
DEFAULT_SETTINGS = ("fac+kar", "fac+fou", "fou+zer", "all6")


def modulation(**options) -> callable:
    return lambda: [GradientModulationCallback(ModulationConfig(**options))]


METHODS = {
    "vanilla": MethodSpec("vanilla"),
    "ogm_ge": MethodSpec("ogm_ge", make_callbacks=modulation(mode="ogm_ge")),
    "ada2i_modulation": MethodSpec("ada2i_modulation", make_callbacks=modulation(mode="ada2i")),
    "ada2i_full": MethodSpec("ada2i_full", fusion="afw", make_callbacks=modulation(mode="ada2i")),
    "ada2i_alpha0.5": MethodSpec("ada2i_alpha0.5", make_callbacks=modulation(mode="ada2i", alpha=0.5)),
}


def methods_for(setting: str) -> dict[str, MethodSpec]:
    two_views = len(SETTINGS[setting]) == 2
    return {name: spec for name, spec in METHODS.items() if two_views or name != "ogm_ge"}


def rho_curves(setting: str, seed: int = 0) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """rho_m per epoch of one run per method (vanilla monitored without modulation): {method: {view: [(epoch, rho)]}}."""
    settings = ProtocolSettings()
    steps_per_epoch = 44  # 1400 training rows / 32
    curves = {}
    for name, spec in methods_for(setting).items():
        make_callbacks = modulation(mode="ada2i", monitor_only=True) if name == "vanilla" else spec.make_callbacks
        with tempfile.TemporaryDirectory() as output_dir:
            _, trainer, _ = harness.train_joint(
                SETTINGS[setting], seed, settings=settings, fusion=spec.fusion, callbacks=make_callbacks(),
                training_overrides={"logging_strategy": "steps", "logging_steps": steps_per_epoch},
                output_dir=output_dir,
            )
        curves[name] = {
            view: [(entry["epoch"], entry[f"modulation/rho_{view}"]) for entry in trainer.state.log_history
                   if f"modulation/rho_{view}" in entry]
            for view in SETTINGS[setting]
        }
    return curves


def plot_rho_curves(curves_by_setting: dict[str, dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(curves_by_setting)
    methods = list(next(iter(curves_by_setting.values())))
    figure, axes = plt.subplots(len(settings), len(methods), figsize=(3.6 * len(methods), 3.0 * len(settings)),
                                squeeze=False, sharey="row")
    for row, setting in enumerate(settings):
        for column, method in enumerate(methods):
            axis = axes[row][column]
            for view, points in curves_by_setting[setting].get(method, {}).items():
                axis.plot([e for e, _ in points], [r for _, r in points], label=view, linewidth=1.3)
            axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
            axis.set_title(f"{setting}: {method}", fontsize=9)
            axis.grid(alpha=0.3)
            if column == 0:
                axis.set_ylabel(r"$\rho_m$ (mean per epoch)")
            if row == len(settings) - 1:
                axis.set_xlabel("epoch")
        axes[row][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def step_time_ratios(repeats: int) -> list[dict]:
    """Modulation step / plain `Trainer` step on the same model and data (protocol model, and a wider one)."""
    wide = dataclasses.replace(ProtocolSettings(), hidden_sizes=(1024, 1024), feature_size=256)
    cases = [
        ("all6", "protocol MLP 64->32", ProtocolSettings(), "ada2i, noise", modulation(mode="ada2i")),
        ("all6", "protocol MLP 64->32", ProtocolSettings(), "ada2i, no noise", modulation(mode="ada2i", noise=False)),
        ("all6", "protocol MLP 64->32", ProtocolSettings(), "MultimodalTrainer only", lambda: []),
        ("fou+zer", "protocol MLP 64->32", ProtocolSettings(), "ogm_ge, noise", modulation(mode="ogm_ge")),
        ("all6", "wide MLP 1024-1024->256", wide, "ada2i, noise", modulation(mode="ada2i")),
        ("all6", "wide MLP 1024-1024->256", wide, "ada2i, no noise", modulation(mode="ada2i", noise=False)),
    ]
    rows = []
    for setting, model, settings, variant, make_callbacks in cases:
        spec = MethodSpec(variant, make_callbacks=make_callbacks)
        timing = harness.step_time_ratio(spec, SETTINGS[setting], settings=settings, repeats=repeats)
        rows.append({"setting": setting, "model": model, "variant": variant, **timing})
        print(f"[timing] {setting} {model} {variant}: {timing}", flush=True)
    return rows


def rho_summary(curves_by_setting: dict[str, dict]) -> str:
    lines = ["| setting | method | " + "mean rho over training, per view |", "|---|---|---|"]
    for setting, curves in curves_by_setting.items():
        for method, by_view in curves.items():
            means = ", ".join(f"{view} {statistics.mean(r for _, r in points):.3f}" for view, points in by_view.items())
            lines.append(f"| {setting} | {method} | {means} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = harness.method_benchmark_parser(__doc__, DEFAULT_SETTINGS, timing_repeats=7).parse_args(argv)

    records = []
    for setting in args.settings:
        records += harness.run_grid(methods_for(setting), [setting], args.seeds, results_path=RESULTS)
    command = "python benchmarks/" + " ".join(["modulation_benchmark.py", *sys.argv[1:]])
    harness.plot_probe_bars(records, PROBE_PLOT)

    curves = {setting: rho_curves(setting) for setting in ("fou+zer", "all6") if setting in args.settings}
    if curves:
        plot_rho_curves(curves, RHO_PLOT)
        (RESULTS_DIR / "modulation_rho.json").write_text(json.dumps(curves))

    if args.skip_timing:  # keep the ratios of the last timed run: they need an otherwise idle machine
        timing = json.loads(TIMING.read_text()) if TIMING.exists() else []
    else:
        timing = step_time_ratios(args.timing_repeats)
        TIMING.write_text(json.dumps(timing, indent=1))
    text = harness.write_markdown_table(records, TABLE, command, "Gradient modulation (Ada2I / OGM-GE) on mfeat")
    extra = ["", "## Disparity ratios (seed 0, `modulation_rho.png`)", "",
             "Vanilla is monitored with `monitor_only=True` (rho computed, gradients untouched).", "", rho_summary(curves)]
    if timing:
        extra += ["", "## Step time: method / plain `transformers.Trainer` (same model and data, median of "
                  "7 alternating runs of 30 timed steps, 1 torch thread)", "",
                  "| setting | model | variant | method ms | plain ms | ratio |", "|---|---|---|---|---|---|"]
        extra += [f"| {r['setting']} | {r['model']} | {r['variant']} | {1000 * r['method_s']:.3f} | "
                  f"{1000 * r['plain_s']:.3f} | {r['ratio']:.3f} |" for r in timing]
    TABLE.write_text(text + "\n".join(extra) + "\n")
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
