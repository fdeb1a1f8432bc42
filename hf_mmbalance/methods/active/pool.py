"""Who is who in an active-learning pool: a stable id per row, a fingerprint of the pool, and up-front checks.

A resumed run must attach every stored label to the row it was bought for, whatever order the pool comes in. Each
row is named by its `sample_idx` (when the pool has that column; it must be unique) or else by a content hash of its
Arrow values (every column but `labels`; identical rows get `<hash>~1`, `<hash>~2`, ... in order of appearance, which
is harmless: identical rows are interchangeable). The pool's fingerprint is the size, the sorted column names, the
features and a hash over the SORTED ids: the same rows in another order are the same pool, anything else is not.

The loop visits rows in canonical order (sorted by id) for the first random draw, the scoring pass and the training
set, so a reordered pool yields exactly the run the original order would have.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ...data.mfeat import arrow_table
from ...data.validation import DatasetValidationError

ID_COLUMN = "sample_idx"
LABEL_COLUMN = "labels"


@dataclass
class PoolIdentity:
    """The id of every pool row (by position), the canonical visiting order, and the fingerprint saved in the state."""

    id_kind: str  # "sample_idx" | "row_hash"
    ids: list[Any]  # ids[position]
    columns: list[str]  # sorted
    features: dict[str, Any]  # column -> its `datasets` feature as JSON
    ids_sha256: str
    position_of: dict[Any, int] = field(repr=False, default_factory=dict)
    canonical: list[int] = field(repr=False, default_factory=list)  # positions, sorted by id

    @classmethod
    def of(cls, pool) -> PoolIdentity:
        if ID_COLUMN in pool.column_names:
            id_kind, ids = "sample_idx", _sample_ids(pool)
        else:
            id_kind, ids = "row_hash", _row_hashes(pool)
        ordered = sorted(ids)
        digest = hashlib.sha256(json.dumps(ordered).encode("utf-8")).hexdigest()
        features = json.loads(json.dumps(pool.features.to_dict(), sort_keys=True, default=str))
        position_of = {row_id: position for position, row_id in enumerate(ids)}
        return cls(
            id_kind=id_kind,
            ids=ids,
            columns=sorted(pool.column_names),
            features=features,
            ids_sha256=digest,
            position_of=position_of,
            canonical=[position_of[row_id] for row_id in ordered],
        )

    def describe(self) -> dict[str, Any]:
        """What the state file stores about the pool."""
        return {"size": len(self.ids), "id_kind": self.id_kind, "ids_sha256": self.ids_sha256,
                "columns": self.columns, "features": self.features}

    def name(self, position: int) -> str:
        """`row 7 (sample_idx 42)`: a row as error messages name it."""
        row_id = self.ids[position]
        return f"row {position} ({'sample_idx' if self.id_kind == 'sample_idx' else 'row hash'} {row_id!r})"

    def differences(self, saved: dict[str, Any], acquired_ids: Sequence[Any]) -> list[str]:
        """How this pool differs from the saved fingerprint (empty: the same rows, in any order)."""
        changes = []
        if saved.get("size") != len(self.ids):
            changes.append(f"pool size: saved {saved.get('size')} rows, now {len(self.ids)}")
        saved_columns = list(saved.get("columns") or [])
        if saved_columns != self.columns:
            added = sorted(set(self.columns) - set(saved_columns))
            removed = sorted(set(saved_columns) - set(self.columns))
            changes.append(f"pool columns: saved {saved_columns}, now {self.columns} (added {added}, removed {removed})")
        saved_features = saved.get("features") or {}
        for column in sorted(set(saved_features) & set(self.features)):
            if saved_features[column] != self.features[column]:
                changes.append(f"feature of column {column!r}: saved {saved_features[column]}, now {self.features[column]}")
        if saved.get("id_kind") != self.id_kind:
            changes.append(f"row ids: saved {saved.get('id_kind')!r}, now {self.id_kind!r}")
        elif saved.get("ids_sha256") != self.ids_sha256:
            missing = [row_id for row_id in acquired_ids if row_id not in self.position_of]
            what = "sample_idx values" if self.id_kind == "sample_idx" else "row contents (hash of every column but labels)"
            detail = (f"{len(missing)} of the {len(acquired_ids)} acquired rows are not in this pool (first: {missing[0]!r})"
                      if missing else "the acquired rows are all present, but other rows differ")
            changes.append(f"pool rows: the {what} differ from the saved pool's ({detail})")
        return changes


def _sample_ids(pool) -> list[Any]:
    column = arrow_table(pool, [ID_COLUMN]).column(ID_COLUMN)
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DatasetValidationError(f"active learning pool: column {ID_COLUMN!r} has a null value at row {row}")
    ids = column.to_pylist()
    if ids and not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in ids) or len({type(v) for v in ids}) > 1:
        raise DatasetValidationError(
            f"active learning pool: column {ID_COLUMN!r} must hold ints (or strings) that name the rows, "
            f"found {pool.features[ID_COLUMN]}"
        )
    seen: dict[Any, int] = {}
    for position, row_id in enumerate(ids):
        if row_id in seen:
            raise DatasetValidationError(
                f"active learning pool: column {ID_COLUMN!r} must be unique (it names the rows whose labels the run "
                f"stores), but {row_id!r} is at rows {seen[row_id]} and {position}"
            )
        seen[row_id] = position
    return ids


def _row_hashes(pool) -> list[str]:
    columns = sorted(c for c in pool.column_names if c != LABEL_COLUMN)
    hashers = [hashlib.blake2b(digest_size=16) for _ in range(len(pool))]
    if columns:
        table = arrow_table(pool, columns)
        for name in columns:
            prefix = name.encode("utf-8") + b"\x00"
            for hasher, value in zip(hashers, _row_bytes(table.column(name))):
                hasher.update(prefix)
                hasher.update(len(value).to_bytes(8, "little"))
                hasher.update(value)
    counts: dict[str, int] = {}
    ids = []
    for hasher in hashers:
        digest = hasher.hexdigest()
        seen = counts.get(digest, 0)
        counts[digest] = seen + 1
        ids.append(digest if seen == 0 else f"{digest}~{seen}")
    return ids


def _row_bytes(column: pa.ChunkedArray):
    """One bytes value per row that identifies its content: raw bytes for fixed-shape numeric columns, else JSON."""
    arr = column.combine_chunks()
    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    fixed = _fixed_shape_values(arr)
    if fixed is not None:
        return [row.tobytes() for row in fixed]
    return [json.dumps(value, sort_keys=True, default=repr).encode("utf-8") for value in arr.to_pylist()]


def _fixed_shape_values(arr: pa.Array) -> np.ndarray | None:
    """`(n, k)` numpy values when every row has the same shape and the leaves are numbers without nulls."""
    n = len(arr)
    level, width = arr, 1
    while pa.types.is_list(level.type) or pa.types.is_large_list(level.type) or pa.types.is_fixed_size_list(level.type):
        if level.null_count:
            return None
        if pa.types.is_fixed_size_list(level.type):
            size = level.type.list_size
        else:
            offsets = level.offsets.to_numpy()
            lengths = np.diff(offsets)
            if lengths.size and (lengths != lengths[0]).any():
                return None
            size = int(lengths[0]) if lengths.size else 0
        width *= size
        level = level.flatten()
    if level.null_count or not (pa.types.is_integer(level.type) or pa.types.is_floating(level.type) or pa.types.is_boolean(level.type)):
        return None
    values = level.to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values).reshape(n, width) if n else values.reshape(0, width)


# ----- up-front checks of the pool -----


def validate_pool(pool, model, data_collator=None, check_labels: bool = True) -> None:
    """Refuse a pool the model cannot take BEFORE any oracle call or training: missing modality columns, wrong
    sizes, NaN / inf values (naming the column and the row), and, when the pool's own labels are the oracle's answers
    (`check_labels`), labels that are not class ids in [0, num_labels) / finite regression targets. Raw image / audio
    / text columns of backbone modalities are checked for their kind only (values are the processor's business)."""
    from ...data import validate_dataset
    from ...trainer.multimodal_trainer import modality_schema, validate_model_inputs

    config = model.config
    schema = modality_schema(config)
    present = pool.column_names
    missing = [name for name in schema if name not in present]
    if missing:
        raise DatasetValidationError(
            f"active learning pool: missing modality column {', '.join(map(repr, missing))}; columns present: {present}"
        )
    num_labels = config.num_labels if config.task == "classification" else None
    try:
        if check_labels:
            validate_dataset(pool.select_columns([*schema, LABEL_COLUMN]), schema, num_labels=num_labels, task=config.task)
        elif schema:  # only the modalities (the oracle brings the labels): a modality column stands in as the label
            first = next(iter(schema))
            validate_dataset(pool.select_columns(list(schema)), schema, task="regression", label_column=first)
        processor = _collator_processor(data_collator)
        if processor is not False:
            validate_model_inputs(pool, model, processor)
    except DatasetValidationError as error:
        raise DatasetValidationError(f"active learning pool: {error}") from None


def _collator_processor(data_collator):
    """The `MultimodalProcessor` of a `MultimodalDataCollator` (None without a collator or processor); False for a
    collator of another kind, whose handling of raw columns cannot be known here."""
    if data_collator is None:
        return None
    from ...processing import MultimodalDataCollator

    if isinstance(data_collator, MultimodalDataCollator):
        return data_collator.processor
    return False


# ----- the oracle's answers -----


def checked_labels(answers, positions: Sequence[int], identity: PoolIdentity, task: str, num_labels: int) -> list:
    """The oracle's answers as JSON numbers (int class ids, or finite floats for regression); `ValueError` naming the
    row and the value otherwise."""
    try:
        answers = list(answers)
    except TypeError:
        raise ValueError(f"the oracle must return one label per row asked for, got {type(answers).__name__}") from None
    if len(answers) != len(positions):
        raise ValueError(f"the oracle returned {len(answers)} labels for {len(positions)} rows")
    labels = []
    for position, value in zip(positions, answers):
        raw = value
        if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # numpy scalar, 0-d array or tensor
            value = value.item()
        if task == "classification":
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) < num_labels:
                raise ValueError(
                    f"the oracle's answer for pool {identity.name(position)} is {raw!r}: a class id must be an int in "
                    f"[0, {num_labels})"
                )
            labels.append(int(value))
        else:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
                raise ValueError(
                    f"the oracle's answer for pool {identity.name(position)} is {raw!r}: a regression target must be a "
                    "finite number"
                )
            labels.append(float(value))
    return labels


__all__ = ["PoolIdentity", "checked_labels", "validate_pool", "ID_COLUMN", "LABEL_COLUMN"]
