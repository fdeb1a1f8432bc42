"""Tests for the data layer: bundled mfeat, synthetic data, standardize and dataset validation."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import datasets
import numpy as np
import pytest

from hf_mmbalance.data import (
    MFEAT_VIEWS,
    DatasetValidationError,
    load_mfeat,
    make_synthetic_classification,
    standardize,
    validate_dataset,
)

MFEAT_CSV_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "uci_mfeat"


def _np(ds: datasets.Dataset, columns=None) -> dict[str, np.ndarray]:
    if columns is not None:
        ds = ds.select_columns(list(columns))
    return ds.with_format("numpy")[:]


@pytest.fixture(scope="module")
def mfeat() -> datasets.DatasetDict:
    return load_mfeat()


# --------------------------------------------------------------------------- mfeat


def test_mfeat_views_constant():
    assert list(MFEAT_VIEWS.items()) == [("fou", 76), ("fac", 216), ("kar", 64), ("pix", 240), ("zer", 47), ("mor", 6)]


def test_mfeat_split_sizes_and_stratification(mfeat):
    assert list(mfeat) == ["train", "validation", "test"]
    expected = {"train": 140, "validation": 20, "test": 40}
    for split, per_class in expected.items():
        labels = _np(mfeat[split], ["labels"])["labels"]
        assert len(labels) == per_class * 10
        assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10


def test_mfeat_columns_and_features(mfeat):
    ds = mfeat["train"]
    assert ds.column_names == [*MFEAT_VIEWS, "labels", "sample_idx"]
    for view, size in MFEAT_VIEWS.items():
        assert ds.features[view] == datasets.List(datasets.Value("float32"), length=size)
    assert isinstance(ds.features["labels"], datasets.ClassLabel)
    assert ds.features["labels"].names == [str(i) for i in range(10)]
    assert ds.features["sample_idx"] == datasets.Value("int64")
    batch = _np(ds)
    for view, size in MFEAT_VIEWS.items():
        assert batch[view].shape == (1400, size) and batch[view].dtype == np.float32
    assert batch["labels"].dtype == np.int64 and batch["sample_idx"].dtype == np.int64


def test_mfeat_sample_idx_unique_and_complete(mfeat):
    idx = np.concatenate([_np(mfeat[s], ["sample_idx"])["sample_idx"] for s in mfeat])
    assert np.array_equal(np.sort(idx), np.arange(2000))
    for split in mfeat:
        b = _np(mfeat[split], ["sample_idx", "labels"])
        assert np.array_equal(b["labels"], b["sample_idx"] // 200)  # the CSVs hold 200 rows per digit in turn


@pytest.mark.skipif(not MFEAT_CSV_DIR.is_dir(), reason=f"raw mfeat CSVs not available at {MFEAT_CSV_DIR}")
def test_mfeat_values_equal_csv(mfeat):
    rows = [0, 1234, 1999]
    by_idx = {}
    for split in mfeat:
        b = _np(mfeat[split])
        for pos, i in enumerate(b["sample_idx"]):
            if i in rows:
                by_idx[int(i)] = {k: v[pos] for k, v in b.items()}
    assert sorted(by_idx) == rows
    for view, size in MFEAT_VIEWS.items():
        with (MFEAT_CSV_DIR / f"mfeat-{view}.csv").open(newline="") as f:
            reader = csv.reader(f)
            next(reader)
            csv_rows = {i: r for i, r in enumerate(reader) if i in rows}
        for i in rows:
            want = np.array([np.float32(float(x)) for x in csv_rows[i][:-1]], dtype=np.float32)
            assert want.shape == (size,)
            np.testing.assert_array_equal(by_idx[i][view], want, err_msg=f"view {view} row {i}")
            assert by_idx[i]["labels"] == int(csv_rows[i][-1])


def test_mfeat_deterministic_and_seeded(mfeat):
    again = load_mfeat()
    for split in mfeat:
        a, b = _np(mfeat[split]), _np(again[split])
        for col in a:
            np.testing.assert_array_equal(a[col], b[col])
    other = load_mfeat(seed=1)
    assert not np.array_equal(_np(other["test"], ["sample_idx"])["sample_idx"], _np(mfeat["test"], ["sample_idx"])["sample_idx"])


def test_mfeat_view_subset_keeps_given_order():
    ds = load_mfeat(views=["fou", "zer"])
    assert ds["train"].column_names == ["fou", "zer", "labels", "sample_idx"]
    assert load_mfeat(views=["zer", "fou"])["test"].column_names == ["zer", "fou", "labels", "sample_idx"]


def test_mfeat_unknown_view_raises():
    with pytest.raises(ValueError, match=r"'foo'.*'fou', 'fac', 'kar', 'pix', 'zer', 'mor'"):
        load_mfeat(views=["fou", "foo"])


def test_mfeat_custom_and_invalid_split_sizes():
    ds = load_mfeat(views=["mor"], split_sizes=(0.5, 0.25, 0.25))
    assert [ds[s].num_rows for s in ds] == [1000, 500, 500]
    with pytest.raises(ValueError, match="split_sizes"):
        load_mfeat(split_sizes=(0.5, 0.5, 0.5))


def test_standardize_uses_train_statistics(mfeat):
    out = standardize(mfeat, ["fou", "mor"])
    train_raw = _np(mfeat["train"], ["fou", "mor"])
    train = _np(out["train"])
    for col in ("fou", "mor"):
        assert train[col].dtype == np.float32
        np.testing.assert_allclose(train[col].mean(axis=0), 0.0, atol=1e-4)
        std = train[col].std(axis=0)
        nonconstant = train_raw[col].std(axis=0) > 1e-6
        np.testing.assert_allclose(std[nonconstant], 1.0, atol=1e-3)
        np.testing.assert_allclose(std[~nonconstant], 0.0, atol=1e-6)
    # validation/test are transformed with the *train* statistics, not their own
    raw_test = _np(mfeat["test"], ["fou"])["fou"].astype(np.float64)
    mean, sd = train_raw["fou"].mean(axis=0), np.maximum(train_raw["fou"].astype(np.float64).std(axis=0), 1e-6)
    np.testing.assert_allclose(_np(out["test"], ["fou"])["fou"], (raw_test - mean) / sd, rtol=1e-4, atol=1e-4)
    # other columns, features and the input are unchanged
    np.testing.assert_array_equal(train["pix"], _np(mfeat["train"], ["pix"])["pix"])
    assert out["train"].features == mfeat["train"].features
    assert out["train"].column_names == mfeat["train"].column_names
    np.testing.assert_array_equal(_np(mfeat["train"], ["mor"])["mor"], train_raw["mor"])


def test_standardize_sequence_column_respects_mask():
    ds = make_synthetic_classification(num_samples=300, modalities={"s": (5, 3)}, seed=3)
    out = standardize(ds, ["s"])
    b = _np(out["train"], ["s", "s_attention_mask"])
    valid = b["s"][b["s_attention_mask"] > 0]
    np.testing.assert_allclose(valid.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(valid.std(axis=0), 1.0, atol=1e-3)
    assert np.all(b["s"][b["s_attention_mask"] == 0] == 0)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_default_shapes():
    ds = make_synthetic_classification()
    assert [ds[s].num_rows for s in ds] == [700, 100, 200]
    assert ds["train"].column_names == ["a", "b", "labels", "sample_idx"]
    assert ds["train"].features["a"] == datasets.List(datasets.Value("float32"), length=16)
    assert ds["train"].features["labels"].num_classes == 4
    b = _np(ds["train"])
    assert b["a"].shape == (700, 16) and b["a"].dtype == np.float32
    assert np.bincount(b["labels"]).tolist() == [175] * 4
    idx = np.concatenate([_np(ds[s], ["sample_idx"])["sample_idx"] for s in ds])
    assert np.array_equal(np.sort(idx), np.arange(1000))


def test_synthetic_sequence_modality():
    ds = make_synthetic_classification(num_samples=200, num_classes=3, modalities={"v": 8, "s": (6, 4)}, seed=1)
    train = ds["train"]
    assert train.column_names == ["v", "s", "s_attention_mask", "labels", "sample_idx"]
    assert train.features["s"] == datasets.Array2D(shape=(6, 4), dtype="float32")
    assert train.features["s_attention_mask"] == datasets.List(datasets.Value("int64"), length=6)
    b = _np(train)
    assert b["s"].shape == (140, 6, 4) and b["s"].dtype == np.float32
    mask = b["s_attention_mask"]
    assert mask.shape == (140, 6) and mask.dtype == np.int64
    lengths = mask.sum(axis=1)
    assert lengths.min() >= 1 and lengths.max() <= 6
    assert np.array_equal(mask, (np.arange(6)[None] < lengths[:, None]).astype(np.int64))  # prefix of ones
    assert np.all(b["s"][mask == 0] == 0) and np.all(b["s"][mask == 1] != 0)


def test_synthetic_deterministic():
    kwargs = dict(num_samples=120, modalities={"x": 5, "y": (3, 2)}, signal_strength={"x": 2.0})
    a, b = make_synthetic_classification(seed=7, **kwargs), make_synthetic_classification(seed=7, **kwargs)
    for split in a:
        for col, values in _np(a[split]).items():
            np.testing.assert_array_equal(values, _np(b[split])[col])
    c = make_synthetic_classification(seed=8, **kwargs)
    assert not np.array_equal(_np(a["train"], ["x"])["x"], _np(c["train"], ["x"])["x"])


def _nearest_class_mean_accuracy(ds: datasets.DatasetDict, col: str) -> float:
    train, test = _np(ds["train"], [col, "labels"]), _np(ds["test"], [col, "labels"])
    means = np.stack([train[col][train["labels"] == c].mean(axis=0) for c in np.unique(train["labels"])])
    dists = ((test[col][:, None, :] - means[None]) ** 2).sum(axis=-1)
    return float((dists.argmin(axis=1) == test["labels"]).mean())


def test_synthetic_stronger_modality_is_more_predictive():
    ds = make_synthetic_classification()  # a: strength 1.0, b: strength 0.3
    acc_a, acc_b = _nearest_class_mean_accuracy(ds, "a"), _nearest_class_mean_accuracy(ds, "b")
    assert acc_a > 0.9
    assert 0.3 < acc_b < acc_a - 0.2


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'c'"):
        make_synthetic_classification(modalities={"a": 4}, signal_strength={"c": 1.0})
    with pytest.raises(ValueError, match="'a'"):
        make_synthetic_classification(modalities={"a": (4, 0)})


# --------------------------------------------------------------------------- validation


def _ds(**columns) -> datasets.Dataset:
    return datasets.Dataset.from_dict(columns)


def _good(n: int = 10) -> dict:
    rng = np.random.default_rng(0)
    return {"a": rng.normal(size=(n, 4)).astype(np.float32), "labels": np.arange(n) % 3}


def test_validate_accepts_valid_datasets(mfeat):
    validate_dataset(mfeat, MFEAT_VIEWS, num_labels=10)
    validate_dataset(mfeat["train"], {"fou": 76}, num_labels=10)
    syn = make_synthetic_classification(num_samples=100, modalities={"v": 3, "s": (4, 2)})
    validate_dataset(syn, {"v": 3, "s": (4, 2)}, num_labels=4)
    validate_dataset(syn.shuffle(seed=0), {"v": 3, "s": (None, 2)})
    validate_dataset(_ds(a=[[[1.0, 2.0]], [[3.0, 4.0], [5.0, 6.0]]], labels=[0.5, 1.5]), {"a": (None, 2)}, task="regression")


def test_validate_missing_modality_column():
    with pytest.raises(DatasetValidationError, match=r"missing modality column 'b'; columns present: \['a', 'labels'\]"):
        validate_dataset(_ds(**_good()), {"a": 4, "b": 4})


def test_validate_missing_label_column():
    with pytest.raises(DatasetValidationError, match="missing label column 'target'"):
        validate_dataset(_ds(**_good()), {"a": 4}, label_column="target")


def test_validate_wrong_feature_length():
    with pytest.raises(DatasetValidationError, match=r"'a'.*expected 5.*found 4 at row 0"):
        validate_dataset(_ds(**_good()), {"a": 5})
    rows = [[0.0, 1.0, 2.0]] * 5
    rows[3] = [0.0, 1.0]
    with pytest.raises(DatasetValidationError, match=r"'a'.*expected 3.*found 2 at row 3"):
        validate_dataset(_ds(a=rows, labels=[0] * 5), {"a": 3})


def test_validate_wrong_sequence_shape():
    syn = make_synthetic_classification(num_samples=50, modalities={"s": (4, 2)})["train"]
    with pytest.raises(DatasetValidationError, match=r"'s'.*feature dim: expected 3.*found 2"):
        validate_dataset(syn, {"s": (None, 3)})
    with pytest.raises(DatasetValidationError, match=r"'s'.*sequence length: expected 5.*found 4"):
        validate_dataset(syn, {"s": (5, 2)})
    seqs = [[[0.0, 1.0]] * 3, [[0.0, 1.0], [2.0]], [[0.0, 1.0]]]
    with pytest.raises(DatasetValidationError, match=r"'s'.*feature dim: expected 2.*found 1 at row 1"):
        validate_dataset(_ds(s=seqs, labels=[0, 1, 0]), {"s": (None, 2)})
    with pytest.raises(DatasetValidationError, match=r"'a'.*expected per-row shape \(any, 4\)"):
        validate_dataset(_ds(**_good()), {"a": (None, 4)})


def test_validate_non_float_modality():
    with pytest.raises(DatasetValidationError, match=r"'a'.*expected float features, found dtype string"):
        validate_dataset(_ds(a=["x", "y"], labels=[0, 1]), {"a": 4})
    with pytest.raises(DatasetValidationError, match=r"'a'.*expected float features, found dtype int64"):
        validate_dataset(_ds(a=[[1, 2], [3, 4]], labels=[0, 1]), {"a": 2})


def test_validate_nan_and_inf():
    cols = _good()
    cols["a"][7, 2] = np.nan
    with pytest.raises(DatasetValidationError, match=r"'a'.*NaN or inf.*first at row 7"):
        validate_dataset(_ds(**cols), {"a": 4})
    syn = make_synthetic_classification(num_samples=30, modalities={"s": (3, 2)})["train"]
    values = _np(syn, ["s"])["s"].copy()
    values[5, 1, 0] = np.inf
    features = datasets.Features({"s": datasets.Array2D((3, 2), "float32"), "labels": datasets.Value("int64")})
    bad = datasets.Dataset.from_dict({"s": values, "labels": _np(syn, ["labels"])["labels"]}, features=features)
    with pytest.raises(DatasetValidationError, match=r"'s'.*NaN or inf.*first at row 5"):
        validate_dataset(bad, {"s": (3, 2)})


def test_validate_classification_labels_not_integers():
    cols = _good()
    cols["labels"] = cols["labels"].astype(np.float32)
    with pytest.raises(DatasetValidationError, match=r"label column 'labels'.*integer.*found dtype float"):
        validate_dataset(_ds(**cols), {"a": 4}, num_labels=3)


def test_validate_classification_labels_out_of_range():
    cols = _good()
    cols["labels"][4] = 3
    with pytest.raises(DatasetValidationError, match=r"label column 'labels'.*\[0, 3\).*min 0, max 3.*row 4"):
        validate_dataset(_ds(**cols), {"a": 4}, num_labels=3)
    cols["labels"][4] = -1
    with pytest.raises(DatasetValidationError, match=r"label column 'labels'.*min -1, max 2"):
        validate_dataset(_ds(**cols), {"a": 4})


def test_validate_regression_labels():
    cols = _good()
    validate_dataset(_ds(a=cols["a"], score=np.linspace(-1, 1, 10)), {"a": 4}, task="regression", label_column="score")
    with pytest.raises(DatasetValidationError, match=r"label column 'score'.*numeric.*string"):
        validate_dataset(_ds(a=cols["a"], score=["x"] * 10), {"a": 4}, task="regression", label_column="score")
    score = np.zeros(10)
    score[6] = np.nan
    with pytest.raises(DatasetValidationError, match=r"label column 'score'.*NaN or inf.*row 6"):
        validate_dataset(_ds(a=cols["a"], score=score), {"a": 4}, task="regression", label_column="score")


def test_validate_dataset_dict_names_the_split():
    good, bad = _good(), _good()
    bad["a"][2, 0] = np.inf
    dd = datasets.DatasetDict({"train": _ds(**good), "validation": _ds(**bad)})
    with pytest.raises(DatasetValidationError, match=r"split 'validation': modality column 'a'.*row 2"):
        validate_dataset(dd, {"a": 4}, num_labels=3)


def test_validate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'a'"):
        validate_dataset(_ds(**_good()), {"a": "four"})
    with pytest.raises(ValueError, match="task"):
        validate_dataset(_ds(**_good()), {"a": 4}, task="ranking")


def test_validate_is_fast_on_20k_rows():
    ds = make_synthetic_classification(num_samples=20_000, modalities={"v": 64, "w": 32, "s": (10, 16)})
    full = datasets.concatenate_datasets(list(ds.values())).shuffle(seed=0)
    start = time.perf_counter()
    validate_dataset(full, {"v": 64, "w": 32, "s": (10, 16)}, num_labels=4)
    assert time.perf_counter() - start < 1.0
