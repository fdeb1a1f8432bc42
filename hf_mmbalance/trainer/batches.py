"""Batches of model inputs from a dataset, in order, for the methods' scoring passes (BSS, BMMAL).

A dataset of fixed-size tensors is read straight from Arrow; one with raw columns (a processor's `set_transform`) or
variable-length rows goes through a collator (the trainer's), exactly as training batches do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

SAMPLE_ID_COLUMN = "sample_idx"


def model_input_keys(model) -> list[str]:
    """The batch keys `model` reads (modalities, their namespaced extras), plus `labels` and `sample_idx`."""
    return [*model.input_names, "labels", SAMPLE_ID_COLUMN]


def needs_collator(dataset) -> bool:
    """True when rows must be collated rather than sliced: a custom transform (lazy processing) is set."""
    return getattr(dataset, "format", {}).get("type") == "custom"


def ordered_batches(model, dataset, batch_size: int, collate_fn: Callable | None = None) -> Iterable[dict[str, Any]]:
    """Batches of `dataset` in row order. With `collate_fn` (or a custom transform on the dataset) a DataLoader
    collates rows as training does; otherwise the model's columns are sliced from Arrow as torch tensors."""
    if collate_fn is not None or needs_collator(dataset):
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn or torch.utils.data.default_collate
        )
    wanted = [name for name in model_input_keys(model) if name in dataset.column_names]
    return dataset.select_columns(wanted).with_format("torch").iter(batch_size=batch_size)


__all__ = ["model_input_keys", "needs_collator", "ordered_batches"]
