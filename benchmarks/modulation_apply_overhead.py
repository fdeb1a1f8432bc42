"""Step-time overhead of gradient modulation in each `apply` mode over a plain `transformers.Trainer` (issue 14).

The model has a realistic step (>= 20 ms on one CPU thread: six mfeat views, MLP encoders input -> 2048 -> 256, SGD
with momentum, the Trainer's default clipping at 1.0; batch 64, and batch 32 where the step is just under 20 ms on a
quiet machine), so the ratio measures the method, not the Trainer's fixed per-step cost (HF_NOTES.md). Each repeat
times a fresh run of every cell (batch size x variant, in a rotating order, so that drift from other load on the
machine spreads over all of them); the reported value is the median over repeats of each run's median step time
(`harness.timed_steps`: forward, backward, optimizer and every callback's step hooks, warm-up steps dropped; the one
step that starts a new epoch is an outlier the median ignores).

Variants: the plain Trainer; `pre_optimizer_step` and `backward_hook` with the GE noise off and on; and, without
clipping (max_grad_norm=0), the plain Trainer and `pre_optimizer_step`, which then scales the encoder gradients in a
pass of its own (with clipping, `MultimodalTrainer` folds k into the clipping's multiply).

Runs differ from each other by a few percent on a shared machine (memory layout, load), as much as the effect
measured, so two more precise measurements follow: an in-run A/B (`in_run_cost`: the callback is in the trainer on
every other step of ONE run, the median step with and without it) and the GE noise alone against the released
OGM-GE code's loop on the same gradients (`noise_against_released_code`).

    python benchmarks/modulation_apply_overhead.py [--repeats 7] [--batch-sizes 64 32] [--noise both|on|off]
        [--no-unclipped] [--in-run-steps 300] [--name modulation_apply_overhead]

Writes benchmarks/results/<name>.{json,md}. The results there come from two runs: the headline cells with more repeats
(`--repeats 15 --batch-sizes 128 64 --noise off --no-unclipped`, modulation_apply_overhead.md) and every cell with
fewer (`--repeats 7 --batch-sizes 64 32 --name modulation_apply_overhead_all`).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import MethodSpec, ProtocolSettings, build_model, build_trainer, timed_steps
from transformers import TrainerCallback

from hf_mmbalance.methods.modulation import GradientModulationCallback, modulate_gradients

VIEWS = ("fac", "fou", "kar", "mor", "pix", "zer")
RESULTS = Path(__file__).parent / "results"
MODEL = "MLP encoders input -> 2048 -> 256 per view (4.5M encoder weights), SGD momentum"


@dataclasses.dataclass(frozen=True)
class Variant:
    apply: str | None  # None: the plain Trainer
    noise: bool = False
    clip: bool = True  # max_grad_norm=1.0 (the Trainer default), else 0 (no clipping)

    @property
    def key(self) -> str:
        return f"{self.apply or 'plain'}/noise={self.noise}/clip={self.clip}"

    def spec(self) -> MethodSpec:
        if self.apply is None:
            return MethodSpec("plain Trainer")
        return MethodSpec(self.key, make_callbacks=lambda: [
            GradientModulationCallback(mode="ada2i", alpha=0.1, noise=self.noise, apply=self.apply)])


def variants(noise: str, unclipped: bool) -> list[Variant]:
    noises = {"both": (False, True), "on": (True,), "off": (False,)}[noise]
    chosen = [Variant(None)] + [Variant(apply, on) for on in noises for apply in ("pre_optimizer_step", "backward_hook")]
    # Without clipping there is no clipping multiply to fold k into: pre_optimizer_step makes its own pass.
    return chosen + ([Variant(None, clip=False), Variant("pre_optimizer_step", clip=False)] if unclipped else [])


def time_variant(variant: Variant, batch_size: int, output_dir: str, steps: int, warmup: int) -> float:
    settings = ProtocolSettings(hidden_sizes=(2048,), feature_size=256, batch_size=batch_size)

    def factory(max_steps: int):
        overrides = {"max_steps": max_steps, "max_grad_norm": 1.0 if variant.clip else 0.0}
        return build_trainer(VIEWS, 0, settings=settings, output_dir=output_dir, callbacks=variant.spec().make_callbacks(),
                             training_overrides=overrides, plain=variant.apply is None)

    gc.collect()  # the previous run's trainer is garbage: collect it now, not inside this run's timed steps
    return timed_steps(factory, steps, warmup)


class _AlternateSteps(TrainerCallback):
    """First in the list: puts `callback` into the trainer on even steps and takes it out on odd ones, and times
    every step (with `_StepEnd` last), so the method's per-step cost is measured inside ONE run: no run-to-run
    variation (memory layout, machine load) between the steps compared."""

    def __init__(self, trainer, callback):
        self.trainer, self.callback = trainer, callback
        self.present, self.started, self.count = False, 0.0, 0
        self.durations: dict[bool, list[float]] = {True: [], False: []}

    def on_step_begin(self, args, state, control, **kwargs):
        callbacks = self.trainer.callback_handler.callbacks  # changed after this entry only: the loop stays valid
        self.present = self.count % 2 == 0
        if self.present and self.callback not in callbacks:
            callbacks.insert(1, self.callback)
        elif not self.present and self.callback in callbacks:
            callbacks.remove(self.callback)
        self.count += 1
        self.started = time.perf_counter()

    def record_step_end(self) -> None:
        self.durations[self.present].append(time.perf_counter() - self.started)


class _AlternateEnd(TrainerCallback):
    def __init__(self, alternate: _AlternateSteps):
        self.alternate = alternate

    def on_step_end(self, args, state, control, **kwargs):
        self.alternate.record_step_end()


def in_run_cost(apply: str, batch_size: int, output_dir: str, steps: int, warmup: int) -> dict[str, float]:
    """Median step with and without the modulation callback, alternating step by step in one run (noise off,
    clipping on); the difference is the method's cost per step. In `backward_hook` mode the forward hooks that
    capture the encoder outputs stay registered on the steps without the callback (they cost ~7 us a step)."""
    settings = ProtocolSettings(hidden_sizes=(2048,), feature_size=256, batch_size=batch_size)
    callback = GradientModulationCallback(mode="ada2i", alpha=0.1, noise=False, apply=apply)
    trainer = build_trainer(VIEWS, 0, settings=settings, output_dir=output_dir, callbacks=[callback],
                            training_overrides={"max_steps": warmup + steps, "logging_steps": 10**6})
    alternate = _AlternateSteps(trainer, callback)
    trainer.callback_handler.callbacks.insert(0, alternate)
    trainer.add_callback(_AlternateEnd(alternate))
    gc.collect()
    trainer.train()
    with_method = alternate.durations[True][warmup // 2:]
    without = alternate.durations[False][warmup // 2:]
    on, off = statistics.median(with_method), statistics.median(without)
    return {"apply": apply, "batch_size": batch_size, "with_ms": on * 1e3, "without_ms": off * 1e3,
            "extra_ms": (on - off) * 1e3, "ratio": on / off, "steps_each": min(len(with_method), len(without))}


def noise_against_released_code(repeats: int) -> dict[str, float]:
    """The GE noise on the benchmark model's encoder gradients: `modulate_gradients` (scale + noise, std before
    scaling) against the released OGM-GE code's per-parameter loop (`grad * coeff + zeros_like(grad).normal_(0,
    grad.std().item() + 1e-8)`) and against scaling alone; alternating, median of `repeats` each. The normal draw per
    weight is the method's own cost: what the released code pays too."""
    settings = ProtocolSettings(hidden_sizes=(2048,), feature_size=256, batch_size=64)
    model = build_model(VIEWS, 0, settings=settings)
    generator = torch.Generator().manual_seed(0)
    parameters = {name: list(model.encoders[name].parameters()) for name in VIEWS}
    for params in parameters.values():
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator) * 1e-3
    factors = {name: torch.tensor(0.9) for name in VIEWS}

    def ours():
        modulate_gradients(parameters, factors, noise=True, noise_std_from="before", seed=0)

    def released():
        for name, params in parameters.items():
            for param in params:
                param.grad = param.grad * 0.9 + torch.zeros_like(param.grad).normal_(0, param.grad.std().item() + 1e-8)

    def scale_only():
        modulate_gradients(parameters, factors, noise=False, noise_std_from="before", seed=0)

    times: dict[str, list[float]] = {"ours": [], "released": [], "scale_only": []}
    for repeat in range(repeats):
        for name, fn in (("ours", ours), ("released", released), ("scale_only", scale_only))[::1 if repeat % 2 else -1]:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    weights = sum(p.numel() for params in parameters.values() for p in params)
    return {"encoder_weights": weights, **{f"{name}_ms": statistics.median(v) * 1e3 for name, v in times.items()}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 32])
    parser.add_argument("--noise", choices=("both", "on", "off"), default="both")
    parser.add_argument("--unclipped", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the plain Trainer and pre_optimizer_step with max_grad_norm=0")
    parser.add_argument("--name", default="modulation_apply_overhead", help="results file stem in benchmarks/results")
    parser.add_argument("--in-run-steps", type=int, default=300,
                        help="steps of the in-run A/B per apply mode at the first batch size (0: skip it)")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    chosen = variants(options.noise, options.unclipped)
    cells = [(batch, v) for batch in options.batch_sizes for v in chosen]
    runs: dict[tuple[int, str], list[float]] = {(batch, v.key): [] for batch, v in cells}
    started = time.time()
    with tempfile.TemporaryDirectory() as output_dir:
        for repeat in range(options.repeats):
            shift = repeat % len(cells)
            for batch, v in cells[shift:] + cells[:shift]:  # rotate the order: drift hits every variant alike
                runs[(batch, v.key)].append(time_variant(v, batch, output_dir, options.steps, options.warmup))
            print(f"repeat {repeat + 1}/{options.repeats} done ({time.time() - started:.0f} s)", flush=True)
        noise = noise_against_released_code(15) if options.noise != "off" else None
        in_run = [in_run_cost(apply, options.batch_sizes[0], output_dir, options.in_run_steps, 20)
                  for apply in ("pre_optimizer_step", "backward_hook")] if options.in_run_steps else []
    rows = []
    for batch, v in cells:
        if v.apply is None:
            continue
        plain_runs = runs[(batch, Variant(None, clip=v.clip).key)]
        method_runs = runs[(batch, v.key)]
        plain, median = statistics.median(plain_runs), statistics.median(method_runs)
        # Each repeat's method run next to that repeat's plain run: the pair shares the machine's load at the time.
        paired = statistics.median(m / p for m, p in zip(method_runs, plain_runs))
        rows.append({"batch_size": batch, "apply": v.apply, "noise": v.noise, "clip": v.clip, "method_ms": median * 1e3,
                     "plain_ms": plain * 1e3, "extra_ms": (median - plain) * 1e3, "ratio": median / plain,
                     "paired_ratio": paired, "runs_ms": [r * 1e3 for r in method_runs],
                     "plain_runs_ms": [r * 1e3 for r in plain_runs]})
    record = {"views": list(VIEWS), "model": MODEL, "torch_threads": 1, "repeats": options.repeats,
              "steps": options.steps, "warmup": options.warmup, "rows": rows, "in_run": in_run, "noise_vs_released": noise, "wall_s": round(time.time() - started, 1),
              "command": " ".join(["python", *sys.argv])}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{options.name}.json").write_text(json.dumps(record, indent=1))
    lines = [
        "# Modulation overhead by `apply` mode (issue 14)", "",
        f"`{record['command']}` — {MODEL}, six mfeat views, `torch.set_num_threads(1)`, {options.repeats} repeats of "
        f"{options.steps} timed steps (after {options.warmup} warm-up), all cells in a rotating order; median over "
        "repeats of each run's median step time, against a plain `transformers.Trainer` on the same model, data and "
        "clipping. Ratio = median step / median plain step; paired = median over repeats of (this repeat's step / "
        "this repeat's plain step). Extra = the method's median step minus the plain one.", "",
        "| batch | clip | apply | GE noise | plain step (ms) | step (ms) | extra (ms) | ratio vs plain Trainer | paired ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['batch_size']} | {'1.0' if r['clip'] else 'off'} | `{r['apply']}` | {'on' if r['noise'] else 'off'} | "
              f"{r['plain_ms']:.2f} | {r['method_ms']:.2f} | {r['extra_ms']:+.2f} | {r['ratio']:.3f} | "
              f"{r['paired_ratio']:.3f} |" for r in rows]
    if in_run:
        lines += [
            "", f"In-run A/B (`in_run_cost`): one run of {options.in_run_steps + 20} steps at batch "
            f"{options.batch_sizes[0]}, the callback present on every other step (noise off, clipping on), 20 warm-up "
            "steps dropped; median step with and without it. No run-to-run variation enters the difference.", "",
            "| apply | step with (ms) | step without (ms) | extra per step (ms) | ratio |", "|---|---|---|---|---|",
        ]
        lines += [f"| `{r['apply']}` | {r['with_ms']:.2f} | {r['without_ms']:.2f} | {r['extra_ms']:+.3f} | "
                  f"{r['ratio']:.4f} |" for r in in_run]
    if noise:
        lines += [
            "", f"GE noise alone (`noise_against_released_code`, {noise['encoder_weights'] / 1e6:.1f}M encoder weights, "
            "15 alternating repeats): our `modulate_gradients` (one seeded draw for all tensors, the per-tensor std on "
            "the device) against the released OGM-GE code's per-parameter loop and against scaling alone.", "",
            "| scale + GE noise, ours (ms) | scale + GE noise, released code's loop (ms) | scale only (ms) |",
            "|---|---|---|",
            f"| {noise['ours_ms']:.2f} | {noise['released_ms']:.2f} | {noise['scale_only_ms']:.2f} |",
        ]
    (RESULTS / f"{options.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
