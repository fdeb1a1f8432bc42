"""Up-front checks that a ``datasets.Dataset`` matches what a multimodal model expects.

Catching a wrong feature size, a string column or a stray NaN here gives one clear message naming
the column, instead of a shape error or a NaN loss deep inside training. All checks work on the
arrow columns directly (no per-row Python), so 20k rows x several modalities take milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .mfeat import arrow_table

__all__ = ["DatasetValidationError", "RAW_KINDS", "column_kind", "validate_backbone_columns", "validate_dataset"]

_TASKS = ("classification", "regression")
# Features this large (1e30 was seen) give losses of 1e28 and infinite gradient norms while training goes on.
MAX_ABS_FEATURE = 1e10


class DatasetValidationError(ValueError):
    """A dataset does not match the declared modalities / labels; the message names the field."""


def _parse_spec(name: str, size) -> tuple:
    """Normalise a modality size: ``int`` -> ``(dim,)``, ``(seq_len | None, dim)`` -> that pair."""
    def is_pos_int(x) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x > 0

    if is_pos_int(size):
        return (int(size),)
    if isinstance(size, (tuple, list)) and len(size) == 2 and is_pos_int(size[1]) and (size[0] is None or is_pos_int(size[0])):
        return (None if size[0] is None else int(size[0]), int(size[1]))
    raise ValueError(
        f"modality {name!r}: input size must be a positive int or a (seq_len, dim) pair with seq_len possibly None, "
        f"got {size!r}"
    )


def validate_dataset(
    dataset: datasets.Dataset | datasets.DatasetDict,
    modalities: Mapping[str, int | tuple[int | None, int]],
    num_labels: int | None = None,
    task: str = "classification",
    label_column: str | None = "labels",
) -> None:
    """Raise :class:`DatasetValidationError` if ``dataset`` cannot feed a model with these inputs (``label_column=None``:
    a prediction set without labels, only the modalities are checked).

    ``modalities`` maps column name -> input size: an int for a feature vector of that length, or
    ``(seq_len, dim)`` for a sequence (``seq_len=None`` allows any length; ``dim`` must match). It may be empty
    (every modality feeds a backbone, see `validate_backbone_columns`): then only the labels are checked.
    Checked: every modality column and ``label_column`` exist; modality columns hold floats with the
    declared length/shape, no nulls and no NaN/inf; classification labels are integers in
    ``[0, num_labels)`` (only ``>= 0`` when ``num_labels`` is None); regression labels are finite numbers.
    A ``DatasetDict`` is checked split by split and errors start with the split name.
    """
    if not isinstance(modalities, Mapping):
        raise ValueError(f"modalities must be a mapping of column name -> input size, got {modalities!r}")
    specs = {name: _parse_spec(name, size) for name, size in modalities.items()}
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
    if num_labels is not None and (not isinstance(num_labels, (int, np.integer)) or num_labels < 1):
        raise ValueError(f"num_labels must be a positive int or None, got {num_labels!r}")

    if isinstance(dataset, datasets.DatasetDict):
        for split, ds in dataset.items():
            _validate_one(ds, specs, num_labels, task, label_column, where=f"split {split!r}: ")
    elif isinstance(dataset, datasets.Dataset):
        _validate_one(dataset, specs, num_labels, task, label_column, where="")
    else:
        raise TypeError(f"expected a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")


def _validate_one(
    ds: datasets.Dataset, specs: dict[str, tuple], num_labels: int | None, task: str, label_column: str, where: str
) -> None:
    present = ds.column_names
    missing = [name for name in specs if name not in present]
    if missing:
        raise DatasetValidationError(
            f"{where}missing modality column {', '.join(map(repr, missing))}; columns present: {present}"
        )
    if label_column is not None and label_column not in present:
        raise DatasetValidationError(f"{where}missing label column {label_column!r}; columns present: {present}")

    table = arrow_table(ds, list(dict.fromkeys([*specs, *([label_column] if label_column else [])])))
    for name, spec in specs.items():
        _check_modality(table.column(name), name, spec, ds.features[name], where)
    if label_column is not None:
        _check_labels(table.column(label_column), label_column, num_labels, task, ds.features[label_column], where)


def _unwrap(column: pa.ChunkedArray) -> pa.Array:
    arr = column.combine_chunks()
    # datasets' Array2D/3D are arrow extension types over nested lists; validate their storage.
    return arr.storage if isinstance(arr, pa.ExtensionArray) else arr


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _leaf_type(t: pa.DataType) -> tuple[pa.DataType, int]:
    """(innermost value type, nesting depth) of a possibly nested list type."""
    depth = 0
    while True:
        if isinstance(t, pa.BaseExtensionType):
            t = t.storage_type
        elif _is_list(t):
            t, depth = t.value_type, depth + 1
        else:
            return t, depth


def _first_null(arr: pa.Array) -> int | None:
    if arr.null_count == 0:
        return None
    return int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])


def _offsets(arr: pa.Array) -> np.ndarray:
    """Row boundaries of a list array's (flattened) children, starting at 0, length ``len(arr) + 1``."""
    if pa.types.is_fixed_size_list(arr.type):
        return np.arange(len(arr) + 1, dtype=np.int64) * arr.type.list_size
    offsets = arr.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0]


