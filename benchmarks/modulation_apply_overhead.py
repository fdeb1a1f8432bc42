"""Step-time overhead of gradient modulation in each `apply` mode over a plain `transformers.Trainer` (issue 14).

The model has a realistic step (>= 20 ms on one CPU thread: six mfeat views, MLP encoders input -> 2048 -> 256, batch
32, SGD with momentum, clipping at 1.0), so the ratio measures the method, not the Trainer's fixed per-step cost
(HF_NOTES.md). Each repeat times a fresh run of every variant (plain Trainer, pre_optimizer_step, backward_hook, in a
rotating order, so that drift from other load on the machine spreads over all of them); the reported value is the
median over repeats of each run's median step time (`harness.timed_steps`: forward, backward, optimizer and every
callback's step hooks, warm-up steps dropped, no epoch boundary inside the timed steps).

    python benchmarks/modulation_apply_overhead.py [--repeats 7] [--noise both|on|off]

Writes benchmarks/results/modulation_apply_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
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
SETTINGS = ProtocolSettings(hidden_sizes=(2048,), feature_size=256, batch_size=32)
RESULTS = Path(__file__).parent / "results"


def variant(apply: str | None, noise: bool) -> MethodSpec:
    if apply is None:
        return MethodSpec("plain Trainer")
    return MethodSpec(f"{apply}, noise {'on' if noise else 'off'}",
                      make_callbacks=lambda: [GradientModulationCallback(mode="ada2i", alpha=0.1, noise=noise, apply=apply)])


def time_variant(spec: MethodSpec, plain: bool, output_dir: str, steps: int, warmup: int) -> float:
    def factory(max_steps: int):
        return build_trainer(VIEWS, 0, settings=SETTINGS, output_dir=output_dir, callbacks=spec.make_callbacks(),
                             training_overrides={"max_steps": max_steps}, plain=plain)

    return timed_steps(factory, steps, warmup)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--noise", choices=("both", "on", "off"), default="both")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    noises = {"both": (False, True), "on": (True,), "off": (False,)}[options.noise]
    variants = [("plain", variant(None, False))]
    variants += [(f"{apply}/{noise}", variant(apply, noise)) for noise in noises
                 for apply in ("pre_optimizer_step", "backward_hook")]
    runs: dict[str, list[float]] = {key: [] for key, _ in variants}
    started = time.time()
    with tempfile.TemporaryDirectory() as output_dir:
        for repeat in range(options.repeats):
            shift = repeat % len(variants)
            for key, spec in variants[shift:] + variants[:shift]:  # rotate the order: drift hits every variant alike
                runs[key].append(time_variant(spec, key == "plain", output_dir, options.steps, options.warmup))
            print(f"repeat {repeat + 1}/{options.repeats}: " + ", ".join(f"{k} {v[-1] * 1e3:.2f} ms" for k, v in runs.items()),
                  flush=True)
    plain = statistics.median(runs["plain"])
    rows = []
    for key, spec in variants[1:]:
        apply, noise = key.split("/")
        median = statistics.median(runs[key])
        # Each repeat's method run next to that repeat's plain run: the pair shares the machine's load at the time.
        paired = statistics.median(m / p for m, p in zip(runs[key], runs["plain"]))
        rows.append({"apply": apply, "noise": noise == "True", "method_ms": median * 1e3, "plain_ms": plain * 1e3,
                     "ratio": median / plain, "paired_ratio": paired, "runs_ms": [r * 1e3 for r in runs[key]]})
    record = {"views": list(VIEWS), "model": "MLP encoders input -> 2048 -> 256 per view, batch 32, SGD momentum, clip 1.0",
              "torch_threads": 1, "repeats": options.repeats, "steps": options.steps, "warmup": options.warmup,
              "plain_ms": plain * 1e3, "plain_runs_ms": [r * 1e3 for r in runs["plain"]], "rows": rows,
              "wall_s": round(time.time() - started, 1), "command": " ".join(["python", *sys.argv])}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "modulation_apply_overhead.json").write_text(json.dumps(record, indent=1))
    lines = [
        "# Modulation overhead by `apply` mode (issue 14)", "",
        f"`{record['command']}` — {record['model']}, six mfeat views, torch.set_num_threads(1), {options.repeats} "
        f"repeats of {options.steps} timed steps (after {options.warmup} warm-up), variants in a rotating order; "
        "median over repeats of each run's median step time, against a plain `transformers.Trainer` on the same "
        f"model and data (plain: {plain * 1e3:.2f} ms per step). The machine is shared (2 cores, other jobs running).", "",
        "Ratio = median step / median plain step; paired = median over repeats of (this repeat's step / this repeat's "
        "plain step), the steadier of the two when the load changes between repeats.", "",
        "| apply | GE noise | step (ms) | ratio vs plain Trainer | paired ratio |", "|---|---|---|---|---|",
    ]
    lines += [f"| `{r['apply']}` | {'on' if r['noise'] else 'off'} | {r['method_ms']:.2f} | {r['ratio']:.3f} | "
              f"{r['paired_ratio']:.3f} |" for r in rows]
    (RESULTS / "modulation_apply_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
