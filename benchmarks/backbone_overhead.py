"""Overhead of `MultimodalTrainer` over a plain `transformers.Trainer` on an image + audio backbone model, and the cost
of lazy raw-input processing (`MultimodalProcessor` + `MultimodalDataCollator`) next to the model's training step.

Model: `MMBalanceForClassification` with two `encoder="auto"` backbones built from configs (no download): a ViT over
1x32x32 `pixel_values` (modality `image`) and an AST over (128 frames, 64 mel bins) log-mel `input_values` (modality
`audio`); concat fusion, unimodal heads as configured by default, 10 classes, SGD, batch 16, one torch thread.

Data: synthetic raw rows — 28x28 grayscale PIL images and 8 kHz waveforms of 0.3-1.5 s as `{"array", "sampling_rate"}`
(the class sets the image's bright band and the tone's pitch) — processed by `ViTImageProcessor` (resize to 32x32,
normalize with mean/std 0.5) and `ASTFeatureExtractor` (16 kHz, so every clip is resampled 8 -> 16 kHz first).

Part 1: the same rows processed ahead of time (`Dataset.map(processor.transform)`, fixed `Array3D` / `Array2D`
features, torch format). Each repeat trains a fresh model (same seed) with `MultimodalTrainer` (dataset with
`sample_idx`) and with a plain `Trainer` (the same dataset without `sample_idx`, `remove_unused_columns=False`), in
alternating order; per run the interval between consecutive `on_step_end` calls is timed (the whole loop: data
loading, forward, loss, backward, optimizer, callbacks), dropping the warm-up steps, plus the `on_step_begin` ->
`on_step_end` part (no data loading). Ratio = MultimodalTrainer median / plain median, per repeat.

Part 2: per batch of 16 raw rows, median of several passes: (a) the collator on raw rows already in memory (what
`MultimodalTrainer(processing_class=processor)` runs per step), split by modality; (a') a DataLoader over the raw
`datasets.Dataset` (PNG decode + Arrow -> Python rows) with that collator, i.e. the Trainer's per-step data path;
(b) a DataLoader over `dataset.with_transform(processor.transform)` with the collator; and, end to end, the
`MultimodalTrainer` step interval on the raw dataset with `processing_class=processor` and 0 or 1 dataloader workers.

Writes benchmarks/results/backbone_overhead.md and backbone_overhead.json.

Run: python benchmarks/backbone_overhead.py [--repeats 9] [--steps 40] [--warmup 5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

# One thread everywhere, set before numpy / torch load their thread pools: on 2 shared cores 2 intra-op threads
# oversubscribe (HF_NOTES.md, 2026-12). numpy's OpenBLAS (used by the AST feature extractor's numpy filter bank when
# torchaudio is absent) is capped too; part 2 also times the collator with OpenBLAS at 2 threads, its default here.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import (  # noqa: E402
    ASTConfig,
    ASTFeatureExtractor,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    ViTConfig,
    ViTImageProcessor,
)

from hf_mmbalance import MMBalanceConfig, MMBalanceForClassification, MultimodalTrainer  # noqa: E402
from hf_mmbalance.processing import MultimodalDataCollator, MultimodalProcessor, load_audio  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TABLE = RESULTS_DIR / "backbone_overhead.md"
RAW = RESULTS_DIR / "backbone_overhead.json"

NUM_LABELS = 10
BATCH = 16
IMAGE_SIZE, RAW_IMAGE_SIZE = 32, 28
FRAMES, MEL_BINS = 128, 64
RAW_RATE, MODEL_RATE = 8000, 16000
HIDDEN, LAYERS, HEADS = 96, 3, 4
TARGET_RATIO = 1.03
UNWRAP = "accelerator.unwrap_model(model) (only with balancing callbacks; not counted)"


# ----------------------------------------------------------------------------------------------------------------------
# model, processor, data
# ----------------------------------------------------------------------------------------------------------------------
def backbone_configs() -> dict:
    attention = dict(num_attention_heads=HEADS, intermediate_size=2 * HIDDEN, hidden_size=HIDDEN, num_hidden_layers=LAYERS)
    return {
        "image": ViTConfig(image_size=IMAGE_SIZE, patch_size=8, num_channels=1, **attention),
        "audio": ASTConfig(max_length=FRAMES, num_mel_bins=MEL_BINS, **attention),  # patch 16, strides 10
    }


def make_model(seed: int = 0) -> MMBalanceForClassification:
    torch.manual_seed(seed)
    modalities = {name: {"encoder": "auto", "backbone_config": config} for name, config in backbone_configs().items()}
    return MMBalanceForClassification(MMBalanceConfig(modalities=modalities, num_labels=NUM_LABELS))


def make_processor(audio_rate: int = MODEL_RATE) -> MultimodalProcessor:
    image = ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5], image_std=[0.5])
    audio = ASTFeatureExtractor(sampling_rate=audio_rate, num_mel_bins=MEL_BINS, max_length=FRAMES)
    return MultimodalProcessor({"image": image, "audio": audio})


def raw_rows(n: int, seed: int = 0) -> list[dict]:
    """In-memory raw rows: a PIL grayscale image and an {"array", "sampling_rate"} clip (numpy float32) per row."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % NUM_LABELS
        pixels = (rng.random((RAW_IMAGE_SIZE, RAW_IMAGE_SIZE)) * 80).astype(np.uint8)
        pixels[2 + 2 * label : 5 + 2 * label] = 255
        seconds = rng.uniform(0.3, 1.5)
        t = np.arange(int(RAW_RATE * seconds)) / RAW_RATE
        wave = 0.3 * np.sin(2 * np.pi * (200 + 150 * label) * t) + 0.05 * rng.standard_normal(t.size)
        rows.append({
            "image": Image.fromarray(pixels, "L"),
            "audio": {"array": wave.astype(np.float32), "sampling_rate": RAW_RATE},
            "labels": label,
            "sample_idx": i,
        })
    return rows


