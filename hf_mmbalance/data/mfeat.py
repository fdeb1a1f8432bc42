"""UCI "Multiple Features" (mfeat): 2,000 handwritten digits described by six views.

The raw CSVs (``shared/data/uci_mfeat``) are converted once by ``benchmarks/tools/convert_mfeat.py``
into a single zstd parquet file shipped inside the package, so loading needs neither the CSVs nor
the network.

Storage format of ``_mfeat/mfeat.parquet`` (written by the converter, decoded by :func:`decode_table`):

* ``labels``: int8, one row per sample in the original CSV order (row number == ``sample_idx``).
* integer-valued views (``fac``, ``pix``): one fixed-size-list column of the smallest unsigned int type.
* decimal views (``fou``, ``kar``, ``zer``, ``mor``): the CSV text ``m * 10**e`` split into an integer
  mantissa column ``<view>`` and an int8 exponent column ``<view>__exp``. This is exact and compresses
  ~15% better than raw float32; decoding computes ``m * 10**e`` (``m / 10**-e``) in float64 and rounds
  once to float32, which the converter checks is bit-identical to ``float32(float(csv_text))``.

This module deliberately has no relative imports so the converter can load it by file path.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["MFEAT_VIEWS", "MFEAT_NUM_CLASSES", "load_mfeat", "standardize", "decode_table"]

#: View name -> number of features, in the canonical (UCI file) order.
MFEAT_VIEWS: dict[str, int] = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
MFEAT_NUM_CLASSES = 10
MFEAT_NUM_ROWS = 2000

EXP_SUFFIX = "__exp"
DATA_FILE = Path(__file__).resolve().parent / "_mfeat" / "mfeat.parquet"


def decode_table(table: pa.Table) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Decode the compact parquet table into ``({view: float32 (N, d)}, int64 labels (N,))``."""
    views: dict[str, np.ndarray] = {}
    for name, size in MFEAT_VIEWS.items():
        mant = _fixed_list_to_numpy(table.column(name), size)
        exp_name = name + EXP_SUFFIX
        if exp_name in table.column_names:
            exp = _fixed_list_to_numpy(table.column(exp_name), size).astype(np.int64)
            mant = mant.astype(np.float64)
            # Divide by an exact power of ten for negative exponents: multiplying by 10.0**-k
            # (inexact in binary) could round differently from parsing the decimal text.
            scaled = np.where(exp >= 0, mant * 10.0 ** np.maximum(exp, 0), mant / 10.0 ** np.maximum(-exp, 0))
            views[name] = scaled.astype(np.float32)
        else:
            views[name] = mant.astype(np.float32)
    labels = table.column("labels").to_numpy().astype(np.int64)
    return views, labels


def _fixed_list_to_numpy(column: pa.ChunkedArray, size: int) -> np.ndarray:
    arr = column.combine_chunks()
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(-1, size)


@functools.lru_cache(maxsize=1)
def _load_arrays() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Parse the shipped file once per process; arrays are read-only because they are shared."""
    if not DATA_FILE.is_file():
        raise FileNotFoundError(
            f"mfeat data file not found at {DATA_FILE}; it ships with the package "
            "(package-data glob 'data/_mfeat/*') or can be rebuilt with benchmarks/tools/convert_mfeat.py"
        )
    views, labels = decode_table(pq.read_table(DATA_FILE))
    if labels.shape != (MFEAT_NUM_ROWS,):
        raise ValueError(f"corrupt mfeat data file {DATA_FILE}: expected {MFEAT_NUM_ROWS} rows, found {labels.shape[0]}")
    for arr in (*views.values(), labels):
        arr.setflags(write=False)
    return views, labels


def _check_split_sizes(split_sizes: Sequence[float]) -> tuple[float, float, float]:
    sizes = tuple(float(s) for s in split_sizes)
    if len(sizes) != 3 or any(not np.isfinite(s) or s < 0 for s in sizes) or abs(sum(sizes) - 1.0) > 1e-6:
        raise ValueError(
            f"split_sizes must be three non-negative fractions (train, validation, test) summing to 1, got {split_sizes!r}"
        )
    return sizes  # type: ignore[return-value]


def stratified_split(
    labels: np.ndarray, split_sizes: Sequence[float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded per-class split into (train, validation, test) row indices, each split shuffled.

    Per-class counts are ``frac * n_c`` with largest-remainder rounding, so they always add up to
    ``n_c`` and every split keeps the class proportions as closely as integers allow.
    """
    fracs = np.asarray(_check_split_sizes(split_sizes))
    parts: list[list[np.ndarray]] = [[], [], []]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        raw = fracs * len(idx)
        counts = np.floor(raw + 1e-9).astype(np.int64)
        shortfall = len(idx) - int(counts.sum())
        if shortfall > 0:
            order = np.argsort(-(raw - counts), kind="stable")
            counts[order[:shortfall]] += 1
        bounds = np.cumsum(counts)[:-1]
        for part, chunk in zip(parts, np.split(idx, bounds)):
            part.append(chunk)
    return tuple(
        rng.permutation(np.concatenate(p)) if p else np.empty(0, dtype=np.int64) for p in parts
    )  # type: ignore[return-value]


