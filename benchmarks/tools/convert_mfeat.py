"""One-off converter: UCI mfeat CSVs -> ``hf_mmbalance/data/_mfeat/mfeat.parquet``.

Usage (from the repository root)::

    python benchmarks/tools/convert_mfeat.py [--src ../shared/data/uci_mfeat] [--out hf_mmbalance/data/_mfeat/mfeat.parquet]

Each value's decimal text ``m * 10**e`` is stored as an exact integer mantissa plus an int8 exponent
(integer-valued views store the integers directly), which is lossless and smaller than float32.
After writing, the file is decoded with the package's own decoder and compared bit-for-bit against
``float32(float(text))`` for every value; the script fails if anything differs.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
MFEAT_PY = REPO / "hf_mmbalance" / "data" / "mfeat.py"


def _load_mfeat_module():
    # Load by file path so that converting does not import the whole hf_mmbalance package (torch etc.).
    spec = importlib.util.spec_from_file_location("_hf_mmbalance_mfeat_standalone", MFEAT_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read_csv(path: Path, size: int) -> tuple[list[list[str]], np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    if len(header) != size + 1:
        raise ValueError(f"{path}: expected {size} feature columns + label, header has {len(header)} fields")
    texts = [r[:-1] for r in body]
    labels = np.array([int(r[-1]) for r in body], dtype=np.int64)
    return texts, labels


def _smallest_int(values: np.ndarray) -> np.ndarray:
    for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64):
        info = np.iinfo(dtype)
        if values.min() >= info.min and values.max() <= info.max:
            return values.astype(dtype)
    raise AssertionError("unreachable")


def _encode_view(texts: list[list[str]]) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (mantissa, exponent) with ``Decimal(text) == mantissa * 10**exponent``; exponent None if all ints."""
    mant = np.empty((len(texts), len(texts[0])), dtype=np.int64)
    exp = np.empty_like(mant)
    for i, row in enumerate(texts):
        for j, text in enumerate(row):
            dec = Decimal(text)
            if dec == 0:
                mant[i, j], exp[i, j] = 0, 0
                continue
            sign, digits, e = dec.normalize().as_tuple()
            m = int("".join(map(str, digits)))
            mant[i, j], exp[i, j] = (-m if sign else m), e
    if exp.min() >= 0 and exp.max() <= 9:  # an integer-valued view (small exponents: no int64 overflow)
        return mant * 10**exp, None
    return mant, exp


def _fixed_list(values: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data" / "uci_mfeat")
    parser.add_argument("--out", type=Path, default=REPO / "hf_mmbalance" / "data" / "_mfeat" / "mfeat.parquet")
    args = parser.parse_args()

    mfeat = _load_mfeat_module()
    columns: dict[str, pa.Array] = {}
    expected: dict[str, np.ndarray] = {}
    labels = None
    for view, size in mfeat.MFEAT_VIEWS.items():
        texts, view_labels = _read_csv(args.src / f"mfeat-{view}.csv", size)
        if labels is None:
            labels = view_labels
        elif not np.array_equal(labels, view_labels):
            raise ValueError(f"mfeat-{view}.csv: label column disagrees with the other views (files must align by row)")
        expected[view] = np.array([[np.float32(float(t)) for t in row] for row in texts], dtype=np.float32)
        mant, exp = _encode_view(texts)
        columns[view] = _fixed_list(_smallest_int(mant))
        if exp is not None:
            columns[view + mfeat.EXP_SUFFIX] = _fixed_list(exp.astype(np.int8))
    if labels.shape[0] != mfeat.MFEAT_NUM_ROWS or set(np.unique(labels)) != set(range(mfeat.MFEAT_NUM_CLASSES)):
        raise ValueError(f"unexpected labels: {labels.shape[0]} rows, classes {np.unique(labels)}")
    columns["labels"] = pa.array(labels.astype(np.int8))

    table = pa.table(columns).replace_schema_metadata(
        {
            "source": "UCI Machine Learning Repository, 'Multiple Features' (Duin, 1998), CC BY 4.0",
            "format": "hf_mmbalance mfeat v1: integer mantissa <view> and int8 exponent <view>__exp",
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        table,
        args.out,
        compression="zstd",
        compression_level=22,
        use_dictionary=False,
        use_byte_stream_split=True,  # byte-planes of the integers compress far better under zstd
    )

    views, decoded_labels = mfeat.decode_table(pq.read_table(args.out))
    if not np.array_equal(decoded_labels, labels):
        raise AssertionError("labels did not round-trip")
    for view, want in expected.items():
        got = views[view]
        if got.dtype != np.float32 or not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
            bad = np.argwhere(got != want)
            raise AssertionError(f"view {view!r} did not round-trip exactly; first mismatch at (row, col) {bad[:1].tolist()}")
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes); all {sum(v.size for v in expected.values()):,} values round-trip exactly")


if __name__ == "__main__":
    main()
