"""Wall time of `hf-mmbalance --help` in a fresh process (median of 5), against the target of < 3 s.

    .venv/bin/python benchmarks/cli_help_time.py            # writes results/cli_help_time.md
    .venv/bin/python benchmarks/cli_help_time.py --runs 3   # fewer repeats

Variants, each run `--runs` times in a fresh subprocess (nothing cached in-process; the OS file cache is warm after
the first run, as it is for a user typing the command twice):

* `before` -- the committed (git HEAD) `hf_mmbalance/cli/*.py` and `__init__.py`, in a copy of the package.
* `hf-mmbalance --help` -- the installed console script (entry point `hf_mmbalance.cli.main:main`). Importing
  `hf_mmbalance.cli.main` first runs `hf_mmbalance/__init__.py`, so this measures the package import too.
* `python -m hf_mmbalance --help` -- the same through `hf_mmbalance/__main__.py` (what `accelerate launch -m` runs).
* `... with the proposed lazy __init__` -- the package copied to a temporary folder with `PROPOSED_INIT` (below) as
  its `__init__.py`, then `hf_mmbalance.cli.main.main(["--help"])`; it also records whether torch, transformers or
  datasets were imported. This is what the console script costs once the package `__init__` is lazy.
* `python -c pass` -- the interpreter's own start-up, the floor.
* `hf-mmbalance train --help` (informational: it imports transformers and the methods to document their fields).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET_S = 3.0

# The package `__init__` proposed to make the console script fast: every public name is imported from its
# sub-package on first use (PEP 562 module `__getattr__`), the rest is unchanged (`__all__`, `__version__`). One
# behaviour changes: a bare `import hf_mmbalance` no longer registers the model with transformers' Auto classes; that
# happens when `hf_mmbalance.modeling` is imported, i.e. on first use of any model / config name.
PROPOSED_INIT = '''"""hf_mmbalance: balanced multimodal learning for the HuggingFace `Trainer`.

The public names below are imported from their sub-packages on first use (PEP 562), so `import hf_mmbalance` -- and
the `hf-mmbalance` command, whose entry point lives in this package -- loads neither torch nor transformers until
something needs them. Using any model or config name imports `hf_mmbalance.modeling`, which registers the model with
transformers' Auto classes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the sub-package it lives in
_LAZY_NAMES = {
    **dict.fromkeys(
        ("DatasetFilesError", "DatasetValidationError", "MFEAT_VIEWS", "load_mfeat", "load_multimodal_dataset",
         "load_multimodal_files", "make_synthetic_classification", "make_synthetic_regression", "standardize",
         "validate_dataset"),
        "data",
    ),
    "render_model_card": "hub",
    **dict.fromkeys(
        ("MMBalanceConfig", "MMBalanceConfigError", "MMBalanceForClassification", "MMBalanceForRegression",
         "MMBalanceModel", "MMBalanceOutput"),
        "modeling",
    ),
    **dict.fromkeys(("BSSCallback", "BSSConfig", "GradientModulationCallback", "ModulationConfig"), "methods"),
    "plot_training_curves": "plotting",
    **dict.fromkeys(("BalancingCallback", "MultimodalTrainer", "build_compute_metrics"), "trainer"),
    # The processing layer imports transformers' processor modules.
    **dict.fromkeys(("MultimodalDataCollator", "MultimodalProcessor", "ProcessingError"), "processing"),
}


def __getattr__(name: str):
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_mmbalance' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES})


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .data import (DatasetFilesError, DatasetValidationError, MFEAT_VIEWS, load_mfeat, load_multimodal_dataset,
                       load_multimodal_files, make_synthetic_classification, make_synthetic_regression, standardize,
                       validate_dataset)
    from .hub import render_model_card
    from .methods import BSSCallback, BSSConfig, GradientModulationCallback, ModulationConfig
    from .modeling import (MMBalanceConfig, MMBalanceConfigError, MMBalanceForClassification, MMBalanceForRegression,
                           MMBalanceModel, MMBalanceOutput)
    from .plotting import plot_training_curves
    from .processing import MultimodalDataCollator, MultimodalProcessor, ProcessingError
    from .trainer import BalancingCallback, MultimodalTrainer, build_compute_metrics