def array_to_arrow(values: np.ndarray) -> pa.Array:
    """numpy (N, *shape) -> arrow array; N-d values become nested fixed-size lists (zero parsing)."""
    arr = pa.array(np.ascontiguousarray(values).reshape(-1))
    for dim in reversed(values.shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, dim)
    return arr


def build_dataset_dict(
    columns: Mapping[str, np.ndarray],
    features: datasets.Features,
    splits: Mapping[str, np.ndarray],
) -> datasets.DatasetDict:
    """Build one in-memory ``Dataset`` per split by taking ``splits[name]`` rows of every column.

    Going through arrow arrays avoids ``Features.encode_column``'s per-row Python loop (~30x faster).
    """
    out = {}
    for split_name, rows in splits.items():
        mapping = {name: array_to_arrow(np.asarray(col)[rows]) for name, col in columns.items()}
        out[split_name] = datasets.Dataset.from_dict(mapping, features=features, split=datasets.NamedSplit(split_name))
    return datasets.DatasetDict(out)


def arrow_table(ds: datasets.Dataset, columns: Sequence[str] | None = None) -> pa.Table:
    """The dataset's ``columns`` as one arrow table in logical row order (indices mapping applied).

    ``ds.with_format("arrow")[:]`` on a shuffled/selected dataset gathers rows one slice at a time in
    Python (~1 s for 20k rows of an ``Array2D`` column); one C++ ``take`` on the backing table is
    ~20x faster. Falls back to the public path if the private attributes ever change.
    """
    columns = list(ds.column_names if columns is None else columns)
    backing = getattr(getattr(ds, "data", None), "table", None)
    indices = getattr(ds, "_indices", None)
    if isinstance(backing, pa.Table) and (indices is None or hasattr(indices, "column")):
        table = backing.select(columns)
        return table if indices is None else table.take(indices.column(0))
    return ds.select_columns(columns).with_format("arrow")[:]