def _parent_row(child_index: int, offsets: np.ndarray) -> int:
    return int(np.searchsorted(offsets, child_index, side="right") - 1)


def _check_modality(column: pa.ChunkedArray, name: str, spec: tuple, feature, where: str) -> None:
    arr = _unwrap(column)
    leaf, depth = _leaf_type(arr.type)
    what = f"{where}modality column {name!r}"
    if not pa.types.is_floating(leaf):
        raise DatasetValidationError(
            f"{what}: expected float features, found dtype {leaf} (feature {feature}); "
            "cast it to float32, e.g. with Dataset.cast_column"
        )
    expected_shape = f"({spec[0] if spec[0] is not None else 'any'}, {spec[1]})" if len(spec) == 2 else f"({spec[0]},)"
    if depth != len(spec):
        found = "a scalar per row" if depth == 0 else f"{depth}-D values per row"
        raise DatasetValidationError(f"{what}: expected per-row shape {expected_shape}, found {found} (feature {feature})")

    row_maps: list[np.ndarray] = []  # offsets per nesting level, to map a leaf index back to its row
    level = arr
    for axis, expected in enumerate(spec):
        bad = _first_null(level)
        if bad is not None:
            row = _to_row(bad, row_maps)
            raise DatasetValidationError(f"{what}: null value at row {row}")
        offsets = _offsets(level)
        if expected is not None:
            lengths = np.diff(offsets)
            wrong = np.flatnonzero(lengths != expected)
            if wrong.size:
                row = _to_row(int(wrong[0]), row_maps)
                kind = "feature length" if len(spec) == 1 else ("sequence length" if axis == 0 else "feature dim")
                raise DatasetValidationError(
                    f"{what}: wrong {kind}: expected {expected} (per-row shape {expected_shape}), "
                    f"found {int(lengths[wrong[0]])} at row {row} ({wrong.size} bad)"
                )
        row_maps.append(offsets)
        level = level.flatten()

    values = level.to_numpy(zero_copy_only=False)  # leaf nulls become NaN and are reported below
    finite = np.isfinite(values)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        row = _to_row(int(bad[0]), row_maps)
        raise DatasetValidationError(
            f"{what}: contains NaN or inf ({bad.size} values), first at row {row} (value {values[bad[0]]})"
        )
    huge = np.abs(values) >= MAX_ABS_FEATURE
    if huge.any():
        bad = np.flatnonzero(huge)
        raise DatasetValidationError(
            f"{what}: {bad.size} values of magnitude >= {MAX_ABS_FEATURE:g} (first at row {_to_row(int(bad[0]), row_maps)}, "
            f"value {values[bad[0]]:g}): the loss and gradients overflow; standardize the column"
        )


def _to_row(index: int, row_maps: list[np.ndarray]) -> int:
    for offsets in reversed(row_maps):
        index = _parent_row(index, offsets)
    return index


def _check_labels(column: pa.ChunkedArray, name: str, num_labels: int | None, task: str, feature, where: str) -> None:
    arr = _unwrap(column)
    what = f"{where}label column {name!r}"
    bad = _first_null(arr)
    if bad is not None:
        raise DatasetValidationError(f"{what}: null label at row {bad}")

    if task == "classification":
        if not pa.types.is_integer(arr.type):
            raise DatasetValidationError(
                f"{what}: classification needs one integer class id per row, found dtype {arr.type} (feature {feature})"
            )
        if len(arr) == 0:
            return
        min_max = pc.min_max(arr)
        lo, hi = int(min_max["min"].as_py()), int(min_max["max"].as_py())
        upper = f"{num_labels}" if num_labels is not None else "inf"
        if lo < 0 or (num_labels is not None and hi >= num_labels):
            values = arr.to_numpy(zero_copy_only=False)
            out = np.flatnonzero((values < 0) | (values >= (num_labels if num_labels is not None else np.inf)))
            raise DatasetValidationError(
                f"{what}: labels must lie in [0, {upper}), found min {lo}, max {hi} (first bad at row {int(out[0])})"
            )
        return

    leaf, depth = _leaf_type(arr.type)
    if not (pa.types.is_integer(leaf) or pa.types.is_floating(leaf)):
        raise DatasetValidationError(
            f"{what}: regression needs numeric targets, found dtype {leaf} (feature {feature})"
        )
    row_maps: list[np.ndarray] = []
    level = arr
    for _ in range(depth):  # multi-target regression: list-valued labels
        null = _first_null(level)
        if null is not None:
            raise DatasetValidationError(f"{what}: null target at row {_to_row(null, row_maps)}")
        row_maps.append(_offsets(level))
        level = level.flatten()
    values = level.to_numpy(zero_copy_only=False).astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise DatasetValidationError(
            f"{what}: regression targets contain NaN or inf ({int((~finite).sum())} values), "
            f"first at row {_to_row(first, row_maps)}"
        )


