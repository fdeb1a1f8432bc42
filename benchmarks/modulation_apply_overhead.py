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

    python benchmarks/modulation_apply_overhead.py [--repeats 7] [--batch-sizes 64 32] [--noise both|on|off]
        [--no-unclipped] [--name modulation_apply_overhead]

Writes benchmarks/results/<name>.{json,md}. The results there come from two runs: the headline cells with many repeats
(`--repeats 25 --batch-sizes 64 --noise off --no-unclipped`, modulation_apply_overhead.md) and every cell with fewer
(`--repeats 7 --name modulation_apply_overhead_all`).
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
from harness import MethodSpec, ProtocolSettings, build_trainer, timed_steps

from hf_mmbalance.methods.modulation import GradientModulationCallback

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
              "steps": options.steps, "warmup": options.warmup, "rows": rows, "wall_s": round(time.time() - started, 1),
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
    (RESULTS / f"{options.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
