"""`MultimodalDataCollator`: a Trainer `data_collator` that pads each modality with its own processor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from .errors import ProcessingError
from .padding import pad_float_sequences, to_numpy
from .processor import MultimodalProcessor

MASK_SUFFIX = "_attention_mask"
INDEX_KEYS = ("sample_idx",)
TARGET_KEYS = ("labels", "label")


@dataclass
class MultimodalDataCollator:
    """Collate a list of feature dicts (dataset rows) into one batch of tensors.

    Per processor modality, rows may be RAW (they are processed here, batched) or already processed per row (by
    `set_transform(processor.transform)` or `map`, unpadded or pre-padded): those are padded by the modality's own
    sub-processor (`tokenizer.pad`, `SequenceFeatureExtractor.pad`) or stacked when fixed-size.

    Columns of modalities without a processor that hold variable-length float sequences, one (length, features)
    per row, become `m` (B, L, F) float32 plus `m_attention_mask` (B, L) int64 of 1/0 (a row's own mask is kept):
    the listed `sequence_modalities`, or, when it is None, every column whose rows are 2-D float arrays or lists of
    lists. `labels` are stacked as int64 (integers) or float32 (floats), `sample_idx` as int64; any other key goes
    through `torch.utils.data.default_collate`, or stays a list when it cannot be stacked.
    """

    processor: MultimodalProcessor | None = None
    sequence_modalities: Sequence[str] | None = None

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        rows = [dict(row) for row in features]
        if not rows:
            raise ValueError("MultimodalDataCollator got an empty list of features")
        batch, used = self._collate_modalities(rows)
        for key in self._sequence_keys(rows, used):
            batch.update(self._collate_sequence(key, rows))
            used |= {key, key + MASK_SUFFIX}
        for key in rows[0]:
            if key not in used:
                batch[key] = _collate_other(key, [row.get(key) for row in rows])
        return batch

    def _collate_modalities(self, rows: list[dict]) -> tuple[dict[str, Any], set[str]]:
        """The processor's modalities: raw rows processed, processed rows padded. Returns (batch, keys consumed)."""
        batch: dict[str, Any] = {}
        used: set[str] = set()
        if self.processor is None:
            return batch, used
        for name, mod in self.processor.modalities.items():
            used |= {key for key in rows[0] if self.processor.owner(key) == name}
            if self.processor.is_raw(name, rows[0]):
                missing = [i for i, row in enumerate(rows) if mod.column not in row]
                if missing:
                    raise ProcessingError(f"{mod.where}: rows {missing[:8]} have no column {mod.column!r}")
                batch.update(self.processor.process_modality(name, [row[mod.column] for row in rows]))
                used.add(mod.column)
            else:
                batch.update(self.processor.collate_modality(name, rows))
        return batch, used

    def _sequence_keys(self, rows: list[dict], used: set[str]) -> list[str]:
        if self.sequence_modalities is not None:
            missing = [key for key in self.sequence_modalities if key not in rows[0]]
            if missing:
                raise ProcessingError(
                    f"sequence modalities {missing} are missing from the rows (keys: {sorted(rows[0])})"
                )
            return list(self.sequence_modalities)
        candidates = [key for key in rows[0] if key not in used and key not in TARGET_KEYS + INDEX_KEYS]
        return [key for key in candidates if _is_float_sequence_column([row.get(key) for row in rows])]

    @staticmethod
    def _collate_sequence(key: str, rows: list[dict]) -> dict[str, torch.Tensor]:
        mask_key = key + MASK_SUFFIX
        masks = [row[mask_key] for row in rows] if mask_key in rows[0] else None
        values, mask = pad_float_sequences([row[key] for row in rows], masks, where=f"sequence column {key!r}")
        return {key: values, mask_key: mask}


def _is_float_sequence_column(values: list) -> bool:
    """Rows that are (length, features) float arrays or lists of lists of floats; empty rows decide nothing."""
    decided = [_float_rank(value) for value in values if not _is_empty(value)]
    return bool(decided) and all(rank == 2 for rank in decided)


def _is_empty(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 0


def _float_rank(value: Any) -> int | None:
    """The number of dimensions of a float array or nested float list; None when it is not floating point."""
    if isinstance(value, torch.Tensor):
        return value.ndim if value.is_floating_point() else None
    if isinstance(value, np.ndarray):
        return value.ndim if value.dtype.kind == "f" else None
    rank = 0
    while isinstance(value, (list, tuple)) and value:
        value, rank = value[0], rank + 1
    if isinstance(value, (torch.Tensor, np.ndarray)):
        inner = _float_rank(value)
        return None if inner is None else rank + inner
    return rank if isinstance(value, float) else None


def _collate_other(key: str, values: list) -> Any:
    if key in TARGET_KEYS:
        return _stack_targets(key, values)
    if key in INDEX_KEYS:
        return torch.as_tensor(np.stack([to_numpy(v) for v in values]).astype(np.int64))
    if all(isinstance(v, (list, tuple, np.ndarray)) for v in values):
        # Rows of numbers (a dataset without torch format): stack them as rows, as `default_data_collator` does;
        # `default_collate` would transpose a list of lists.
        try:
            array = np.stack([np.asarray(v) for v in values])
        except ValueError:  # ragged
            return values
        if array.dtype.kind in "iubf":
            return torch.from_numpy(array.astype(np.float32) if array.dtype == np.float64 else array)
        return values
    try:
        return default_collate(values)
    except (TypeError, RuntimeError, ValueError):  # PIL images, None: left as they are
        return values


def _stack_targets(key: str, values: list) -> torch.Tensor:
    """int64 class ids for integer labels (what cross-entropy needs), float32 for regression targets."""
    array = np.stack([to_numpy(v) for v in values])
    if array.dtype.kind in "iub":
        return torch.from_numpy(array.astype(np.int64))
    if array.dtype.kind == "f":
        return torch.from_numpy(array.astype(np.float32))
    raise ProcessingError(f"{key!r} must be integer class ids or float targets, got dtype {array.dtype}")
