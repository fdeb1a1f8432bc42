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




def check_batches(model, dataset, collate_fn, field: str, labels: bool = True, batch_size: int = 256) -> None:
    """Read a `torch.utils.data.Dataset` (which has no schema to check) once, batch by batch, and raise a
    `DatasetValidationError` naming the field, the batch key and the rows for what would otherwise train silently:
    a missing modality input, NaN / inf or huge values, labels that are missing or out of range."""
    from ..data.validation import MAX_ABS_FEATURE, DatasetValidationError

    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        return  # an iterable dataset is read once by training itself
    if field == "train_dataset" and len(dataset) == 0:
        raise DatasetValidationError("train_dataset is empty: there is nothing to train on")
    config = model.config
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    for index, batch in enumerate(loader):
        rows = f"rows {index * batch_size}-{index * batch_size + len(next(iter(batch.values()))) - 1}"
        missing = [name for name in config.modality_names if name not in batch]
        if missing:
            raise DatasetValidationError(f"{field}: the batches have no modality inputs {missing}; keys: {sorted(batch)}")
        for key in model.input_names:
            value = batch.get(key)
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                if not torch.isfinite(value).all():
                    raise DatasetValidationError(f"{field}: {key!r} contains NaN or inf in {rows}")
                if value.abs().max() >= MAX_ABS_FEATURE:
                    raise DatasetValidationError(f"{field}: {key!r} has values >= {MAX_ABS_FEATURE:g} in {rows}; standardize it")
        if labels:
            _check_batch_labels(batch.get("labels"), config, field, rows)


def _check_batch_labels(values, config, field: str, rows: str) -> None:
    from ..data.validation import DatasetValidationError

    if values is None:
        raise DatasetValidationError(f"{field}: the batches have no 'labels' ({rows})")
    values = torch.as_tensor(values)
    if config.task == "classification":
        if values.is_floating_point() or not (0 <= int(values.min()) and int(values.max()) < config.num_labels):
            raise DatasetValidationError(
                f"{field}: 'labels' must be integer class ids in [0, {config.num_labels}) ({rows}: dtype {values.dtype}, "
                f"min {values.min().item()}, max {values.max().item()})"
            )
    elif not torch.isfinite(values.float()).all():
        raise DatasetValidationError(f"{field}: regression 'labels' contain NaN or inf ({rows})")


__all__ = ["check_batches", "model_input_keys", "needs_collator", "ordered_batches"]