def raw_dataset(rows: list[dict]) -> datasets.Dataset:
    """The raw rows as a `datasets.Dataset`: images as `datasets.Image` (PNG bytes, decoded to PIL on access), clips as
    a struct of a float32 list and the rate (`datasets.Audio` decoding would need torchcodec + FFmpeg, absent here)."""
    features = datasets.Features({
        "image": datasets.Image(),
        "audio": {"array": datasets.List(datasets.Value("float32")), "sampling_rate": datasets.Value("int32")},
        "labels": datasets.Value("int64"),
        "sample_idx": datasets.Value("int64"),
    })

    def png(image: Image.Image) -> dict:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    columns = {
        "image": [png(r["image"]) for r in rows],
        "audio": [{"array": r["audio"]["array"], "sampling_rate": r["audio"]["sampling_rate"]} for r in rows],
        "labels": [r["labels"] for r in rows],
        "sample_idx": [r["sample_idx"] for r in rows],
    }
    return datasets.Dataset.from_dict(columns, features=features)


def processed_dataset(raw: datasets.Dataset, processor: MultimodalProcessor) -> datasets.Dataset:
    """The raw dataset processed ahead of time, with fixed-shape features and torch format."""
    features = datasets.Features({
        "labels": datasets.Value("int64"),
        "sample_idx": datasets.Value("int64"),
        "image": datasets.Array3D(shape=(1, IMAGE_SIZE, IMAGE_SIZE), dtype="float32"),
        "audio": datasets.Array2D(shape=(FRAMES, MEL_BINS), dtype="float32"),
    })
    mapped = raw.map(lambda batch: processor(batch, padding=False, return_tensors="np"), batched=True,
                     batch_size=64, remove_columns=processor.raw_columns, features=features)
    return mapped.with_format("torch")


# ----------------------------------------------------------------------------------------------------------------------
# part 1: MultimodalTrainer / plain Trainer
# ----------------------------------------------------------------------------------------------------------------------
class StepClock(TrainerCallback):
    """perf_counter at every `on_step_begin` / `on_step_end`; the torch thread count seen during training."""

    def __init__(self):
        self.begins: list[float] = []
        self.ends: list[float] = []
        self.threads: set[int] = set()

    def on_step_begin(self, args, state, control, **kwargs):
        self.begins.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())
        self.threads.add(torch.get_num_threads())

    def medians(self, warmup: int) -> dict[str, float]:
        loop = np.diff(self.ends)[warmup:]  # end-to-end: data loading + forward/backward/optimizer + hooks
        compute = (np.asarray(self.ends) - np.asarray(self.begins))[warmup + 1 :]
        return {"loop_s": float(np.median(loop)), "compute_s": float(np.median(compute)), "timed_steps": int(loop.size)}