# ----- columns that feed a pretrained backbone (`encoder="auto"`) -----
RAW_KINDS = ("image", "frames", "audio", "text")


def column_kind(feature) -> str:
    """What a column holds, from its `datasets` feature: a raw `image` (`Image`), `frames` (a list of `Image`),
    `audio` (`Audio`, or `{array, sampling_rate}` structs), `text` (strings), or `numeric` (processed values)."""
    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, (datasets.List, datasets.Sequence)) and isinstance(feature.feature, datasets.Image):
        return "frames"
    if isinstance(feature, datasets.Audio) or (isinstance(feature, dict) and {"array", "sampling_rate"} <= set(feature)):
        return "audio"
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return "text"
    return "numeric"


def validate_backbone_columns(
    dataset: datasets.Dataset,
    modality: str,
    main_input: str,
    per_sample_ndim: int | tuple[int, ...] | None,
    floating: bool | None,
    extra_inputs: tuple[str, ...],
    processed_kinds: tuple[str, ...] = (),
    where: str = "",
    raw_column: str | None = None,
) -> None:
    """Raise `DatasetValidationError` naming the column unless `dataset` can feed modality `modality`'s backbone.

    Column `modality` holds the backbone's main input `main_input`: either a raw value that a processor turns into
    it (`processed_kinds`: the raw kinds the trainer's processor handles for this modality), or processed numbers
    with `per_sample_ndim` dims per row (one of them, when a tuple; None: the backbone checks) of floats (`floating=True`) or integer ids.
    Columns `modality_<name>` present for one of the backbone's `extra_inputs` must hold numbers. `raw_column`: the
    column the processor reads raw values from, when it is not named like the modality.
    """
    present = dataset.column_names
    column = modality if modality in present or raw_column is None else raw_column
    what = f"{where}modality column {column!r}"
    if column not in present:
        named = f"{modality!r}" + (f" or the processor's raw column {raw_column!r}" if raw_column not in (None, modality) else "")
        raise DatasetValidationError(
            f"{where}missing modality column {named} (the backbone's {main_input}, raw or processed); "
            f"columns present: {present}"
        )
    feature = dataset.features[column]
    kind = column_kind(feature)
    if kind in RAW_KINDS:
        if kind not in processed_kinds:
            handled = f"the processor handles {list(processed_kinds)} for it" if processed_kinds else "no processor handles it"
            raise DatasetValidationError(
                f"{what}: holds raw {kind} values ({feature}) but {handled}; pass processing_class=MultimodalProcessor"
                f"(...) with a processor for {modality!r} that takes {kind}, or process the column into {main_input} "
                "with Dataset.map first"
            )
    else:  # already processed (e.g. with Dataset.map): the backbone's own input
        _check_processed_backbone_input(dataset, column, main_input, per_sample_ndim, floating, what)
    for extra in extra_inputs:
        column = f"{modality}_{extra}"
        if column not in present or column_kind(dataset.features[column]) != "numeric":
            if column in present:
                raise DatasetValidationError(f"{where}column {column!r} (the backbone's {extra} of modality {modality!r}) must hold numbers")
            continue
        leaf, _ = _leaf_type(_unwrap(arrow_table(dataset, [column]).column(column)).type)
        if not (pa.types.is_integer(leaf) or pa.types.is_floating(leaf) or pa.types.is_boolean(leaf)):
            raise DatasetValidationError(
                f"{where}column {column!r} (the backbone's {extra} of modality {modality!r}) must hold numbers, "
                f"found dtype {leaf}"
            )


def _check_processed_backbone_input(dataset, modality, main_input, per_sample_ndim, floating, what) -> None:
    arr = _unwrap(arrow_table(dataset, [modality]).column(modality))
    leaf, depth = _leaf_type(arr.type)
    if floating is not None:
        if floating and not pa.types.is_floating(leaf):
            raise DatasetValidationError(f"{what}: the backbone's {main_input} must be floats, found dtype {leaf}")
        if not floating and not pa.types.is_integer(leaf):
            raise DatasetValidationError(
                f"{what}: the backbone's {main_input} must be integer token ids, found dtype {leaf}"
                + ("; tokenize the text with the modality's tokenizer" if pa.types.is_string(leaf) else "")
            )
    accepted = (per_sample_ndim,) if isinstance(per_sample_ndim, int) else per_sample_ndim
    if accepted is not None and depth not in accepted:
        raise DatasetValidationError(
            f"{what}: the backbone's {main_input} needs {' or '.join(map(str, accepted))} dims per row, found {depth}"
        )
    if pa.types.is_floating(leaf):
        level = arr
        for _ in range(depth):
            level = level.flatten()
        values = level.to_numpy(zero_copy_only=False)
        if values.size and not np.isfinite(values).all():
            raise DatasetValidationError(f"{what}: contains NaN or inf ({int((~np.isfinite(values)).sum())} values)")
