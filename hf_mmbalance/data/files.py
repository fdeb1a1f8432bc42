"""Multimodal datasets read from local files: a CSV / JSON-lines manifest, or a ``save_to_disk`` folder.

A manifest lists one sample per row: file paths for some modalities, maybe a text column, a label and
maybe a split column. Example CSV (``frames`` cells hold ``;``-separated paths)::

    image,audio,frames,caption,labels,split
    img/0.png,wav/0.wav,vid/0/a.png;vid/0/b.png,a dog barks,dog,train
    img/1.png,wav/1.wav,vid/1/a.png;vid/1/b.png,a cat sits,cat,test

The JSON-lines equivalent writes ``"frames": ["vid/0/a.png", "vid/0/b.png"]`` as a list. Rows are read with
``datasets.load_dataset("csv" | "json")``, relative paths are resolved against the manifest's folder (or
``base_dir``) and stored absolute, so the dataset works from any working directory. Every referenced
file is checked before anything trains: all of them for existence, then every image with Pillow's
``verify`` (a header read) and every audio file with ``soundfile.info``.

Column features produced:

* ``image``    -> ``datasets.Image()``: rows decode lazily to ``PIL.Image.Image`` (Pillow).
* ``audio``    -> ``datasets.Audio(decode=False)``: rows are ``{"path", "bytes"}`` dicts. ``datasets``
  decodes audio with torchcodec, which needs system FFmpeg libraries a fresh machine lacks, so audio is
  left undecoded and read later with soundfile (``bytes`` when not None, else ``path``; a
  ``save_to_disk`` copy embeds the bytes and keeps only the file's base name as ``path``). Casting a path
  column to ``Audio(decode=False)`` needs no torchcodec, but ``Audio.encode_example`` does, so never
  rebuild such a column with ``Dataset.from_dict(..., features=...)`` or a ``map`` that returns dicts.
* ``frames``   -> ``datasets.List(datasets.Image())`` (what ``Sequence(Image())`` means in datasets 5).
* ``text``     -> ``datasets.Value("string")``.
* ``features`` -> ``datasets.List(datasets.Value("float32"), length=d)`` (CSV: ``;``-separated numbers).
* labels: class names -> ``ClassLabel`` (sorted names, or ``class_names``); integers -> ``Value("int64")``;
  floats -> ``Value("float32")`` (regression).
* ``sample_idx`` -> ``Value("int64")``, added when absent: ``0..N-1`` in manifest order over all splits.

Errors are :class:`DatasetFilesError` (a :class:`~.validation.DatasetValidationError`, so a
``ValueError``) and name the manifest file, the column and the row. Rows count data rows from 0 (a CSV
header is not a row).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import soundfile
from datasets.table import InMemoryTable, cast_table_to_features
from PIL import Image as PILImage

from ..progress import quiet_library_progress
from .mfeat import arrow_table, stratified_split
from .validation import DatasetValidationError

__all__ = [
    "DEFAULT_TEST_FRACTION",
    "DEFAULT_VALIDATION_FRACTION",
    "FRAMES_SEPARATOR",
    "MODALITY_KINDS",
    "DatasetFilesError",
    "load_multimodal_dataset",
    "load_multimodal_files",
    "modality_feature",
]

MODALITY_KINDS = ("image", "audio", "frames", "text", "features")
SPLIT_NAMES = ("train", "validation", "test")
FRAMES_SEPARATOR = ";"
DEFAULT_VALIDATION_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.2
SAMPLE_IDX = "sample_idx"

# extension -> (datasets packaged loader, its options). keep_default_na=False: pandas would otherwise
# turn the text "NA" / "null" / "nan" (a caption, a class name) into a missing value; only empty cells are.
_FORMATS = {
    ".csv": ("csv", {"keep_default_na": False, "na_values": [""]}),
    ".tsv": ("csv", {"sep": "\t", "keep_default_na": False, "na_values": [""]}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
}
_PATH_KINDS = ("image", "audio", "frames")
_MAX_LISTED = 5
_ROWS_NOTE = "rows count from 0, a CSV header is not a row"


class DatasetFilesError(DatasetValidationError):
    """A manifest, a file it references or a saved dataset is unusable; the message names file, column, row."""


def modality_feature(kind: str, dim: int | None = None) -> datasets.features.features.FeatureType:
    """The ``datasets`` feature a modality column of this ``kind`` gets (``dim``: length for ``features``)."""
    if kind == "image":
        return datasets.Image()
    if kind == "audio":
        return datasets.Audio(decode=False)
    if kind == "frames":
        return datasets.List(datasets.Image())
    if kind == "text":
        return datasets.Value("string")
    if kind == "features":
        return datasets.List(datasets.Value("float32"), length=-1 if dim is None else dim)
    raise ValueError(f"unknown modality kind {kind!r}; valid kinds are {list(MODALITY_KINDS)}")


# --------------------------------------------------------------------------- public entry points


def load_multimodal_files(
    data_files: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike | Sequence],
    modalities: Mapping[str, str],
    *,
    label_column: str = "labels",
    split_column: str | None = None,
    base_dir: str | os.PathLike | None = None,
    validation_fraction: float | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    verify_files: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """Read manifest file(s) into a ``DatasetDict`` whose modality columns point at checked local files.

    Args:
        data_files: as in ``datasets.load_dataset``: one manifest path (or a list, concatenated), or a
            mapping split name -> path(s). Format from the extension: ``.csv``, ``.tsv``, ``.json``, ``.jsonl``.
        modalities: column name -> kind, one of ``MODALITY_KINDS``: ``"image"`` / ``"audio"`` (a path),
            ``"frames"`` (a list of image paths; in CSV one cell of ``;``-separated paths), ``"text"``,
            ``"features"`` (a numeric vector, every row the same length; in CSV ``;``-separated).
        label_column: class names (-> ``ClassLabel``), integer ids (int64) or numbers (float32, regression).
        split_column: a column with values ``train`` / ``validation`` / ``test`` assigning each row its
            split (dropped from the output; ``train`` must occur). Only with a single source.
        base_dir: folder relative paths are resolved against (default: each manifest's own folder).
        validation_fraction, test_fraction: for a single source without ``split_column``, a seeded
            random split stratified by class (not stratified for float labels), defaults
            ``DEFAULT_VALIDATION_FRACTION`` = 0.1 and ``DEFAULT_TEST_FRACTION`` = 0.2; a fraction of 0
            leaves that split out. Per-class counts use largest-remainder rounding, and each split keeps
            manifest order. Not allowed with ``split_column`` or a mapping (their splits are given).
        seed: seed of that random split (same seed, same manifest -> same split).
        class_names: the class names in id order (default: the sorted distinct names); a label outside
            them is an error.
        verify_files: also open every image (Pillow ``verify``) and audio file (``soundfile.info``);
            existence is always checked.
        cache_dir: ``datasets`` cache folder for the parsed manifests (default: the HF datasets cache).

    Returns:
        ``DatasetDict`` with the splits, modality columns typed as in the module docstring, the label,
        ``sample_idx`` (unique across splits) and any other manifest columns as ``datasets`` read them.

    Raises:
        DatasetFilesError: missing manifest, unknown extension, missing column, empty cell, missing or
            unreadable referenced file, bad split value, empty split, null/NaN label, duplicate sample_idx.
        ValueError: invalid arguments (unknown kind, bad fractions, conflicting split options).
    """
    kinds = _check_modalities(modalities, label_column, split_column)
    sources, presplit = _normalize_sources(data_files)
    if (presplit or split_column is not None) and (validation_fraction is not None or test_fraction is not None):
        how = "split_column" if split_column is not None else "a mapping of split -> files"
        raise ValueError(f"validation_fraction / test_fraction split a single manifest; the splits already come from {how}")
    if presplit and split_column is not None:
        raise ValueError("give either split_column or a mapping of split -> files, not both")
    fractions = _check_fractions(validation_fraction, test_fraction)
    class_names = _check_class_names(class_names)
    base = None if base_dir is None else os.path.abspath(os.fspath(base_dir))

    parsed = {
        split: [_parse_manifest(path, kinds, label_column, split_column, base, class_names, cache_dir) for path in paths]
        for split, paths in sources.items()
    }
    manifests = [m for ms in parsed.values() for m in ms]
    _raise_problems([p for m in manifests for p in m.problems], "unusable manifest cells")
    _check_same_columns(manifests)
    _check_feature_dims(manifests, kinds)
    _check_files(manifests, verify_files)

    tables = _number_rows({split: _concat([m.table for m in ms]) for split, ms in parsed.items()})
    if split_column is not None:
        tables = _split_by_column(tables["train"], split_column)
    dims = {col: _feature_dim(manifests, col) for col, kind in kinds.items() if kind == "features"}
    features_of = {col: modality_feature(kind, dims.get(col)) for col, kind in kinds.items()}
    splits = {name: _to_dataset(table, features_of, name) for name, table in tables.items()}
    return _finish(splits, label_column, class_names, None if presplit or split_column else fractions, seed)


def load_multimodal_dataset(
    path: str | os.PathLike | Mapping[str, str | os.PathLike | Sequence],
    modalities: Mapping[str, str] | None = None,
    *,
    label_column: str = "labels",
    split_column: str | None = None,
    base_dir: str | os.PathLike | None = None,
    validation_fraction: float | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    verify_files: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """Load what ``path`` is: a ``save_to_disk`` folder, or a manifest file (or mapping) for :func:`load_multimodal_files`.

    The one entry point for the CLI. A saved ``DatasetDict`` keeps its splits; a saved single ``Dataset``
    is split by fractions like a single manifest. For a saved folder ``modalities`` is optional: when
    given, each column must exist with a feature matching its kind (an ``Audio`` column that decodes is
    switched to ``decode=False``). Either way: string labels become ``ClassLabel``, float labels
    float32, nulls/NaN in labels and empty splits are errors, and ``sample_idx`` is added when absent.
    ``split_column``, ``base_dir``, ``verify_files`` and ``cache_dir`` apply to manifests only.
    """
    if not isinstance(path, Mapping) and not os.path.exists(os.fspath(path)):
        raise DatasetFilesError(f"not found: {os.fspath(path)} (expected a manifest file or a save_to_disk folder)")
    if isinstance(path, Mapping) or not os.path.isdir(os.fspath(path)):
        if modalities is None:
            raise ValueError(f"loading the manifest {path!r} needs modalities (column name -> kind)")
        return load_multimodal_files(
            path, modalities, label_column=label_column, split_column=split_column, base_dir=base_dir,
            validation_fraction=validation_fraction, test_fraction=test_fraction, seed=seed,
            class_names=class_names, verify_files=verify_files, cache_dir=cache_dir,
        )
    if split_column is not None or base_dir is not None:
        raise ValueError(f"split_column and base_dir apply to manifests; {os.fspath(path)!r} is a saved dataset folder")
    return _load_saved(os.fspath(path), modalities, label_column, validation_fraction, test_fraction, seed, class_names)


# --------------------------------------------------------------------------- argument checks


def _check_modalities(modalities, label_column: str, split_column: str | None) -> dict[str, str]:
    if not isinstance(modalities, Mapping) or not modalities:
        raise ValueError(f"modalities must be a non-empty mapping of column name -> kind, got {modalities!r}")
    kinds = dict(modalities)
    for col, kind in kinds.items():
        if kind not in MODALITY_KINDS:
            raise ValueError(f"modality column {col!r}: unknown kind {kind!r}; valid kinds are {list(MODALITY_KINDS)}")
    for special in (label_column, split_column, SAMPLE_IDX):
        if special in kinds:
            raise ValueError(f"column {special!r} cannot be both a modality and the label / split / sample id column")
    if split_column is not None and split_column == label_column:
        raise ValueError(f"split_column and label_column are both {label_column!r}")
    return kinds


def _normalize_sources(data_files) -> tuple[dict[str, list[str]], bool]:
    """``data_files`` -> (split -> manifest paths, whether the splits were given)."""
    def paths(value, where: str) -> list[str]:
        items = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        if not items or not all(isinstance(p, (str, os.PathLike)) for p in items):
            raise ValueError(f"{where}: expected a manifest path or a non-empty list of paths, got {value!r}")
        return [os.fspath(p) for p in items]

    if isinstance(data_files, Mapping):
        if not data_files:
            raise ValueError("data_files mapping is empty")
        for split in data_files:
            if not isinstance(split, str) or not re.fullmatch(r"\w+(\.\w+)*", split):
                raise ValueError(f"data_files: invalid split name {split!r} (letters, digits, _ and . only)")
        return {split: paths(value, f"data_files[{split!r}]") for split, value in data_files.items()}, True
    if isinstance(data_files, (str, os.PathLike, Sequence)):
        return {"train": paths(data_files, "data_files")}, False
    raise ValueError(f"data_files must be a path, a list of paths or a mapping split -> path(s), got {data_files!r}")


def _check_fractions(validation_fraction, test_fraction) -> tuple[float, float]:
    v = DEFAULT_VALIDATION_FRACTION if validation_fraction is None else validation_fraction
    t = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
    for name, value in (("validation_fraction", v), ("test_fraction", t)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    if v + t >= 1:
        raise ValueError(f"validation_fraction + test_fraction must be < 1 to leave a train split, got {v} + {t}")
    return float(v), float(t)


def _check_class_names(class_names) -> list[str] | None:
    if class_names is None:
        return None
    names = list(class_names)
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct strings, got {class_names!r}")
    return names


# --------------------------------------------------------------------------- reading one manifest


@dataclass
class _Ref:
    """One referenced file: where the manifest names it, and its resolved absolute path."""

    manifest: str
    row: int
    column: str
    kind: str
    path: str

    def where(self) -> str:
        return f"{self.manifest} row {self.row}, column {self.column!r}"


@dataclass
class _Manifest:
    """One parsed manifest: its table (paths resolved, cells parsed), referenced files, cell problems."""

    path: str
    table: pa.Table
    refs: dict[str, list[_Ref]]
    problems: list[str]
    dims: dict[str, int]


def _parse_manifest(
    path: str, kinds: dict[str, str], label_column: str, split_column: str | None,
    base: str | None, class_names: list[str] | None, cache_dir,
) -> _Manifest:
    path = os.path.abspath(path)
    table = _read_manifest(path, cache_dir)
    if table.num_rows == 0:
        raise DatasetFilesError(f"manifest {path} has no rows")
    _check_columns(table, path, kinds, label_column, split_column)
    base = os.path.dirname(path) if base is None else base
    manifest = _Manifest(path, table, {}, [], {})
    for col, kind in kinds.items():
        values = table.column(col).to_pylist()
        if kind in _PATH_KINDS:
            parsed = _parse_paths(values, kind, col, base, manifest)
            arrow_type = pa.list_(pa.string()) if kind == "frames" else pa.string()
        elif kind == "text":
            parsed, arrow_type = _parse_text(values, col, manifest), pa.string()
        else:
            parsed, arrow_type = _parse_vectors(values, col, manifest), pa.list_(pa.float32())
        manifest.table = _replace_column(manifest.table, col, pa.array(parsed, type=arrow_type))
    manifest.problems += _label_problems(table.column(label_column), f"{path}, label column {label_column!r}", class_names)
    if split_column is not None:
        manifest.problems += _split_value_problems(table.column(split_column), path, split_column)
    return manifest


def _read_manifest(path: str, cache_dir) -> pa.Table:
    if not os.path.isfile(path):
        raise DatasetFilesError(f"manifest not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in _FORMATS:
        raise DatasetFilesError(f"manifest {path}: unknown extension {ext!r}; expected one of {sorted(_FORMATS)}")
    builder, options = _FORMATS[ext]
    try:
        with quiet_library_progress():  # reading a small manifest is instant: no bar
            ds = datasets.load_dataset(
                builder, data_files=path, split="train", cache_dir=None if cache_dir is None else os.fspath(cache_dir), **options
            )
    except Exception as err:  # the loaders raise pandas / pyarrow / datasets errors of many types
        if _has_no_rows(path, builder):  # datasets reports an empty file as 'Instruction "train" corresponds to no data'
            raise DatasetFilesError(f"manifest {path} has no rows") from err
        raise DatasetFilesError(f"manifest {path}: cannot be read as {builder}: {type(err).__name__}: {err}") from err
    return arrow_table(ds)


def _has_no_rows(path: str, builder: str) -> bool:
    """Whether a manifest holds no data rows (a CSV: nothing after the header line)."""
    with open(path, errors="replace") as f:
        lines = [line for line in f if line.strip()]
    return len(lines) <= (1 if builder == "csv" else 0)


def _check_columns(table: pa.Table, path: str, kinds, label_column: str, split_column: str | None) -> None:
    present = table.column_names
    missing = [col for col in kinds if col not in present]
    if missing:
        raise DatasetFilesError(
            f"manifest {path}: modality column(s) {', '.join(map(repr, missing))} not found; columns present: {present}"
        )
    for role, col in (("label", label_column), ("split", split_column)):
        if col is not None and col not in present:
            raise DatasetFilesError(f"manifest {path}: {role} column {col!r} not found; columns present: {present}")


def _resolve(value: str, base: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(value.strip())))


def _parse_paths(values: list, kind: str, col: str, base: str, m: _Manifest) -> list:
    """Resolve every path cell; frames cells become lists (CSV: split on ``FRAMES_SEPARATOR``)."""
    refs, out = m.refs.setdefault(col, []), []
    for row, value in enumerate(values):
        if kind == "frames":
            items = value.split(FRAMES_SEPARATOR) if isinstance(value, str) else value
            items = [str(p) for p in (items or []) if p is not None and str(p).strip()]
            if not items:
                m.problems.append(f"{m.path} row {row}, column {col!r}: no frame paths (got {value!r})")
            resolved = [_resolve(p, base) for p in items]
            refs += [_Ref(m.path, row, f"{col}[{i}]", kind, p) for i, p in enumerate(resolved)]
        else:
            if value is None or not str(value).strip():
                m.problems.append(f"{m.path} row {row}, column {col!r}: empty {kind} path")
                resolved = None
            else:
                resolved = _resolve(str(value), base)
                refs.append(_Ref(m.path, row, col, kind, resolved))
        out.append(resolved)
    return out


def _parse_text(values: list, col: str, m: _Manifest) -> list:
    for row, value in enumerate(values):
        if value is None:
            m.problems.append(f"{m.path} row {row}, column {col!r}: missing text")
    return [None if v is None else str(v) for v in values]


def _parse_vectors(values: list, col: str, m: _Manifest) -> list:
    """Numeric vectors from lists (JSON), ``;``-separated strings (CSV) or single numbers; all one length."""
    out = []
    for row, value in enumerate(values):
        try:
            if isinstance(value, str):
                vec = [float(x) for x in value.split(FRAMES_SEPARATOR) if x.strip()]
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                vec = [float(value)]
            else:
                vec = [float(x) for x in value]
            if not vec:
                raise ValueError("empty vector")
            if not np.isfinite(vec).all():
                raise ValueError("NaN or inf")
        except (TypeError, ValueError) as err:
            m.problems.append(f"{m.path} row {row}, column {col!r}: not a numeric vector ({value!r}: {err})")
            vec = None
        out.append(vec)
    lengths = {len(v) for v in out if v is not None}
    if len(lengths) > 1:
        first = next(len(v) for v in out if v is not None)
        bad = next(row for row, v in enumerate(out) if v is not None and len(v) != first)
        m.problems.append(
            f"{m.path} column {col!r}: feature vectors differ in length ({sorted(lengths)}); "
            f"row 0 has {first}, row {bad} has {len(out[bad])}"
        )
    elif lengths:
        m.dims[col] = lengths.pop()
    return out


def _label_problems(column: pa.ChunkedArray, where: str, class_names: list[str] | None) -> list[str]:
    """Null / NaN labels, unsupported label types and names outside ``class_names``, with their rows."""
    arr = column.combine_chunks()
    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    rows = np.flatnonzero(arr.is_null(nan_is_null=pa.types.is_floating(arr.type)).to_numpy(zero_copy_only=False))
    if rows.size:
        return [f"{where}: {rows.size} null or NaN label(s), at rows {_first_rows(rows)}"]
    if not (_is_string(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        return [f"{where}: labels must be class names, integer class ids or numbers, found dtype {arr.type}"]
    if class_names is not None and _is_string(arr.type):
        unknown = np.flatnonzero(~pc.is_in(arr, value_set=pa.array(class_names, arr.type)).to_numpy(zero_copy_only=False))
        if unknown.size:
            values = sorted({arr[int(i)].as_py() for i in unknown})
            return [f"{where}: label(s) {values[:_MAX_LISTED]} not in class_names, at rows {_first_rows(unknown)}"]
    return []


def _split_value_problems(column: pa.ChunkedArray, path: str, split_column: str) -> list[str]:
    values = column.to_pylist()
    bad = [row for row, v in enumerate(values) if v not in SPLIT_NAMES]
    if not bad:
        return []
    found = sorted({repr(values[row]) for row in bad})
    return [
        f"{path}, split column {split_column!r}: values must be one of {list(SPLIT_NAMES)}; found "
        f"{', '.join(found[:_MAX_LISTED])} at {len(bad)} row(s): {_first_rows(bad)}"
    ]


# --------------------------------------------------------------------------- checks across manifests


def _check_same_columns(manifests: list[_Manifest]) -> None:
    first = manifests[0]
    for m in manifests[1:]:
        if set(m.table.column_names) != set(first.table.column_names):
            raise DatasetFilesError(
                f"manifests disagree on their columns: {first.path} has {first.table.column_names}, "
                f"{m.path} has {m.table.column_names}"
            )


def _check_feature_dims(manifests: list[_Manifest], kinds: dict[str, str]) -> None:
    for col in (c for c, k in kinds.items() if k == "features"):
        dims = {m.path: m.dims[col] for m in manifests if col in m.dims}
        if len(set(dims.values())) > 1:
            raise DatasetFilesError(f"feature column {col!r} has different lengths across manifests: {dims}")


def _feature_dim(manifests: list[_Manifest], col: str) -> int:
    return next(m.dims[col] for m in manifests if col in m.dims)


def _check_files(manifests: list[_Manifest], verify: bool) -> None:
    """Every referenced file exists (all checked, then reported together); then, if ``verify``, opens."""
    # listed manifest by manifest in row order (a stable sort keeps the column order inside a row)
    refs = [ref for m in manifests for ref in sorted((r for rs in m.refs.values() for r in rs), key=lambda r: r.row)]
    missing = [ref for ref in refs if not os.path.isfile(ref.path)]
    if missing:
        _raise_problems([f"{ref.where()}: {ref.path}" for ref in missing], "referenced files do not exist")
    if not verify:
        return
    first_ref = {}
    for ref in refs:  # a file referenced by several rows is opened once
        first_ref.setdefault((ref.kind, ref.path), ref)
    problems = []
    for (kind, path), ref in first_ref.items():
        error = _audio_error(path) if kind == "audio" else _image_error(path)
        if error is not None:
            what = "soundfile cannot read the audio" if kind == "audio" else "Pillow cannot open the image"
            problems.append(f"{ref.where()}: {what} {path} ({error})")
    _raise_problems(problems, "referenced files cannot be read")


def _image_error(path: str) -> str | None:
    try:
        with PILImage.open(path) as img:
            img.verify()  # reads headers and checks structure without decoding the pixels
    except Exception as err:  # Pillow raises UnidentifiedImageError, SyntaxError, OSError, ... for bad files
        return f"{type(err).__name__}: {err}"
    return None


def _audio_error(path: str) -> str | None:
    try:
        soundfile.info(path)
    except Exception as err:  # LibsndfileError (a RuntimeError) for unknown formats, OSError, ...
        return f"{type(err).__name__}: {err}"
    return None


def _raise_problems(problems: list[str], headline: str, note: str = _ROWS_NOTE) -> None:
    """Raise one error for all ``problems``: their count, then the first few, one per line."""
    if problems:
        shown = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise DatasetFilesError(f"{len(problems)} {headline} ({note}):\n  {shown}{more}")


# --------------------------------------------------------------------------- tables -> datasets


def _replace_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, values)


def _concat(tables: list[pa.Table]) -> pa.Table:
    order = tables[0].column_names
    return pa.concat_tables([t.select(order) for t in tables], promote_options="permissive")


def _number_rows(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Add ``sample_idx`` = 0..N-1 over all sources in order, unless the manifests carry their own."""
    if SAMPLE_IDX in next(iter(tables.values())).column_names:
        return tables
    out, start = {}, 0
    for split, table in tables.items():
        idx = pa.array(np.arange(start, start + table.num_rows, dtype=np.int64))
        out[split], start = table.append_column(SAMPLE_IDX, idx), start + table.num_rows
    return out


def _split_by_column(table: pa.Table, split_column: str) -> dict[str, pa.Table]:
    values = table.column(split_column)
    splits = {}
    for name in SPLIT_NAMES:
        part = table.filter(pc.equal(values, name)).drop_columns([split_column])
        if part.num_rows:
            splits[name] = part
    if "train" not in splits:
        raise DatasetFilesError(f"split column {split_column!r}: no row is in 'train' (found splits {list(splits)})")
    return splits


def _to_dataset(table: pa.Table, modality_features: dict, split: str) -> datasets.Dataset:
    """Typed in-memory ``Dataset``: a cast of the arrow table (no per-row encoding, so no torchcodec)."""
    features = datasets.Features.from_arrow_schema(table.schema)
    features.update(modality_features)
    table = cast_table_to_features(table, features)
    return datasets.Dataset(InMemoryTable(table), info=datasets.DatasetInfo(features=features), split=datasets.NamedSplit(split))


# --------------------------------------------------------------------------- shared finishing steps


def _finish(
    splits: dict[str, datasets.Dataset], label_column: str, class_names: list[str] | None,
    fractions: tuple[float, float] | None, seed: int,
) -> datasets.DatasetDict:
    """Labels typed, ``sample_idx`` checked, the fraction split done if asked, no split empty."""
    splits = _encode_labels(splits, label_column, class_names)
    _check_sample_idx(splits)
    if fractions is not None:
        (only,) = splits.values()
        splits = _split_by_fractions(only, label_column, fractions, seed)
    for name, ds in splits.items():
        if ds.num_rows == 0:
            raise DatasetFilesError(f"split {name!r} is empty")
    return datasets.DatasetDict(splits)


_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_FLOAT_DTYPES = {"float16", "float32", "float64"}


def _label_feature(feats: list, label_column: str, class_names: list[str] | None):
    """One label feature for all splits: ``None`` keeps a ``ClassLabel``, ``"names"`` asks for one."""
    if all(isinstance(f, datasets.ClassLabel) for f in feats):
        if class_names is not None and feats[0].names != class_names:
            raise DatasetFilesError(f"label column {label_column!r} has classes {feats[0].names}, class_names says {class_names}")
        return None
    dtypes = {f.dtype if isinstance(f, datasets.Value) else type(f).__name__ for f in feats}
    if dtypes <= {"string", "large_string"}:
        return "names"
    if dtypes <= _INT_DTYPES:
        return datasets.Value("int64") if class_names is None else datasets.ClassLabel(names=class_names)
    if dtypes <= _INT_DTYPES | _FLOAT_DTYPES:  # ints in one split, floats in another: all regression targets
        if class_names is not None:
            raise DatasetFilesError(f"label column {label_column!r} holds float targets; class_names needs class names or ids")
        return datasets.Value("float32")
    raise DatasetFilesError(
        f"label column {label_column!r}: splits hold label types {sorted(dtypes)}; "
        "use class names, integer ids or numbers throughout"
    )


def _class_id_problems(splits: dict[str, datasets.Dataset], label_column: str, num_classes: int) -> list[str]:
    """Integer class ids outside ``[0, num_classes)`` (``-1``, datasets' "no label", included)."""
    problems = []
    for name, ds in splits.items():
        ids = arrow_table(ds, [label_column]).column(0).to_numpy()
        bad = np.flatnonzero((ids < 0) | (ids >= num_classes))
        if bad.size:
            problems.append(
                f"split {name!r}, label column {label_column!r}: class ids must lie in [0, {num_classes}), "
                f"found {sorted(set(ids[bad].tolist()))[:_MAX_LISTED]} at rows {_first_rows(bad)}"
            )
    return problems


def _encode_labels(splits: dict[str, datasets.Dataset], label_column: str, class_names) -> dict[str, datasets.Dataset]:
    """Class names -> ``ClassLabel`` ids, integers -> int64, numbers -> float32, the same for every split.

    The column is rebuilt with ``remove_columns`` + ``add_column`` (both arrow-table operations) rather
    than ``cast_column``, which for non-decodable features runs a ``map`` that writes a cache file into
    the folder of a ``load_from_disk`` dataset. The label column thereby moves to the end.
    """
    feature = _label_feature([ds.features[label_column] for ds in splits.values()], label_column, class_names)
    if feature is None:
        return splits
    if isinstance(feature, datasets.ClassLabel):  # integer ids named by class_names
        _raise_problems(_class_id_problems(splits, label_column, feature.num_classes), "label problem(s)", "rows count from 0")
    columns = {name: arrow_table(ds, [label_column]).column(0) for name, ds in splits.items()}
    if feature == "names":
        strings = {name: col.cast(pa.string()) for name, col in columns.items()}
        names = class_names or sorted({v for col in strings.values() for v in pc.unique(col).to_pylist()})
        feature = datasets.ClassLabel(names=names)
        values = {n: pc.index_in(col, value_set=pa.array(names, pa.string())).to_numpy() for n, col in strings.items()}
    else:
        values = {name: col.to_numpy().astype(feature.dtype) for name, col in columns.items()}
    out = {}
    for name, ds in splits.items():
        if ds.features[label_column] == feature:
            out[name] = ds
        else:
            out[name] = ds.remove_columns([label_column]).add_column(label_column, values[name], feature=feature)
    return out


def _check_sample_idx(splits: dict[str, datasets.Dataset]) -> None:
    """A ``sample_idx`` the data brought must be non-null integers, unique across all splits."""
    columns = {name: arrow_table(ds, [SAMPLE_IDX]).column(0).combine_chunks() for name, ds in splits.items()}
    seen: dict[int, tuple[str, int]] = {}
    for name, arr in columns.items():
        if not pa.types.is_integer(arr.type) or arr.null_count:
            raise DatasetFilesError(f"split {name!r}: column {SAMPLE_IDX!r} must hold integers without nulls, found {arr.type}")
        for row, value in enumerate(arr.to_numpy().tolist()):
            if value in seen:
                first_split, first_row = seen[value]
                raise DatasetFilesError(
                    f"column {SAMPLE_IDX!r} must be unique across splits: {value} appears in split {first_split!r} "
                    f"row {first_row} and split {name!r} row {row}"
                )
            seen[value] = (name, row)


def _split_by_fractions(ds: datasets.Dataset, label_column: str, fractions: tuple[float, float], seed: int) -> dict:
    """Seeded split into train / validation / test, stratified by class unless labels are floats."""
    validation, test = fractions
    labels = arrow_table(ds, [label_column]).column(0).to_numpy()
    strata = labels if np.issubdtype(labels.dtype, np.integer) else np.zeros(len(labels), dtype=np.int64)
    parts = stratified_split(strata, (1.0 - validation - test, validation, test), np.random.default_rng(seed))
    out = {}
    for name, fraction, rows in zip(SPLIT_NAMES, (1.0, validation, test), parts):
        if fraction == 0:
            continue
        if rows.size == 0:
            raise DatasetFilesError(
                f"split {name!r} is empty: {fraction} of {ds.num_rows} rows rounds to none; use more rows or a larger fraction"
            )
        out[name] = ds.select(np.sort(rows))  # sorted: each split keeps manifest order
    return out


# --------------------------------------------------------------------------- save_to_disk folders


def _load_saved(path, modalities, label_column, validation_fraction, test_fraction, seed, class_names) -> datasets.DatasetDict:
    if not any(os.path.isfile(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json")):
        raise DatasetFilesError(
            f"{path} is a folder but not a save_to_disk output (no dataset_dict.json or state.json); "
            "pass a manifest file (.csv, .tsv, .json, .jsonl) or a saved dataset folder"
        )
    loaded = datasets.load_from_disk(path)
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    single = not isinstance(loaded, datasets.DatasetDict)
    if not single and (validation_fraction is not None or test_fraction is not None):
        raise ValueError(f"{path} holds a DatasetDict with splits {list(splits)}; validation/test fractions apply to a single Dataset")
    fractions = _check_fractions(validation_fraction, test_fraction) if single else None
    class_names = _check_class_names(class_names)
    kinds = None if modalities is None else _check_modalities(modalities, label_column, None)
    for name, ds in splits.items():
        where = f"{path}, split {name!r}"
        if kinds is not None:
            splits[name] = ds = _check_saved_modalities(ds, kinds, where)
        if label_column not in ds.column_names:
            raise DatasetFilesError(f"{where}: label column {label_column!r} not found; columns present: {ds.column_names}")
        feature = ds.features[label_column]
        if isinstance(feature, datasets.ClassLabel):
            problems = _class_id_problems({name: ds}, label_column, feature.num_classes)
        else:
            problems = _label_problems(arrow_table(ds, [label_column]).column(0), where, class_names)
        _raise_problems([f"{path}, {p}" if p.startswith("split") else p for p in problems], "label problem(s)",
                        note="rows count from 0")
    with_idx = [name for name, ds in splits.items() if SAMPLE_IDX in ds.column_names]
    if not with_idx:
        splits = _add_sample_idx(splits)
    elif len(with_idx) < len(splits):
        raise DatasetFilesError(f"{path}: only splits {with_idx} of {list(splits)} have a {SAMPLE_IDX!r} column")
    return _finish(splits, label_column, class_names, fractions, seed)


def _add_sample_idx(splits: dict[str, datasets.Dataset]) -> dict[str, datasets.Dataset]:
    """``sample_idx`` = 0..N-1 over the splits in order (an in-memory column; the saved files stay untouched)."""
    out, start = {}, 0
    for name, ds in splits.items():
        out[name] = ds.add_column(SAMPLE_IDX, np.arange(start, start + ds.num_rows, dtype=np.int64))
        start += ds.num_rows
    return out


def _check_saved_modalities(ds: datasets.Dataset, kinds: dict[str, str], where: str) -> datasets.Dataset:
    missing = [col for col in kinds if col not in ds.column_names]
    if missing:
        raise DatasetFilesError(
            f"{where}: modality column(s) {', '.join(map(repr, missing))} not found; columns present: {ds.column_names}"
        )
    for col, kind in kinds.items():
        feature = ds.features[col]
        if not _feature_matches(feature, kind):
            raise DatasetFilesError(
                f"{where}: column {col!r} is declared {kind!r} but holds {feature}; expected {modality_feature(kind)}"
            )
        if kind == "audio" and feature.decode:  # decoding needs torchcodec + FFmpeg; the processing layer uses soundfile
            ds = ds.cast_column(col, datasets.Audio(sampling_rate=feature.sampling_rate, decode=False))
    return ds


def _feature_matches(feature, kind: str) -> bool:
    if kind == "image":
        return isinstance(feature, datasets.Image)
    if kind == "audio":
        return isinstance(feature, datasets.Audio)
    if kind == "frames":
        return isinstance(feature, (datasets.List, datasets.LargeList)) and isinstance(feature.feature, datasets.Image)
    if kind == "text":
        return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
    if isinstance(feature, (datasets.Array2D, datasets.Array3D)):
        return True
    inner = feature.feature if isinstance(feature, (datasets.List, datasets.LargeList)) else None
    return isinstance(inner, datasets.Value) and (inner.dtype.startswith(("float", "int", "uint")))


# --------------------------------------------------------------------------- small helpers


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _first_rows(rows) -> str:
    rows = [int(r) for r in rows]
    return ", ".join(map(str, rows[:_MAX_LISTED])) + (f", ... ({len(rows)} in all)" if len(rows) > _MAX_LISTED else "")