def training_args(output_dir: str, max_steps: int, plain: bool, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=output_dir, per_device_train_batch_size=BATCH, max_steps=max_steps, learning_rate=0.01,
        optim="sgd", lr_scheduler_type="constant", max_grad_norm=1.0, logging_steps=10_000, save_strategy="no",
        eval_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, dataloader_num_workers=0, seed=0,
    )
    if plain:
        # forward takes the modalities as **kwargs: the signature-based column pruning would drop them
        values.update(remove_unused_columns=False, label_names=["labels"])
    values.update(overrides)
    return TrainingArguments(**values)


def timed_run(kind: str, data, output_dir: str, steps: int, warmup: int, **kwargs) -> dict[str, float]:
    """One fresh model trained for warmup + 1 + steps steps; the medians of its timed steps."""
    clock = StepClock()
    max_steps = warmup + 1 + steps
    model = make_model()
    if kind == "plain":
        trainer = Trainer(model=model, args=training_args(output_dir, max_steps, True), train_dataset=data)
    else:
        args = training_args(output_dir, max_steps, False, **kwargs.pop("overrides", {}))
        trainer = MultimodalTrainer(model=model, args=args, train_dataset=data, **kwargs)
    trainer.remove_callback(PrinterCallback)
    trainer.callback_handler.callbacks.insert(0, clock)  # first at step begin; on_step_end runs it first as well
    trainer.train()
    if clock.threads != {1}:
        raise RuntimeError(f"torch threads during training were {clock.threads}, expected 1")
    return clock.medians(warmup)