def fixed_shape_numpy(column: pa.ChunkedArray | pa.Array, name: str) -> np.ndarray:
    """A fixed-shape (possibly nested) list / ``Array2D`` column as an ``(N, *shape)`` numpy array."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    shape = [len(arr)]
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        if arr.null_count:
            raise ValueError(f"column {name!r} has null values")
        if pa.types.is_fixed_size_list(arr.type):
            size = arr.type.list_size
        else:
            lengths = np.diff(arr.offsets.to_numpy())
            if lengths.size and (lengths != lengths[0]).any():
                raise ValueError(f"column {name!r} is not fixed-shape: row lengths vary from {lengths.min()} to {lengths.max()}")
            size = int(lengths[0]) if lengths.size else 0
        shape.append(size)
        arr = arr.flatten()
    if len(shape) == 1:
        raise ValueError(f"column {name!r} is not a feature column: found arrow type {arr.type} per row")
    return arr.to_numpy(zero_copy_only=False).reshape(shape)


def _resolve_views(views: Sequence[str] | None) -> list[str]:
    if views is None:
        return list(MFEAT_VIEWS)
    if isinstance(views, str):
        views = [views]
    views = list(views)
    unknown = [v for v in views if v not in MFEAT_VIEWS]
    if unknown:
        raise ValueError(f"unknown mfeat view {unknown[0]!r}; valid views are {list(MFEAT_VIEWS)}")
    if not views:
        raise ValueError(f"views must name at least one mfeat view from {list(MFEAT_VIEWS)}")
    if len(set(views)) != len(views):
        raise ValueError(f"duplicate mfeat view in {views}")
    return views


def load_mfeat(
    views: Sequence[str] | None = None,
    seed: int = 0,
    split_sizes: Sequence[float] = (0.7, 0.1, 0.2),
) -> datasets.DatasetDict:
    """Load mfeat as a ``DatasetDict`` with a fixed, seeded, stratified train/validation/test split.

    Columns: one ``List(Value("float32"), length=d)`` column per selected view (in the order given),
    then ``labels`` (``ClassLabel`` "0".."9", int64) and ``sample_idx`` (original CSV row, int64).
    Features are raw; see :func:`standardize` (the views' scales differ by orders of magnitude).
    With the default ``split_sizes`` the splits hold 1400/200/400 rows (140/20/40 per digit).
    """
    selected = _resolve_views(views)
    arrays, labels = _load_arrays()
    rng = np.random.default_rng(seed)
    train, val, test = stratified_split(labels, split_sizes, rng)
    columns: dict[str, np.ndarray] = {v: arrays[v] for v in selected}
    columns["labels"] = labels
    columns["sample_idx"] = np.arange(len(labels), dtype=np.int64)
    features = datasets.Features(
        {
            **{v: datasets.List(datasets.Value("float32"), length=MFEAT_VIEWS[v]) for v in selected},
            "labels": datasets.ClassLabel(names=[str(i) for i in range(MFEAT_NUM_CLASSES)]),
            "sample_idx": datasets.Value("int64"),
        }
    )
    return build_dataset_dict(columns, features, {"train": train, "validation": val, "test": test})


def standardize(
    dataset_dict: datasets.DatasetDict, columns: Sequence[str], train_split: str = "train"
) -> datasets.DatasetDict:
    """Z-score each listed feature column per feature dimension, using statistics of ``train_split`` only.

    Fitting on train only keeps validation/test unseen. ``std`` is clipped at 1e-6 so constant
    features (mfeat ``mor`` has some) map to 0 instead of NaN. Fixed-length vector columns and
    ``Array2D`` sequence columns are supported; for a sequence column with a matching
    ``<col>_attention_mask`` only unmasked positions enter the statistics and padding stays 0.
    Returns a new ``DatasetDict`` with the same column order, features and format.
    """
    if isinstance(columns, str):
        columns = [columns]
    if train_split not in dataset_dict:
        raise ValueError(f"standardize needs a {train_split!r} split to fit statistics; splits are {list(dataset_dict)}")
    train = dataset_dict[train_split]
    for col in columns:
        if col not in train.column_names:
            raise ValueError(f"cannot standardize column {col!r}: not in dataset columns {train.column_names}")

    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for col in columns:
        values, mask = _column_values(arrow_table(train), col)
        flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
        if mask is not None:
            flat = flat[mask.reshape(-1) > 0]
        if flat.shape[0] == 0:
            raise ValueError(f"cannot standardize column {col!r}: the {train_split!r} split has no values")
        stats[col] = (flat.mean(axis=0), np.maximum(flat.std(axis=0), 1e-6))

    out = {}
    for split_name, ds in dataset_dict.items():
        if ds.num_rows == 0:  # nothing to scale (and an empty Array2D column has no usable shape)
            out[split_name] = ds
            continue
        table = arrow_table(ds)
        for col, (mean, std) in stats.items():
            values, mask = _column_values(table, col)
            scaled = ((values - mean) / std).astype(np.float32)
            if mask is not None:
                scaled = np.where(mask[..., None] > 0, scaled, np.float32(0.0))
            table = table.set_column(table.schema.get_field_index(col), col, array_to_arrow(scaled))
        new = datasets.Dataset.from_dict(
            {name: table.column(name) for name in table.column_names},
            features=ds.features,
            info=ds.info.copy(),
            split=ds.split,
        )
        fmt = ds.format
        new.set_format(
            type=fmt["type"], columns=fmt["columns"], output_all_columns=fmt["output_all_columns"], **fmt["format_kwargs"]
        )
        out[split_name] = new
    return datasets.DatasetDict(out)


def _column_values(table: pa.Table, col: str) -> tuple[np.ndarray, np.ndarray | None]:
    values = fixed_shape_numpy(table.column(col), col)
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"cannot standardize column {col!r}: expected numeric features, found dtype {values.dtype}")
    mask_col = f"{col}_attention_mask"
    mask = None
    if values.ndim == 3 and mask_col in table.column_names:
        mask = fixed_shape_numpy(table.column(mask_col), mask_col)
    return values, mask