__all__ = sorted(_LAZY_NAMES)
'''

PROBE = (
    "import sys, time; t = time.perf_counter(); from hf_mmbalance.cli.main import main; main(['--help']); "
    "heavy = sorted({'torch', 'transformers', 'datasets'} & set(sys.modules)); "
    "print('HEAVY=' + ','.join(heavy), file=sys.stderr)"
)


def bin_path(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def time_command(command: list[str], runs: int, env: dict | None = None, cwd: str | None = None) -> dict:
    times, heavy = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise RuntimeError(f"{command} failed ({result.returncode}): {result.stderr[-2000:]}")
        for line in result.stderr.splitlines():
            if line.startswith("HEAVY="):
                heavy = line[len("HEAVY="):] or "none"
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": runs, "heavy": heavy}


def lazy_package_copy(folder: Path) -> Path:
    """The package copied into `folder` with `PROPOSED_INIT` as its `__init__.py`."""
    target = folder / "hf_mmbalance"
    shutil.copytree(ROOT / "hf_mmbalance", target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "__init__.py").write_text(PROPOSED_INIT, encoding="utf-8")
    return folder


def head_package_copy(folder: Path) -> Path | None:
    """The package copied into `folder` with `hf_mmbalance/cli/*.py` and `__init__.py` as committed (git HEAD): the
    command before this change. None when git or the files are not available."""
    target = folder / "hf_mmbalance"
    shutil.copytree(ROOT / "hf_mmbalance", target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in ["hf_mmbalance/__init__.py", *(f"hf_mmbalance/cli/{p.name}" for p in (ROOT / "hf_mmbalance/cli").glob("*.py"))]:
        shown = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode == 0:
            (folder / path).write_text(shown.stdout, encoding="utf-8")
        elif path in ("hf_mmbalance/__init__.py", "hf_mmbalance/cli/main.py"):
            return None
        else:  # a file added since HEAD
            (folder / path).unlink()
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", default=str(RESULTS / "cli_help_time.md"))
    args = parser.parse_args(argv)
    python = sys.executable
    rows = []
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as tmp_head:
        lazy = lazy_package_copy(Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(lazy)}
        head = head_package_copy(Path(tmp_head))
        variants = []
        if head is not None:
            variants.append(("before: `hf-mmbalance --help` with the committed (HEAD) CLI and `__init__`",
                             [python, "-c", PROBE], {**os.environ, "PYTHONPATH": str(head)}, tmp_head))
        variants += [
            ("`hf-mmbalance --help` (installed console script)", [bin_path("hf-mmbalance"), "--help"], None, None),
            ("`python -m hf_mmbalance --help`", [python, "-m", "hf_mmbalance", "--help"], None, str(ROOT)),
            ("`hf-mmbalance --help` with the proposed lazy `__init__`", [python, "-c", PROBE], env, tmp),
            ("`python -c pass` (interpreter start-up)", [python, "-c", "pass"], None, None),
        ]
        for label, command, variant_env, cwd in variants:
            rows.append((label, time_command(command, args.runs, variant_env, cwd)))
            print(f"{label}: median {rows[-1][1]['median']:.2f} s", flush=True)
        train_help = time_command([bin_path("hf-mmbalance"), "train", "--help"], min(args.runs, 3))
        print(f"train --help: median {train_help['median']:.2f} s", flush=True)
    load = os.getloadavg()
    lines = [
        "# `hf-mmbalance --help` wall time",
        "",
        f"`benchmarks/cli_help_time.py`: each command in a fresh process, {args.runs} runs, median; target < {TARGET_S:g} s.",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) at the end.",
        "",
        "| command | median (s) | min (s) | max (s) | torch / transformers / datasets imported | < 3 s |",
        "|---|---|---|---|---|---|",
    ]
    for label, result in rows:
        heavy = result["heavy"] if result["heavy"] is not None else "(not probed)"
        ok = "yes" if result["median"] < TARGET_S else "no"
        lines.append(f"| {label} | {result['median']:.2f} | {result['min']:.2f} | {result['max']:.2f} | {heavy} | {ok} |")
    lines += [
        f"| `hf-mmbalance train --help` (informational, {train_help['runs']} runs) | {train_help['median']:.2f} | "
        f"{train_help['min']:.2f} | {train_help['max']:.2f} | - | - |",
        "",
        "`hf_mmbalance/cli/main.py` imports only the standard library before it knows the command (checked by "
        "`tests/test_cli_usability.py`), so what remains of the installed command's time is the package's own "
        "`__init__.py`, which imports the whole library (torch, transformers, datasets) before `main` runs. The "
        "row \"with the proposed lazy `__init__`\" replaces that `__init__` with `PROPOSED_INIT` of this script (PEP 562 "
        "`__getattr__`; the same public names) in a copy of the package. `train --help` imports transformers and the methods on purpose: it "
        "documents their fields.",
        "",
    ]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
