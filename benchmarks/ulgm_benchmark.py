"""Benchmark of ULGM (issue 6) on the synthetic multimodal regression data, whose true unimodal labels are known.

Data: `make_synthetic_regression(num_samples=2000, seed=0, disagreement=3.0)` (text / audio / video observe their own
latent label with noise 0.3 / 1.0 / 2.0; the three labels disagree strongly, so y_m = their mean is a weak proxy of
each: with the default disagreement 0.5, y_m correlates .98 with every true label and no generated label can beat
it), standardized. Model: MRM input recalibration, MLP encoders
64 -> 32, concat, common space d_c = 32, fused and unimodal L1 heads. AdamW lr 0.002, batch 32, 30 epochs, 5 seeds
(model init and data order). Methods:
  * multimodal_only — the fused loss only (unimodal heads weighted 0);
  * ulgm_sugrm, ulgm_selfmm — ULGMCallback with that variant.
Metrics on the test split (SUGRM §4.4): MAE, Pearson correlation, Acc-2 and weighted F1 of the sign (labels exactly
0 excluded); and, on the training set, the correlation of each modality's generated label with its TRUE label next
to the correlation of y_m with it. Also the step time with / without ULGM (median of 7 alternating runs).

Run: python benchmarks/ulgm_benchmark.py  ->  benchmarks/results/ulgm.md, ulgm.json, ulgm.png
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
METHODS = ("multimodal_only", "ulgm_sugrm", "ulgm_selfmm")


def load_data():
    return standardize(make_synthetic_regression(num_samples=2000, seed=0, disagreement=3.0), list(MODALITIES))


def build_trainer(method: str, seed: int, data, output_dir: str, **overrides):
    set_seed(seed)
    settings = {name: {"input_size": size, "hidden_sizes": [64], "feature_size": 32} for name, size in MODALITIES.items()}
    loss_weights = {"fused": 1.0, **{name: 0.0 for name in MODALITIES}} if method == "multimodal_only" else None
    model = MMBalanceForRegression(MMBalanceConfig(modalities=settings, task="regression", fusion="mrm",
                                                   common_space_size=32, loss_weights=loss_weights))
    args = TrainingArguments(output_dir=output_dir, per_device_train_batch_size=32, num_train_epochs=30,
                             learning_rate=0.002, optim="adamw_torch", lr_scheduler_type="constant", seed=seed,
                             save_strategy="no", eval_strategy="no", logging_strategy="epoch", report_to="none",
                             disable_tqdm=True, use_cpu=True, dataloader_num_workers=0, **overrides)
    # "ulgm_<variant>" adds the callback; "multimodal_only" and "joint" (default loss, unimodal heads on y_m) do not
    callbacks = [ULGMCallback(variant=method.split("_")[1])] if method.startswith("ulgm_") else []
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


def step_time_ratio(data, repeats: int = 7) -> dict:
    with_ulgm, without = [], []
    with tempfile.TemporaryDirectory() as output_dir:
        for _ in range(repeats):
            with_ulgm.append(timed_steps(lambda n: build_trainer("ulgm_sugrm", 0, data, output_dir, max_steps=n), 30, 5))
            without.append(timed_steps(lambda n: build_trainer("joint", 0, data, output_dir, max_steps=n), 30, 5))
    a, b = statistics.median(with_ulgm), statistics.median(without)
    return {"ulgm_s": a, "plain_s": b, "ratio": a / b}


def fmt(values) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main() -> None:
    data = load_data()
    records = [run(method, seed, data) for method in METHODS for seed in SEEDS]
    (RESULTS_DIR / "ulgm.json").write_text(json.dumps({"runs": records}, indent=1))  # kept if timing is interrupted
    timing = step_time_ratio(data)
    (RESULTS_DIR / "ulgm.json").write_text(json.dumps({"runs": records, "timing": timing}, indent=1))
    command = "python benchmarks/" + " ".join(["ulgm_benchmark.py", *sys.argv[1:]])
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
    lines += ["", f"Step time with / without ULGM (sugrm vs the same model trained with its default loss and no callback, "
              "`MultimodalTrainer`, median of 7 "
              f"alternating runs of 30 steps): {1000 * timing['ulgm_s']:.3f} ms / {1000 * timing['plain_s']:.3f} ms = "
              f"**{timing['ratio']:.3f}**", ""]
    (RESULTS_DIR / "ulgm.md").write_text("\n".join(lines))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for index, method in enumerate(METHODS):
        rows = [r for r in records if r["method"] == method]
        axes[0].bar(index, statistics.mean(r["mae"] for r in rows), yerr=statistics.stdev(r["mae"] for r in rows), capsize=3,
                    label=method)
    axes[0].set_xticks(range(len(METHODS)), METHODS)
    axes[0].set_ylabel("test MAE")
    width = 0.25
    for index, (method, key) in enumerate([("ulgm_sugrm", "corr_generated"), ("ulgm_selfmm", "corr_generated"),
                                           ("ulgm_selfmm", "corr_multimodal")]):
        rows = [r for r in records if r["method"] == method]
        label = "y_m (multimodal label)" if key == "corr_multimodal" else f"y_s, {method}"
        axes[1].bar(np.arange(len(MODALITIES)) + (index - 1) * width, [statistics.mean(r[key][m] for r in rows) for m in MODALITIES],
                    width, label=label)
    axes[1].set_xticks(range(len(MODALITIES)), list(MODALITIES))
    axes[1].set_ylabel("corr. with the true unimodal label")
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[1].legend(fontsize=8)
    save_figure(figure, str(RESULTS_DIR), "ulgm.png")
    print((RESULTS_DIR / "ulgm.md").read_text())


if __name__ == "__main__":
    main()
