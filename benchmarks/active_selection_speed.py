"""Speed and memory of BADGE/BMMAL k-means++ selection: factorized vs materialized gradient embeddings.

    .venv/bin/python benchmarks/active_selection_speed.py            # both cases, writes results/active_selection_speed.{md,json}
    .venv/bin/python benchmarks/active_selection_speed.py --quick    # small sizes (smoke test)

Case 1 (KineticsSound-like): N=20,000, K=31, D=1,024, B=1,000: `kmeans_plus_plus` (factorized, never builds the
N x K*D matrix) vs `materialized_kmeans_plus_plus` (builds it: 20,000 x 31,744 float32 = 2.5 GB), same seed, checks
the selected indices are identical. Case 2 (VGGSound-like): factorized only, N=180,000, K=309, D=1,024, B=2,000.

Each implementation runs in a FRESH subprocess (so one's allocations cannot hide the other's): the child generates the
embeddings' factors (a = softmax(logits) - onehot(argmax), u ~ N(0, 1), float32, fixed seed), then times only the
selection call. Memory = the child's peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`, which sees
torch's CPU allocations; tracemalloc would not); we also report the RSS before the selection (after imports and
data generation) so the selection's own peak = peak - before.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(impl: str, n: int, k: int, d: int, budget: int, seed: int, out: str) -> None:
    import torch

    from hf_mmbalance.methods.active.selection import kmeans_plus_plus, materialized_kmeans_plus_plus

    data_gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, k, generator=data_gen).softmax(1)
    a[torch.arange(n), a.argmax(1)] -= 1.0  # p - onehot(ŷ)
    u = torch.randn(n, d, generator=data_gen)
    rss_before = _rss_bytes()
    select = kmeans_plus_plus if impl == "factorized" else materialized_kmeans_plus_plus
    start = time.perf_counter()
    indices = select(a, u, budget, torch.Generator().manual_seed(seed + 1))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    Path(out).write_text(json.dumps({
        "impl": impl, "N": n, "K": k, "D": d, "B": budget, "seed": seed, "seconds": seconds,
        "seconds_per_pick_ms": 1000 * seconds / budget, "rss_before_selection_bytes": rss_before,
        "peak_rss_bytes": peak, "selection_peak_over_before_bytes": peak - rss_before,
        "input_bytes": (a.numel() + u.numel()) * 4, "torch_threads": torch.get_num_threads(), "indices": indices,
    }))


def run_child(impl: str, n: int, k: int, d: int, budget: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", impl, "--size", str(n), str(k), str(d), str(budget),
               "--seed", str(seed), "--out", str(out)]
        print("running:", impl, n, k, d, budget, flush=True)
        load_before = os.getloadavg()[0]
        subprocess.run(cmd, check=True)
        result = json.loads(out.read_text())
        result["load_avg_1min_before_after"] = [load_before, os.getloadavg()[0]]
    print(f"  {impl}: {result['seconds']:.2f} s, peak RSS {result['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
    return result


def gib(x: int) -> str:
    return f"{x / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=["factorized", "materialized"])
    parser.add_argument("--size", nargs=4, type=int, metavar=("N", "K", "D", "B"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    parser.add_argument("--quick", action="store_true", help="small sizes; writes nothing under results/")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, *args.size, args.seed, args.out)
        return

    case1 = (2000, 31, 256, 100) if args.quick else (20_000, 31, 1024, 1000)
    case2 = (18_000, 309, 256, 200) if args.quick else (180_000, 309, 1024, 2000)
    fact = run_child("factorized", *case1, args.seed)
    mat = run_child("materialized", *case1, args.seed)
    big = run_child("factorized", *case2, args.seed)
    same = fact["indices"] == mat["indices"]
    first_diff = next((i for i, (x, y) in enumerate(zip(fact["indices"], mat["indices"])) if x != y), None)
    speedup = mat["seconds"] / fact["seconds"]
    command = "python benchmarks/active_selection_speed.py" + (" --quick" if args.quick else "")
    machine = f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), torch threads {fact['torch_threads']}"
    summary = {
        "command": command, "machine": machine, "memory_measure": "peak RSS of a fresh subprocess (ru_maxrss)",
        "case1_identical_indices": same, "case1_first_differing_pick": first_diff, "case1_speedup": speedup,
        "runs": [{key: value for key, value in r.items() if key != "indices"} for r in (fact, mat, big)],
    }
    rows = []
    for r in (fact, mat, big):
        rows.append(f"| {r['impl']} | {r['N']:,} | {r['K']} | {r['D']:,} | {r['B']:,} | {r['seconds']:.2f} | "
                    f"{r['seconds_per_pick_ms']:.1f} | {gib(r['input_bytes'])} | {gib(r['rss_before_selection_bytes'])} | "
                    f"{gib(r['peak_rss_bytes'])} | {gib(r['selection_peak_over_before_bytes'])} | "
                    f"{r['load_avg_1min_before_after'][0]:.1f} / {r['load_avg_1min_before_after'][1]:.1f} |")
    md = "\n".join([
        "# Active-learning selection speed: factorized vs materialized k-means++",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}; torch {__import__('torch').__version__}, CPU, float32.  ",
        "Memory: peak resident set size of a fresh subprocess per run (`ru_maxrss`; includes the Python/torch",
        "runtime and the generated inputs). \"before\" = RSS after data generation, just before the selection call;",
        "\"selection peak\" = peak - before (what the selection itself added). Time = the selection call only.",
        "Load avg = the machine's 1-minute load average before / after the run (other sessions share these 2 cores;",
        "the run itself adds up to 2 with its 2 torch threads).",
        "",
        "| implementation | N | K | D | B | seconds | ms / pick | inputs a+u GiB | RSS before GiB | peak RSS GiB | selection peak GiB | load avg before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Case 1 speed-up (materialized / factorized): **{speedup:.1f}x**; identical selected indices for the same seed: "
        f"**{same}**" + ("" if same else f" (first differing pick: {first_diff})") + ".",
        "",
    ])
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "active_selection_speed.md").write_text(md)
        (RESULTS / "active_selection_speed.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(md)


if __name__ == "__main__":
    main()
