"""Quality benchmark of BMMAL and the baselines (issue 7) on the bundled mfeat data.

The train split (1400 rows) is the pool (labels hidden until acquired), the test split is evaluated after every
round. Every round trains from the same initial weights (`retrain="reset"`) with the protocol's encoders and
optimizer (harness.py) for 20 epochs, batch 16, with unimodal heads (BMMAL Eq. 1 loss). Budget: 20 random labels,
then 20 per round up to 200 (10 rounds). Strategies: random, entropy, badge, bmmal; 3 seeds (seed = model init,
round-1 draw and k-means++ seed).

Writes benchmarks/results/active.md (per-round fused accuracy mean ± std, labels each strategy needs to reach
random's final accuracy, mean Phi per round), active_curves.png and active_contributions.png, and one state file
per run under benchmarks/results/active_runs/ (resumable: a finished run is read back, not retrained).

Run: python benchmarks/active_benchmark.py [--settings fou+zer all6] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import harness
from harness import RESULTS_DIR, SETTINGS, ProtocolSettings

from hf_mmbalance.methods.active import ActiveLearningConfig, ActiveLearningState, run_active_learning
from hf_mmbalance.plotting import plt, save_figure

STRATEGIES = ("random", "entropy", "badge", "bmmal")
RUNS_DIR = RESULTS_DIR / "active_runs"
SETTINGS_AL = dataclasses.replace(ProtocolSettings(), batch_size=16, num_train_epochs=20, unimodal_heads=True)
BUDGET, TOTAL = 20, 200


def run(setting: str, strategy: str, seed: int) -> ActiveLearningState:
    views = SETTINGS[setting]
    output_dir = RUNS_DIR / f"{setting}-{strategy}-seed{seed}"
    state = ActiveLearningState.load(str(output_dir))
    if state is not None and len(state.labeled) >= TOTAL and state.rounds[-1].metrics:
        return state
    data = harness.load_protocol_data(views, SETTINGS_AL)
    args = harness.training_arguments(seed, settings=SETTINGS_AL, output_dir=output_dir)
    config = ActiveLearningConfig(strategy=strategy, budget_per_round=BUDGET, total_budget=TOTAL, seed=seed)
    result = run_active_learning(lambda: harness.build_model(views, seed, settings=SETTINGS_AL), data["train"], args,
                                 config, eval_dataset=data["test"])
    for round_dir in output_dir.glob("round-*"):  # keep the readable state, not 10 checkpoints per run
        for file in round_dir.iterdir():
            file.unlink()
        round_dir.rmdir()
    print(f"[{setting} {strategy} seed {seed}] " + " ".join(
        f"{int(r.metrics['labels_used'])}:{r.metrics['eval_accuracy']:.3f}" for r in result.state.rounds), flush=True)
    return result.state


def curve(states: list[ActiveLearningState]) -> dict[int, list[float]]:
    points: dict[int, list[float]] = {}
    for state in states:
        for record in state.rounds:
            points.setdefault(int(record.metrics["labels_used"]), []).append(record.metrics["eval_accuracy"])
    return dict(sorted(points.items()))


def labels_to_reach(curve_points: dict[int, list[float]], target: float) -> int | None:
    for labels, values in curve_points.items():
        if statistics.mean(values) >= target:
            return labels
    return None


def report(results: dict[str, dict[str, list[ActiveLearningState]]], command: str) -> str:
    lines = [f"# Active learning on mfeat: BMMAL vs baselines", "", f"Command: `{command}`", "",
             f"Pool = train split (1400), test split evaluated after each round; {BUDGET} random labels, then {BUDGET} "
             f"per round to {TOTAL}; each round retrains from the same initial weights: MLP 64->32 encoders, concat, "
             "unimodal heads (BMMAL Eq. 1), SGD lr 0.05 momentum 0.9, 20 epochs, batch 16. Mean ± std over seeds.", ""]
    for setting, by_strategy in results.items():
        curves = {s: curve(states) for s, states in by_strategy.items()}
        labels = list(next(iter(curves.values())))
        lines += [f"## {setting} — fused test accuracy per labels used", "",
                  "| strategy | " + " | ".join(str(n) for n in labels) + " |", "|---|" + "---|" * len(labels)]
        for strategy, points in curves.items():
            lines.append(f"| {strategy} | " + " | ".join(
                f"{statistics.mean(v):.3f} ± {statistics.stdev(v) if len(v) > 1 else 0:.3f}" for v in points.values()) + " |")
        target = statistics.mean(curves["random"][labels[-1]])
        lines += ["", f"Labels needed to reach random's final accuracy ({target:.3f} at {labels[-1]} labels): " + ", ".join(
            f"{s} {labels_to_reach(p, target) or f'not reached by {labels[-1]}'}" for s, p in curves.items()), ""]
        bmmal = by_strategy.get("bmmal", [])
        if bmmal:
            names = list(next(r.mean_contributions for r in bmmal[0].rounds if r.mean_contributions))
            lines += ["Mean Phi per modality over the scored pool (bmmal, seed mean), per acquisition round:", "",
                      "| round | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for index in range(1, len(bmmal[0].rounds)):
                values = [[s.rounds[index].mean_contributions[n] for s in bmmal] for n in names]
                lines.append(f"| {index + 1} | " + " | ".join(f"{statistics.mean(v):.3f}" for v in values) + " |")
            lines.append("")
    return "\n".join(lines)


def plot(results, path_curves, path_phi) -> None:
    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for axis, (setting, by_strategy) in zip(axes[0], results.items()):
        for strategy, states in by_strategy.items():
            points = curve(states)
            means = [statistics.mean(v) for v in points.values()]
            stds = [statistics.stdev(v) if len(v) > 1 else 0 for v in points.values()]
            axis.errorbar(list(points), means, yerr=stds, marker="o", markersize=3, capsize=2, label=strategy)
        axis.set_title(setting)
        axis.set_xlabel("labels used")
        axis.set_ylabel("fused test accuracy")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    save_figure(figure, str(path_curves.parent), path_curves.name)
    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for axis, (setting, by_strategy) in zip(axes[0], results.items()):
        states = by_strategy["bmmal"]
        names = list(next(r.mean_contributions for r in states[0].rounds if r.mean_contributions))
        rounds = range(1, len(states[0].rounds))
        for name in names:
            axis.plot([r + 1 for r in rounds], [statistics.mean(s.rounds[r].mean_contributions[name] for s in states)
                                                for r in rounds], marker="o", markersize=3, label=name)
        axis.set_title(f"{setting}: mean Φ per modality (bmmal)")
        axis.set_xlabel("acquisition round")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    save_figure(figure, str(path_phi.parent), path_phi.name)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=["fou+zer", "all6"], choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args(argv)
    results = {setting: {strategy: [run(setting, strategy, seed) for seed in args.seeds] for strategy in STRATEGIES}
               for setting in args.settings}
    command = "python benchmarks/" + " ".join(["active_benchmark.py", *sys.argv[1:]])
    (RESULTS_DIR / "active.md").write_text(report(results, command))
    plot(results, RESULTS_DIR / "active_curves.png", RESULTS_DIR / "active_contributions.png")
    print((RESULTS_DIR / "active.md").read_text())


if __name__ == "__main__":
    main()