def trainer_overhead(processed, repeats: int, steps: int, warmup: int) -> dict:
    plain_data = processed.remove_columns("sample_idx")
    assert plain_data.format["type"] == "torch" and processed.format["type"] == "torch"
    runs = []
    with tempfile.TemporaryDirectory() as output_dir:
        timed_run("mm", processed, output_dir, 3, 2)  # process warm-up (allocator, first-call costs): not recorded
        timed_run("plain", plain_data, output_dir, 3, 2)
        for repeat in range(repeats):
            order = ("mm", "plain") if repeat % 2 == 0 else ("plain", "mm")
            result = {}
            for kind in order:
                result[kind] = timed_run(kind, processed if kind == "mm" else plain_data, output_dir, steps, warmup)
            result["ratio_loop"] = result["mm"]["loop_s"] / result["plain"]["loop_s"]
            result["ratio_compute"] = result["mm"]["compute_s"] / result["plain"]["compute_s"]
            result["order"] = list(order)
            runs.append(result)
            print(f"[part 1] repeat {repeat}: mm {1000 * result['mm']['loop_s']:.2f} ms, plain "
                  f"{1000 * result['plain']['loop_s']:.2f} ms, ratio {result['ratio_loop']:.4f} "
                  f"(compute only {result['ratio_compute']:.4f})", flush=True)
        extras = per_step_extras(processed, output_dir)
    rng = np.random.default_rng(0)
    summary = {}
    for measure in ("loop", "compute"):
        ratios = [r[f"ratio_{measure}"] for r in runs]
        summary[measure] = {
            "mm_ms": 1000 * statistics.median(r["mm"][f"{measure}_s"] for r in runs),
            "plain_ms": 1000 * statistics.median(r["plain"][f"{measure}_s"] for r in runs),
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
        summary[measure]["ratio_of_medians"] = summary[measure]["mm_ms"] / summary[measure]["plain_ms"]
        boot = np.median(rng.choice(ratios, size=(4000, len(ratios))), axis=1)  # bootstrap of the median ratio
        summary[measure]["ratio_ci95"] = [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]
    return {"runs": runs, "summary": summary, "extras_us": extras}


def per_step_extras(processed, output_dir: str, calls: int = 2000) -> dict[str, float]:
    """Microseconds per call of what `MultimodalTrainer.compute_loss` does on top of `Trainer`'s (model forward
    excluded), and of collating a batch with vs without `sample_idx`, each timed alone in a tight loop."""
    from hf_mmbalance.trainer.multimodal_trainer import without_sample_ids

    trainer = MultimodalTrainer(model=make_model(), args=training_args(output_dir, 1, False), train_dataset=processed)
    rows = [processed[i] for i in range(BATCH)]
    plain_rows = [{k: v for k, v in row.items() if k != "sample_idx"} for row in rows]
    batch = trainer.data_collator(rows)
    model = trainer.model.train()
    with torch.no_grad():
        outputs = model(**without_sample_ids(batch))

    def hooks():
        for callback in trainer.balancing_callbacks:
            callback.on_train_batch_outputs(trainer.args, trainer.state, model=model, inputs=batch, outputs=outputs)

    parts = {
        "drop sample_idx from the batch": lambda: without_sample_ids(batch),
        "look up balancing callbacks (x2)": lambda: (trainer.balancing_callbacks, trainer.balancing_callbacks),
        UNWRAP: lambda: trainer.accelerator.unwrap_model(model),
        "_replaced_loss (no callbacks)": lambda: trainer._replaced_loss(model, batch, outputs),
        "balancing hooks (none registered)": hooks,
        "_accumulate_loss_terms (3 terms)": lambda: trainer._accumulate_loss_terms(outputs.loss_terms),
        "collate 16 rows with sample_idx": lambda: trainer.data_collator(rows),
        "collate 16 rows without sample_idx": lambda: trainer.data_collator(plain_rows),
    }
    result = {}
    for name, function in parts.items():
        function()
        start = time.perf_counter()
        for _ in range(calls):
            function()
        result[name] = 1e6 * (time.perf_counter() - start) / calls
    print(f"[part 1, extras] {json.dumps({k: round(v, 1) for k, v in result.items()})}", flush=True)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# part 2: processing cost per batch
# ----------------------------------------------------------------------------------------------------------------------
def processing_costs(rows: list[dict], raw: datasets.Dataset, passes: int, batches: int) -> dict:
    """Per-batch milliseconds of each processing path. The paths are timed round-robin (one pass of each, then the
    next pass), so load from other work on the shared cores falls on all of them alike; median / min / max over
    passes of the per-batch mean within a pass."""
    from threadpoolctl import threadpool_limits

    chunks = [rows[i * BATCH : (i + 1) * BATCH] for i in range(batches)]
    subset = raw.select(range(batches * BATCH))
    paths = {}
    for rate in (MODEL_RATE, RAW_RATE):
        processor = make_processor(rate)
        collator = MultimodalDataCollator(processor)
        tag = f"{rate // 1000}k"
        paths[f"collator_in_memory_{tag}"] = lambda c=collator: [c(chunk) for chunk in chunks]
        for name in ("image", "audio"):
            paths[f"{name}_only_{tag}"] = lambda p=processor, n=name: [
                p.process_modality(n, [r[n] for r in chunk]) for chunk in chunks
            ]
        if rate != MODEL_RATE:
            continue
        paths["audio_resample_only"] = lambda: [[load_audio(r["audio"], MODEL_RATE) for r in chunk] for chunk in chunks]
        collator_16k = collator
        loaders = {
            "dataloader_raw_rows": torch.utils.data.DataLoader(subset, batch_size=BATCH, collate_fn=collator),
            "dataloader_with_transform": torch.utils.data.DataLoader(
                subset.with_transform(processor.transform), batch_size=BATCH, collate_fn=collator),
            "dataloader_fetch_only": torch.utils.data.DataLoader(subset, batch_size=BATCH, collate_fn=list),
        }
        for key, loader in loaders.items():
            paths[key] = lambda loader=loader: [None for _ in loader]
    for function in paths.values():  # first-call costs (filter banks, resampling filters, format setup)
        function()
    times = {key: [] for key in paths}
    for _ in range(passes):
        for key, function in paths.items():
            start = time.perf_counter()
            function()
            times[key].append(1000 * (time.perf_counter() - start) / batches)
    # Apart and last: OpenBLAS's extra thread keeps spinning for a while after a call and would slow what follows.
    times["collator_in_memory_16k_blas2"] = []
    with threadpool_limits(2, user_api="blas"):  # numpy's default on this machine
        [collator_16k(chunk) for chunk in chunks]
        for _ in range(max(3, passes // 3)):
            start = time.perf_counter()
            [collator_16k(chunk) for chunk in chunks]
            times["collator_in_memory_16k_blas2"].append(1000 * (time.perf_counter() - start) / batches)
    time.sleep(1.0)  # let that thread go idle before anything else is timed
    costs = {key: {"median_ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t), "per_pass_ms": t}
             for key, t in times.items()}
    print(f"[part 2] {json.dumps({k: round(v['median_ms'], 2) for k, v in costs.items()})}", flush=True)
    return costs


def end_to_end(raw: datasets.Dataset, processed, repeats: int, steps: int, warmup: int) -> dict:
    """MultimodalTrainer step interval on the raw dataset (collator processes each batch) vs processed ahead of time."""
    processor = make_processor(MODEL_RATE)
    variants = {
        "processed ahead (map)": lambda d: timed_run("mm", processed, d, steps, warmup),
        "raw rows, processing_class, 0 workers": lambda d: timed_run(
            "mm", raw, d, steps, warmup, processing_class=processor),
        "raw rows, processing_class, 1 worker": lambda d: timed_run(
            "mm", raw, d, steps, warmup, processing_class=processor, overrides={"dataloader_num_workers": 1}),
    }
    runs = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as output_dir:
        for repeat in range(repeats):
            names = list(variants) if repeat % 2 == 0 else list(reversed(variants))
            for name in names:
                runs[name].append(variants[name](output_dir))
            print(f"[part 2, end to end] repeat {repeat}: "
                  + ", ".join(f"{n} {1000 * runs[n][-1]['loop_s']:.1f} ms" for n in variants), flush=True)
    return {name: {"loop_ms": 1000 * statistics.median(r["loop_s"] for r in rs),
                   "compute_ms": 1000 * statistics.median(r["compute_s"] for r in rs),
                   "per_repeat_loop_ms": [1000 * r["loop_s"] for r in rs]} for name, rs in runs.items()}


# ----------------------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------------------
def model_sizes() -> dict:
    model = make_model()
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    return {"total": count(model), **{f"encoder_{n}": count(e) for n, e in model.encoders.items()},
            "other": count(model) - sum(count(e) for e in model.encoders.values())}


def write_report(command: str, results: dict) -> str:
    s1 = results["part1"]["summary"]
    loop, compute = s1["loop"], s1["compute"]
    costs, e2e, sizes, meta = results["part2"], results["end_to_end"], results["model_sizes"], results["meta"]
    step = loop["mm_ms"]
    extras_us = results["part1"]["extras_us"]
    collate_extra = extras_us["collate 16 rows with sample_idx"] - extras_us["collate 16 rows without sample_idx"]
    # unwrap_model runs only when balancing callbacks are registered (none here): timed, not counted.
    extras_sum = sum(us for name, us in extras_us.items() if not name.startswith("collate") and name != UNWRAP)
    met = loop["ratio_median"] <= TARGET_RATIO
    ms = lambda key: costs[key]["median_ms"]  # noqa: E731
    lines = [
        "# Backbone model: `MultimodalTrainer` overhead and lazy-processing cost",
        "",
        f"Command: `{command}`  ",
        f"Machine: {meta['cores']} cores ({meta['machine']}), shared with other work; `torch.set_num_threads(1)` "
        "(checked during training) and `OMP/OPENBLAS/MKL_NUM_THREADS=1` (native thread pools seen by threadpoolctl: "
        f"{', '.join(f'{api} {n}' for api, n in meta['blas_threads'])}); 1-minute load average before / after: "
        f"{meta['load_before']} / {meta['load_after']}. No torchaudio / torchvision installed (AST fbank and ViT "
        "resize run their numpy / PIL paths). "
        f"torch {meta['torch']}, transformers {meta['transformers']}, datasets {meta['datasets']}. "
        f"Wall time of the whole benchmark: {meta['wall_s']:.0f} s.",
        "",
        "## Model and data",
        "",
        f"`MMBalanceForClassification`, {NUM_LABELS} classes, concat fusion (library defaults otherwise), two "
        "`encoder=\"auto\"` backbones built from configs (random init):",
        f"- `image`: ViT, 1x{IMAGE_SIZE}x{IMAGE_SIZE} `pixel_values`, patch 8 (16 patches + CLS), hidden {HIDDEN}, "
        f"{LAYERS} layers, {HEADS} heads, MLP {2 * HIDDEN}: {sizes['encoder_image']:,} parameters;",
        f"- `audio`: AST, ({FRAMES} frames, {MEL_BINS} mel bins) `input_values`, patch 16, strides 10 (60 patches + 2), "
        f"hidden {HIDDEN}, {LAYERS} layers, {HEADS} heads, MLP {2 * HIDDEN}: {sizes['encoder_audio']:,} parameters;",
        f"- fusion and heads: {sizes['other']:,}; total {sizes['total']:,} parameters.",
        "",
        f"Batch {BATCH}, SGD lr 0.01, constant schedule, grad-norm clipping 1.0, no eval, no saving, "
        "`logging_steps=10000`, `disable_tqdm`, `use_cpu`, `dataloader_num_workers=0`. Data: "
        f"{meta['rows']} synthetic raw rows (28x28 grayscale PIL images; 8 kHz tones + noise of 0.3-1.5 s as "
        "`{\"array\", \"sampling_rate\"}`), processed by `ViTImageProcessor(size=32x32, image_mean=[0.5], "
        f"image_std=[0.5])` and `ASTFeatureExtractor(sampling_rate=16000, num_mel_bins={MEL_BINS}, "
        f"max_length={FRAMES})` (clips resampled 8 -> 16 kHz first). Part 1 uses them processed ahead of time "
        "(`map`, `Array3D` / `Array2D` features, torch format).",
        "",
        "## 1. `MultimodalTrainer` step / plain `transformers.Trainer` step (same model init, data and arguments)",
        "",
        f"{meta['repeats']} repeats, the two trainers alternating (order flipped every repeat); each run "
        f"{meta['warmup']} warm-up steps dropped, then the median of {meta['steps']} timed steps. Plain `Trainer` gets "
        "the dataset without `sample_idx`, `remove_unused_columns=False`, `label_names=[\"labels\"]`. "
        "*Loop* = interval between consecutive `on_step_end` calls (data loading + collation, forward, loss, "
        "backward, clipping, optimizer, callbacks); *compute* = `on_step_begin` -> `on_step_end` (no data loading).",
        "",
        "| measure | MultimodalTrainer ms | plain Trainer ms | ratio (median of per-repeat) | bootstrap 95% CI | min | max "
        "| ratio of medians |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in (("loop (per optimizer step)", loop), ("compute only", compute)):
        low, high = row["ratio_ci95"]
        lines.append(f"| {name} | {row['mm_ms']:.2f} | {row['plain_ms']:.2f} | **{row['ratio_median']:.4f}** | "
                     f"{low:.4f}-{high:.4f} | {row['ratio_min']:.4f} | {row['ratio_max']:.4f} | "
                     f"{row['ratio_of_medians']:.4f} |")
    per_repeat = ", ".join(f"{r['ratio_loop']:.3f}" for r in results["part1"]["runs"])
    lines += [
        "",
        f"Per-repeat loop ratios: {per_repeat}.",
        "",
        f"Target ratio <= {TARGET_RATIO}: **{'met' if met else 'NOT met'}** (median loop ratio "
        f"{loop['ratio_median']:.4f}, bootstrap 95% CI {loop['ratio_ci95'][0]:.4f}-{loop['ratio_ci95'][1]:.4f}; "
        f"{'the whole CI is below the target' if loop['ratio_ci95'][1] <= TARGET_RATIO else 'the CI reaches past the target'}"
        f"; the extra time is {loop['mm_ms'] - loop['plain_ms']:+.2f} ms per step).",
        "",
        "What `MultimodalTrainer` adds per step, each piece timed alone (2000 calls, microseconds per call):",
        "",
        "| piece | us / step |",
        "|---|---|",
        *[f"| {name} | {us:.1f} |" for name, us in results["part1"]["extras_us"].items()],
        "",
        f"Sum of the `compute_loss` pieces: {extras_sum:.0f} us, plus {collate_extra:.0f} us to collate `sample_idx`: "
        f"{(extras_sum + collate_extra) / 1000:.2f} ms = {100 * (extras_sum + collate_extra) / 1000 / loop['plain_ms']:.2f}% "
        "of the plain step.",
        "",
        "## 2. Lazy processing per batch of 16 raw rows vs the training step",
        "",
        f"{meta['passes']} passes of {meta['batches']} batches each, all paths timed round-robin within a pass; "
        "median per batch (min / max over passes in brackets). Step = part 1's `MultimodalTrainer` loop median.",
        "",
        "| path | ms / batch | / model step |",
        "|---|---|---|",
    ]
    rows = [
        ("(a) collator on raw rows in memory (what `processing_class=processor` runs per step)", "collator_in_memory_16k"),
        ("&nbsp;&nbsp;of which image: `ViTImageProcessor` (PIL backend), 28 -> 32 px, normalize", "image_only_16k"),
        ("&nbsp;&nbsp;of which audio: resample 8 -> 16 kHz + AST fbank (numpy) + normalize", "audio_only_16k"),
        ("&nbsp;&nbsp;&nbsp;&nbsp;of which the 8 -> 16 kHz resampling (`resample_poly`)", "audio_resample_only"),
        ("(a) same collator, numpy's OpenBLAS at its default 2 threads (timed apart, fewer passes)",
         "collator_in_memory_16k_blas2"),
        ("(a) same, `ASTFeatureExtractor(sampling_rate=8000)`: no resampling, half-size FFTs", "collator_in_memory_8k"),
        ("&nbsp;&nbsp;of which audio at 8 kHz", "audio_only_8k"),
        ("(a') DataLoader over the raw `datasets.Dataset` + collator (the Trainer's per-step data path)",
         "dataloader_raw_rows"),
        ("&nbsp;&nbsp;of which Arrow -> Python rows + PNG decode (`collate_fn=list`)", "dataloader_fetch_only"),
        ("(b) DataLoader over `with_transform(processor.transform)` + collator", "dataloader_with_transform"),
    ]
    for label, key in rows:
        c = costs[key]
        lines.append(f"| {label} | {c['median_ms']:.2f} ({c['min_ms']:.2f} / {c['max_ms']:.2f}) | "
                     f"{c['median_ms'] / step:.2f} |")
    lines.append(f"| (c) model training step (part 1, `MultimodalTrainer` loop median) | {step:.2f} | 1.00 |")
    ahead = e2e["processed ahead (map)"]["loop_ms"]
    lines += [
        "",
        f"End to end: `MultimodalTrainer` per step ({meta['e2e_repeats']} repeats, variants alternating, median; "
        f"{meta['warmup']} warm-up + 20 timed steps each):",
        "",
        "| data | loop ms / step | compute ms / step (no data loading) | loop / processed ahead |",
        "|---|---|---|---|",
    ]
    for name, row in e2e.items():
        lines.append(f"| {name} | {row['loop_ms']:.2f} | {row['compute_ms']:.2f} | {row['loop_ms'] / ahead:.2f} |")
    lazy, lazy_b = ms("dataloader_raw_rows"), ms("dataloader_with_transform")
    zero = e2e["raw rows, processing_class, 0 workers"]["loop_ms"]
    blas_factor = ms("collator_in_memory_16k_blas2") / ms("collator_in_memory_16k")
    worker = e2e["raw rows, processing_class, 1 worker"]["loop_ms"]
    extra = loop["mm_ms"] - loop["plain_ms"]
    lines += [
        "",
        "## Reading",
        "",
        f"- Trainer overhead: target {'met' if met else 'NOT met'} on the median. Median `MultimodalTrainer` step "
        f"{loop['mm_ms']:.2f} ms vs plain `Trainer` {loop['plain_ms']:.2f} ms ({extra:+.2f} ms); median per-repeat "
        f"ratio {loop['ratio_median']:.3f} (bootstrap 95% CI {loop['ratio_ci95'][0]:.3f}-{loop['ratio_ci95'][1]:.3f}, "
        f"per-repeat {loop['ratio_min']:.3f}-{loop['ratio_max']:.3f}; ratio of the medians "
        f"{loop['ratio_of_medians']:.3f}; compute-only ratio {compute['ratio_median']:.3f}). "
        + ("" if loop["ratio_ci95"][1] <= TARGET_RATIO else
           f"The CI's upper end is above {TARGET_RATIO}: with this machine's noise one run cannot prove the target, "
           "but it does not show a miss either. ")
        + f"What the subclass itself adds, timed alone, is {(extras_sum + collate_extra) / 1000:.2f} ms per step "
        f"({100 * (extras_sum + collate_extra) / 1000 / loop['plain_ms']:.1f}%). With balancing callbacks, "
        f"`compute_loss` also calls `accelerator.unwrap_model` once a step ({extras_us[UNWRAP]:.0f} us: accelerate "
        "walks every submodule to look for compiled regions, so it grows with the backbone) to hand the callbacks "
        "the bare model; without callbacks it is skipped. The rest of a step is the two backbones' forward and "
        "backward, which both trainers run identically; the measured excess beyond those pieces lies within the "
        "run-to-run spread of the ratio, which is the shared machine's noise (other jobs ran: see the load average).",
        f"- Lazy processing: {lazy:.1f} ms per batch on the Trainer's data path (a'), {lazy / step:.2f}x the "
        f"{step:.1f} ms model step ((b), `with_transform`: {lazy_b:.1f} ms, {lazy_b / step:.2f}x). Audio dominates: "
        f"the audio modality alone takes {ms('audio_only_16k'):.1f} ms (collator, both modalities: "
        f"{ms('collator_in_memory_16k'):.1f} ms), of which decoding + resampling is {ms('audio_resample_only'):.1f} ms "
        "and the rest the AST filter bank on its numpy path (torchaudio is not installed: one `rfft` per 10 ms frame); "
        f"images take {ms('image_only_16k'):.1f} ms and the Arrow fetch + PNG decode "
        f"{ms('dataloader_fetch_only'):.1f} ms. An 8 kHz extractor needs {ms('audio_only_8k'):.1f} ms for the audio. "
        f"With numpy's OpenBLAS left at its default 2 threads the same collator took "
        f"{ms('collator_in_memory_16k_blas2'):.1f} ms in this run ({blas_factor:.1f}x the 1-thread time); it depends on "
        "the other load on the 2 cores: in development runs of this script (same machine, 2026-12, load average "
        "1.7-2.1) it took 104-311 ms per batch, 5-15x — the oversubscription HF_NOTES.md describes for torch. Cap "
        "numpy's pool as well (`OPENBLAS_NUM_THREADS=1` / `OMP_NUM_THREADS=1`, or `threadpoolctl`) when processing "
        "lazily.",
        f"- With `dataloader_num_workers=0` the processing adds to every step: {zero:.1f} ms vs {ahead:.1f} ms "
        f"processed ahead ({zero / ahead:.2f}x). "
        + (f"At {lazy / step:.2f}x the step it is too large to ignore, so `dataloader_num_workers > 0` is needed to "
           "hide it (or process ahead with `map`, which removes it). " if lazy / step > 0.05 else
           f"At {lazy / step:.2f}x the step it is small; workers are optional. ")
        + f"One worker measured here: {worker:.1f} ms per step ({worker / ahead:.2f}x processed ahead) — "
        + ("the worker hides it here, because the second core had room for it; " if worker / ahead <= 1.05 else
           "only partly hidden: the worker and the training process compete for the 2 shared cores; ")
        + "in development runs of this script the 1-worker step ranged from 37-39 ms (fully hidden, little other "
        "load) to 69-72 ms (1.8x, worse than 0 workers, with other jobs on the cores). A worker hides the "
        "processing only when a core is free for it; processing ahead with `map` is the robust choice on a machine "
        "like this one.",
    ]
    text = "\n".join(lines) + "\n"
    TABLE.write_text(text)
    return text


def blas_threads() -> list:
    from threadpoolctl import threadpool_info

    return [(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--passes", type=int, default=9, help="passes over the batches in part 2")
    parser.add_argument("--batches", type=int, default=6, help="batches per pass in part 2")
    parser.add_argument("--e2e-repeats", type=int, default=5)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()

    rows_needed = (args.warmup + 1 + args.steps) * BATCH
    rows = raw_rows(rows_needed)
    raw = raw_dataset(rows)
    processed = processed_dataset(raw, make_processor(MODEL_RATE))
    print(f"data: {len(raw)} rows, processed shapes {tuple(processed[0]['image'].shape)} "
          f"{tuple(processed[0]['audio'].shape)} ({time.perf_counter() - start:.1f}s)", flush=True)

    results = {"model_sizes": model_sizes()}
    results["part1"] = trainer_overhead(processed, args.repeats, args.steps, args.warmup)
    results["part2"] = processing_costs(rows, raw, args.passes, args.batches)
    results["end_to_end"] = end_to_end(raw, processed, args.e2e_repeats, min(args.steps, 20), args.warmup)
    results["meta"] = {
        "cores": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__,
        "transformers": transformers.__version__, "datasets": datasets.__version__, "rows": len(raw),
        "repeats": args.repeats, "steps": args.steps, "warmup": args.warmup, "passes": args.passes,
        "batches": args.batches, "e2e_repeats": args.e2e_repeats, "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 2), "wall_s": time.perf_counter() - start,
        "blas_threads": blas_threads(),
    }
    RAW.write_text(json.dumps(results, indent=1))
    command = "python benchmarks/" + " ".join([Path(__file__).name, *sys.argv[1:]])
    print(write_report(command, results))


if __name__ == "__main__":
    main()
