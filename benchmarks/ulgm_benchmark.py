"""Benchmark of ULGM (issue 6) on the synthetic multimodal regression data, whose true unimodal labels are known.

Data: `make_synthetic_regression(num_samples=2000, seed=0, disagreement=3.0)` (text / audio / video observe their own
latent label with noise 0.3 / 1.0 / 2.0; the three labels disagree strongly, so y_m = their mean is a weak proxy of
each: with the default disagreement 0.5, y_m correlates .98 with every true label and no generated label can beat
it), standardized. Model: MRM input recalibration, MLP encoders
64 -> 32, concat, common space d_c = 32, fused and unimodal L1 heads. AdamW lr 0.002, batch 32, 30 epochs, 5 seeds
(model init and data order). Methods:
  * multimodal_only — the fused loss only (unimodal heads weighted 0);
  * ulgm_sugrm_paper — ULGMCallback(variant="sugrm", alignment_weight=0): SUGRM's loss exactly as published;
  * ulgm_sugrm — the default SUGRM variant: the same plus the common-space alignment term, weight 0.03;
  * ulgm_selfmm — ULGMCallback(variant="selfmm").
Metrics on the test split (SUGRM §4.4): MAE, Pearson correlation, Acc-2 and weighted F1 of the sign (labels exactly
0 excluded); and, on the training set, the correlation of each modality's generated label with its TRUE label next
to the correlation of y_m with it. Also the step time with / without ULGM (median of 7 alternating runs, timed in
epoch 2 where labels are generated), for this model and for a wide one (encoders 1024 -> 1024).

Run: python benchmarks/ulgm_benchmark.py  ->  benchmarks/results/ulgm.md, ulgm.json, ulgm.png
(`--report-only` rewrites ulgm.md and ulgm.png from ulgm.json)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from harness import RESULTS_DIR, timed_steps
from sklearn.metrics import f1_score
from transformers import PrinterCallback, TrainingArguments, set_seed

from hf_mmbalance import MMBalanceConfig, MMBalanceForRegression, MultimodalTrainer, standardize
from hf_mmbalance.data import make_synthetic_regression
from hf_mmbalance.methods.ulgm import ULGMCallback
from hf_mmbalance.plotting import plt, save_figure

MODALITIES = {"text": 32, "audio": 16, "video": 16}
SEEDS = (0, 1, 2, 3, 4)
METHODS = ("multimodal_only", "ulgm_sugrm_paper", "ulgm_sugrm", "ulgm_selfmm")
ULGM_OPTIONS = {"ulgm_sugrm_paper": {"variant": "sugrm", "alignment_weight": 0.0}, "ulgm_sugrm": {"variant": "sugrm"},
                "ulgm_selfmm": {"variant": "selfmm"}}


def load_data():
    return standardize(make_synthetic_regression(num_samples=2000, seed=0, disagreement=3.0), list(MODALITIES))


def build_trainer(method: str, seed: int, data, output_dir: str, hidden_sizes=(64,), **overrides):
    set_seed(seed)
    settings = {name: {"input_size": size, "hidden_sizes": list(hidden_sizes), "feature_size": 32}
                for name, size in MODALITIES.items()}
    loss_weights = {"fused": 1.0, **{name: 0.0 for name in MODALITIES}} if method == "multimodal_only" else None
    model = MMBalanceForRegression(MMBalanceConfig(modalities=settings, task="regression", fusion="mrm",
                                                   common_space_size=32, loss_weights=loss_weights))
    args = TrainingArguments(output_dir=output_dir, per_device_train_batch_size=32, num_train_epochs=30,
                             learning_rate=0.002, optim="adamw_torch", lr_scheduler_type="constant", seed=seed,
                             save_strategy="no", eval_strategy="no", logging_strategy="epoch", report_to="none",
                             disable_tqdm=True, use_cpu=True, dataloader_num_workers=0, **overrides)
    # the ULGM methods add the callback; "multimodal_only" and "joint" (default loss, unimodal heads on y_m) do not
    callbacks = [ULGMCallback(**ULGM_OPTIONS[method])] if method in ULGM_OPTIONS else []
    trainer = MultimodalTrainer(model=model, args=args, train_dataset=data["train"], callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)
    return trainer


def test_metrics(model, split) -> dict[str, float]:
    model.eval()
    columns = split.with_format("torch", columns=list(MODALITIES))[:]
    with torch.no_grad():
        predictions = model(**columns).logits.reshape(-1).numpy()
    labels = np.asarray(split["labels"])
    nonzero = labels != 0
    truth, guess = labels[nonzero] > 0, predictions[nonzero] > 0
    return {
        "mae": float(np.abs(predictions - labels).mean()),
        "corr": float(np.corrcoef(predictions, labels)[0, 1]),
        "acc2": float((truth == guess).mean()),
        "f1": float(f1_score(truth, guess, average="weighted")),
    }


def run(method: str, seed: int, data) -> dict:
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build_trainer(method, seed, data, output_dir)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    record = {"method": method, "seed": seed, "train_seconds": seconds, **test_metrics(trainer.model, data["test"])}
    last = [e for e in trainer.state.log_history if "ulgm/corr_generated_text" in e]
    if last:
        record["corr_generated"] = {m: last[-1][f"ulgm/corr_generated_{m}"] for m in MODALITIES}
        record["corr_multimodal"] = {m: last[-1][f"ulgm/corr_multimodal_{m}"] for m in MODALITIES}
        record["mean_abs_offset"] = {m: last[-1][f"ulgm/mean_abs_offset_{m}"] for m in MODALITIES}
    print(f"[{method} seed {seed}] " + " ".join(f"{k}={v:.3f}" for k, v in record.items() if isinstance(v, float)), flush=True)
    return record


def step_time_ratio(data, hidden_sizes=(64,), repeats: int = 7) -> dict:
    """Median step time of ulgm_sugrm and ulgm_selfmm over "joint" (the same model and its default loss, no
    callback). The 30 timed steps follow 50 warm-up steps, so they lie in epoch 2 (44 steps per epoch), where labels
    are generated."""
    times = {"ulgm_sugrm": [], "ulgm_selfmm": [], "joint": []}
    with tempfile.TemporaryDirectory() as output_dir:
        for _ in range(repeats):
            for method, values in times.items():
                values.append(timed_steps(
                    lambda n: build_trainer(method, 0, data, output_dir, hidden_sizes, max_steps=n), 30, 50))
    medians = {method: statistics.median(values) for method, values in times.items()}
    return {"hidden_sizes": list(hidden_sizes), **{f"{m}_s": v for m, v in medians.items()},
            "ratio_sugrm": medians["ulgm_sugrm"] / medians["joint"], "ratio_selfmm": medians["ulgm_selfmm"] / medians["joint"]}


def fmt(values) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main() -> None:
    if "--report-only" in sys.argv:  # rewrite ulgm.md and ulgm.png from ulgm.json
        saved = json.loads((RESULTS_DIR / "ulgm.json").read_text())
        return write_report(saved["runs"], saved["timing"])
    data = load_data()
    records = [run(method, seed, data) for method in METHODS for seed in SEEDS]
    (RESULTS_DIR / "ulgm.json").write_text(json.dumps({"runs": records}, indent=1))  # kept if timing is interrupted
    timing = [step_time_ratio(data), step_time_ratio(data, hidden_sizes=(1024, 1024))]
    (RESULTS_DIR / "ulgm.json").write_text(json.dumps({"runs": records, "timing": timing}, indent=1))
    write_report(records, timing)


def write_report(records: list[dict], timing: list[dict]) -> None:
    command = "python benchmarks/ulgm_benchmark.py"
    lines = ["# ULGM on synthetic multimodal regression", "", f"Command: `{command}`", "", __doc__.split("\n\n")[1], "",
             "| method | MAE ↓ | Corr | Acc-2 | F1 |", "|---|---|---|---|---|"]
    for method in METHODS:
        rows = [r for r in records if r["method"] == method]
        lines.append(f"| {method} | " + " | ".join(fmt([r[k] for r in rows]) for k in ("mae", "corr", "acc2", "f1")) + " |")
    lines += ["", "Correlation with the TRUE unimodal label on the training set (last epoch, mean ± std over seeds): "
              "the generated y_s vs the multimodal label y_m.", "",
              "| method | " + " | ".join(f"{m}: y_s | {m}: y_m" for m in MODALITIES) + " |", "|---|" + "---|---|" * len(MODALITIES)]
    for method in METHODS[1:]:
        rows = [r for r in records if r["method"] == method]
        cells = []
        for m in MODALITIES:
            cells += [fmt([r["corr_generated"][m] for r in rows]), fmt([r["corr_multimodal"][m] for r in rows])]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Step time with ULGM over the same model trained with its default loss and no callback (`MultimodalTrainer`, "
              "median of 7 alternating runs of 30 steps in epoch 2, one CPU thread):", "",
              "| encoders | joint | ulgm_sugrm | ratio | ulgm_selfmm | ratio |", "|---|---|---|---|---|---|"]
    for row in timing:
        lines.append(f"| {' -> '.join(map(str, row['hidden_sizes']))} -> 32 | {1000 * row['joint_s']:.3f} ms | "
                     f"{1000 * row['ulgm_sugrm_s']:.3f} ms | **{row['ratio_sugrm']:.3f}** | "
                     f"{1000 * row['ulgm_selfmm_s']:.3f} ms | **{row['ratio_selfmm']:.3f}** |")
    lines.append("")
    (RESULTS_DIR / "ulgm.md").write_text("\n".join(lines))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = {method: f"C{index}" for index, method in enumerate(METHODS)}
    for index, method in enumerate(METHODS):
        rows = [r for r in records if r["method"] == method]
        axes[0].bar(index, statistics.mean(r["mae"] for r in rows), yerr=statistics.stdev(r["mae"] for r in rows), capsize=3,
                    color=colours[method])
    axes[0].set_xticks(range(len(METHODS)), METHODS, rotation=15, fontsize=8)
    axes[0].set_ylabel("test MAE")
    width = 0.2
    bars = [("ulgm_sugrm_paper", "corr_generated"), ("ulgm_sugrm", "corr_generated"), ("ulgm_selfmm", "corr_generated"),
            ("ulgm_selfmm", "corr_multimodal")]
    for index, (method, key) in enumerate(bars):
        rows = [r for r in records if r["method"] == method]
        label, colour = ("y_m (multimodal label)", "grey") if key == "corr_multimodal" else (f"y_s, {method}", colours[method])
        axes[1].bar(np.arange(len(MODALITIES)) + (index - 1.5) * width,
                    [statistics.mean(r[key][m] for r in rows) for m in MODALITIES], width, label=label, color=colour)
    axes[1].set_xticks(range(len(MODALITIES)), list(MODALITIES))
    axes[1].set_ylabel("corr. with the true unimodal label")
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[1].legend(fontsize=8)
    save_figure(figure, str(RESULTS_DIR), "ulgm.png")
    print((RESULTS_DIR / "ulgm.md").read_text())


if __name__ == "__main__":
    main()
