"""Progress of the long passes the methods run themselves (active-learning rounds, pool scoring, Shapley values, BSS
rescoring), and quiet library calls.

* `progress(iterable, total, desc, disable)`: a `tqdm.auto` bar on stderr, or a silent pass-through when `disable`
  (give it `progress_disabled(args)`: `TrainingArguments.disable_tqdm`, and every process but the main one).
* `quiet_library_progress()`: a context manager that switches off `datasets`' own bars ("Flattening the indices",
  "Casting the dataset", "Map", ...) for the calls inside it, and with `transformers=True` the bars of transformers /
  huggingface_hub ("Writing model shards"); the caller's settings are restored after, also on an error.
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm


def progress_disabled(args: Any) -> bool:
    """True when no progress may be shown: `args.disable_tqdm` (a `TrainingArguments`; None counts as shown) or a
    process other than the main one of a distributed run."""
    if args is not None and bool(getattr(args, "disable_tqdm", False)):
        return True
    from .trainer.distributed import is_main_process

    return not is_main_process()


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str | None = None, disable: bool = False,
             **options: Any) -> tqdm:
    """A `tqdm.auto.tqdm` bar over `iterable` (or a manual one: `total` steps, `update()`), written to stderr; with
    `disable` it prints nothing and only iterates. `options` go to tqdm (`unit`, `leave`, `position`, ...); `total`
    defaults to `len(iterable)` where it has one."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    options.setdefault("file", sys.stderr)  # read now, so a captured / redirected stderr gets it
    options.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, desc=desc, disable=disable, **options)


def batches_of(size: int, batch_size: int) -> int:
    """How many batches of `batch_size` rows `size` rows make (a bar's total)."""
    return math.ceil(size / batch_size) if batch_size > 0 else 0


@contextlib.contextmanager
def quiet_library_progress(datasets: bool = True, transformers: bool = False) -> Iterator[None]:
    """Switch off the libraries' own progress bars for the block (`datasets`; with `transformers=True` also
    transformers' and huggingface_hub's), and restore the caller's settings after. An environment variable that
    forces a library's bars on (`HF_DATASETS_DISABLE_PROGRESS_BARS=0`, ...) keeps priority, without a warning."""
    with contextlib.ExitStack() as stack:
        if datasets:
            stack.enter_context(_quiet_datasets())
        if transformers:
            stack.enter_context(_quiet_transformers())
        yield


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    if enabled:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled and not datasets.is_progress_bar_enabled():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                datasets.enable_progress_bars()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    import importlib

    from transformers.utils import logging as hf_logging

    hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")
    enabled = hf_logging.is_progress_bar_enabled()
    hub_states = dict(getattr(hub_tqdm, "progress_bar_states", {}))  # global and per-group switches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_logging.disable_progress_bar()  # transformers' bars, and huggingface_hub's
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if enabled:
                hf_logging.enable_progress_bar()
        states = getattr(hub_tqdm, "progress_bar_states", None)
        if isinstance(states, dict):
            states.clear()
            states.update(hub_states)


__all__ = ["batches_of", "progress", "progress_disabled", "quiet_library_progress"]
