"""Tests for the ULGM regression generator with known true per-modality labels."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

import hf_mmbalance
from hf_mmbalance.data import make_synthetic_regression, validate_dataset

H = 3.0
MODS = {"text": 32, "audio": 16, "video": 16}


def _np(ds: datasets.Dataset) -> dict[str, np.ndarray]:
    return ds.with_format("numpy")[:]


def _all_rows(dd: datasets.DatasetDict) -> dict[str, np.ndarray]:
    parts = [_np(dd[s]) for s in ("train", "validation", "test")]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.fixture(scope="module")
def default() -> datasets.DatasetDict:
    return make_synthetic_regression()


def test_exported():
    assert hf_mmbalance.make_synthetic_regression is make_synthetic_regression
    assert "make_synthetic_regression" in hf_mmbalance.__all__
    assert "make_synthetic_regression" in hf_mmbalance.data.__all__


def test_columns_dtypes_and_declared_lengths(default):
    assert list(default) == ["train", "validation", "test"]
    assert [len(default[s]) for s in default] == [700, 100, 200]
    expected_cols = ["text", "audio", "video", "labels", "true_text", "true_audio", "true_video", "sample_idx"]
    for split in default.values():
        assert split.column_names == expected_cols
        feats = split.features
        for name, dim in MODS.items():
            assert feats[name] == datasets.List(datasets.Value("float32"), length=dim)
            assert feats[f"true_{name}"] == datasets.Value("float32")
        assert feats["labels"] == datasets.Value("float32")
        assert feats["sample_idx"] == datasets.Value("int64")
    rows = _np(default["train"])
    for name, dim in MODS.items():
        assert rows[name].shape == (700, dim) and rows[name].dtype == np.float32
        assert np.isfinite(rows[name]).all()
    assert rows["labels"].dtype == np.float32 and rows["true_text"].dtype == np.float32
    assert rows["sample_idx"].dtype == np.int64
    everything = _all_rows(default)
    assert sorted(everything["sample_idx"].tolist()) == list(range(1000))
    # the package's own checker accepts it as a regression dataset
    validate_dataset(default, MODS, task="regression")


def test_labels_in_range_and_equal_clipped_mean(default):
    rows = _all_rows(default)
    true = np.stack([rows[f"true_{m}"] for m in MODS], axis=1).astype(np.float64)
    for values in (rows["labels"], *true.T):
        assert values.min() >= -H and values.max() <= H
    # the whole range is used, including the extremes (needed by SUGRM's D_max)
    assert rows["labels"].min() < -2.5 and rows["labels"].max() > 2.5
    assert np.any(np.abs(true) == H)
    np.testing.assert_allclose(rows["labels"], np.clip(true.mean(axis=1), -H, H), atol=1e-6)
    # no shuffling artefact: splits are not sorted by label
    assert not np.all(np.diff(_np(default["train"])["labels"]) >= 0)


def test_median_aggregate_and_label_range():
    dd = make_synthetic_regression(num_samples=300, label_range=1.0, aggregate="median", seed=2)
    rows = _all_rows(dd)
    true = np.stack([rows[f"true_{m}"] for m in MODS], axis=1)
    assert np.abs(true).max() <= 1.0 and np.abs(rows["labels"]).max() <= 1.0
    np.testing.assert_allclose(rows["labels"], np.median(true, axis=1), atol=1e-6)


def test_deterministic_and_seed_dependent():
    kw = dict(num_samples=200, modalities={"a": 4, "b": 3}, noise={"a": 0.5, "b": 1.0})
    a, b, c = (make_synthetic_regression(seed=s, **kw) for s in (5, 5, 6))
    for split in a:
        ra, rb, rc = _np(a[split]), _np(b[split]), _np(c[split])
        for col in ra:
            np.testing.assert_array_equal(ra[col], rb[col])
    assert not np.array_equal(_np(a["train"])["sample_idx"], _np(c["train"])["sample_idx"])
    assert not np.allclose(_all_rows(a)["true_a"][np.argsort(_all_rows(a)["sample_idx"])],
                           _all_rows(c)["true_a"][np.argsort(_all_rows(c)["sample_idx"])])


def test_adding_a_modality_keeps_the_others():
    one = _all_rows(make_synthetic_regression(num_samples=100, modalities={"a": 4}, noise={"a": 1.0}, seed=1))
    two = _all_rows(make_synthetic_regression(num_samples=100, modalities={"a": 4, "b": 2}, noise={"a": 1.0, "b": 1.0}, seed=1))
    o1, o2 = np.argsort(one["sample_idx"]), np.argsort(two["sample_idx"])
    np.testing.assert_array_equal(one["a"][o1], two["a"][o2])
    np.testing.assert_array_equal(one["true_a"][o1], two["true_a"][o2])


def _linear_r2(train: dict, test: dict, name: str) -> float:
    x_tr = np.c_[train[name].astype(np.float64), np.ones(len(train[name]))]
    x_te = np.c_[test[name].astype(np.float64), np.ones(len(test[name]))]
    coef, *_ = np.linalg.lstsq(x_tr, train[f"true_{name}"].astype(np.float64), rcond=None)
    y = test[f"true_{name}"].astype(np.float64)
    return 1.0 - float(((x_te @ coef - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


@pytest.mark.parametrize("nonlinear", [True, False])
def test_lower_noise_is_more_predictive_of_its_own_label(nonlinear):
    dd = make_synthetic_regression(num_samples=3000, seed=0, nonlinear=nonlinear)
    train, test = _np(dd["train"]), _np(dd["test"])
    r2 = {m: _linear_r2(train, test, m) for m in MODS}
    assert r2["text"] > r2["audio"] + 0.1 > r2["video"] + 0.2, r2
    assert r2["text"] > 0.9 and r2["video"] > 0.1, r2


def test_noise_free_linear_features_recover_the_label_exactly():
    dd = make_synthetic_regression(num_samples=200, modalities={"a": 5}, noise={"a": 0.0}, nonlinear=False)
    rows = _np(dd["train"])
    assert _linear_r2(rows, _np(dd["test"]), "a") > 0.999999


def test_true_unimodal_labels_differ_from_multimodal(default):
    rows = _all_rows(default)
    for m in MODS:
        gap = np.abs(rows[f"true_{m}"] - rows["labels"]).mean()
        assert 0.1 < gap < 1.0, (m, gap)
        assert np.corrcoef(rows[f"true_{m}"], rows["labels"])[0, 1] > 0.9
    # without disagreement every modality's true label is the multimodal label
    same = _all_rows(make_synthetic_regression(num_samples=100, disagreement=0.0))
    for m in MODS:
        np.testing.assert_allclose(same[f"true_{m}"], same["labels"], atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(modalities={}), "modalities"),
        (dict(modalities={"a": 0}, noise={"a": 1.0}), "modalities"),
        (dict(modalities={"a": (4, 2)}, noise={"a": 1.0}), "modalities"),
        (dict(modalities={"labels": 3}, noise={"labels": 1.0}), "collides"),
        (dict(modalities={"a": 2, "true_a": 2}, noise={"a": 1.0, "true_a": 1.0}), "collides"),
        (dict(num_samples=0), "num_samples"),
        (dict(num_samples=10.5), "num_samples"),
        (dict(noise={"text": -0.1, "audio": 1.0, "video": 1.0}), "noise['text']"),
        (dict(noise={"text": 0.3, "audio": 1.0}), "noise keys"),
        (dict(noise={"text": 0.3, "audio": 1.0, "video": 2.0, "x": 1.0}), "noise keys"),
        (dict(modalities={"a": 3}, noise={"b": 1.0}), "noise keys"),
        (dict(label_range=0.0), "label_range"),
        (dict(label_range=-1.0), "label_range"),
        (dict(split_sizes=(0.5, 0.2, 0.2)), "split_sizes"),
        (dict(split_sizes=(0.5, 0.5)), "split_sizes"),
        (dict(aggregate="max"), "aggregate"),
        (dict(disagreement=-0.5), "disagreement"),
    ],
)
def test_argument_errors(kwargs, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        make_synthetic_regression(**kwargs)


def test_custom_modalities_default_noise_is_one():
    dd = make_synthetic_regression(num_samples=50, modalities={"x": 3, "y": 2}, split_sizes=(0.6, 0.2, 0.2))
    assert [len(dd[s]) for s in dd] == [30, 10, 10]
    assert dd["train"].column_names == ["x", "y", "labels", "true_x", "true_y", "sample_idx"]
