"""Tests for multimodal datasets read from local files (hf_mmbalance.data.files)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from hf_mmbalance.data.files import (
    FRAMES_SEPARATOR,
    DatasetFilesError,
    load_multimodal_dataset,
    load_multimodal_files,
)
from hf_mmbalance.data.validation import DatasetValidationError

FSDD_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings"
ALL_KINDS = {"image": "image", "audio": "audio", "frames": "frames", "caption": "text"}


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path, monkeypatch):
    """Parsed manifests go to a per-test cache, not the user's ~/.cache (read at call time by datasets)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


# --------------------------------------------------------------------------- building tiny files


def _png(path: Path, size: tuple[int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color=(size[0] * 10 % 256, 0, 0)).save(path)
    return str(path)


def _wav(path: Path, num_samples: int, sample_rate: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.linspace(-0.5, 0.5, num_samples, dtype=np.float32), sample_rate)
    return str(path)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _media(root: Path, n: int) -> list[dict]:
    """Per sample i: image of size (4 + i, 3 + i % 2); audio at 8 kHz (even i) or 16 kHz (odd i) with
    100 + 10 i samples; two frames of size (2, 2 + i % 3). Returned paths are relative to ``root``."""
    out = []
    for i in range(n):
        _png(root / "img" / f"{i}.png", (4 + i, 3 + i % 2))
        _wav(root / "wav" / f"{i}.wav", 100 + 10 * i, 16000 if i % 2 else 8000)
        for j in range(2):
            _png(root / "vid" / str(i) / f"{j}.png", (2, 2 + i % 3))
        out.append({"image": f"img/{i}.png", "audio": f"wav/{i}.wav", "frames": [f"vid/{i}/0.png", f"vid/{i}/1.png"]})
    return out


def _csv_rows(media: list[dict], labels, **extra_columns) -> list[dict]:
    rows = []
    for i, (m, label) in enumerate(zip(media, labels)):
        row = {**m, "frames": FRAMES_SEPARATOR.join(m["frames"]), "caption": f"sample {i}", "labels": label}
        row.update({k: v[i] for k, v in extra_columns.items()})
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- reading manifests


def test_csv_manifest_all_kinds_from_another_working_directory(tmp_path, monkeypatch):
    data = tmp_path / "data"
    media = _media(data, 6)
    splits = ["train", "test", "train", "validation", "train", "test"]
    labels = ["dog", "cat", "bird", "dog", "cat", "dog"]
    manifest = _write_csv(data / "manifest.csv", _csv_rows(media, labels, split=splits))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    dd = load_multimodal_files(os.path.relpath(manifest), ALL_KINDS, split_column="split")

    assert list(dd) == ["train", "validation", "test"]
    features = dd["train"].features
    assert features["image"] == datasets.Image()
    assert features["audio"] == datasets.Audio(decode=False)
    assert features["frames"] == datasets.List(datasets.Image())
    assert features["caption"] == datasets.Value("string")
    assert features["labels"] == datasets.ClassLabel(names=["bird", "cat", "dog"])
    assert features["sample_idx"] == datasets.Value("int64")
    assert "split" not in features  # the DatasetDict keys carry it
    # rows keep manifest order inside each split, sample_idx = manifest row
    assert dd["train"]["sample_idx"][:] == [0, 2, 4]
    assert dd["validation"]["sample_idx"][:] == [3]
    assert dd["test"]["sample_idx"][:] == [1, 5]
    assert dd["train"]["labels"][:] == [2, 0, 1]  # dog, bird, cat

    monkeypatch.chdir(tmp_path)  # the stored paths are absolute: decoding works from any directory
    for split, ds in dd.items():
        for row in ds:
            i = row["sample_idx"]
            assert isinstance(row["image"], Image.Image) and row["image"].size == (4 + i, 3 + i % 2)
            audio = row["audio"]
            assert set(audio) == {"path", "bytes"} and audio["bytes"] is None
            assert os.path.isabs(audio["path"]) and audio["path"] == str(data / "wav" / f"{i}.wav")
            samples, rate = sf.read(audio["path"])
            assert samples.shape == (100 + 10 * i,) and rate == (16000 if i % 2 else 8000)
            assert [f.size for f in row["frames"]] == [(2, 2 + i % 3)] * 2
            assert row["caption"] == f"sample {i}"


def test_jsonl_manifest_frames_list_features_and_float_labels(tmp_path):
    media = _media(tmp_path, 20)
    rows = [
        {"image": m["image"], "frames": m["frames"], "vec": [float(i), 0.5, -1.0], "score": 0.25 * i - 1.0}
        for i, m in enumerate(media)
    ]
    manifest = _write_jsonl(tmp_path / "m.jsonl", rows)

    dd = load_multimodal_files(manifest, {"image": "image", "frames": "frames", "vec": "features"}, label_column="score")

    assert dd["train"].features["score"] == datasets.Value("float32")
    assert dd["train"].features["vec"] == datasets.List(datasets.Value("float32"), length=3)
    assert dd["train"].features["frames"] == datasets.List(datasets.Image())
    # default fractions 0.1 / 0.2 of 20 rows, one stratum for float labels
    assert {k: v.num_rows for k, v in dd.items()} == {"train": 14, "validation": 2, "test": 4}
    all_idx = sorted(i for ds in dd.values() for i in ds["sample_idx"])
    assert all_idx == list(range(20))
    row = dd["test"][0]
    i = row["sample_idx"]
    assert row["score"] == pytest.approx(0.25 * i - 1.0)
    assert row["vec"] == [float(i), 0.5, -1.0]
    assert [f.size for f in row["frames"]] == [(2, 2 + i % 3)] * 2


def test_fraction_split_is_seeded_and_stratified(tmp_path):
    media = _media(tmp_path, 30)
    labels = ["a", "b", "c"] * 10
    manifest = _write_csv(tmp_path / "m.csv", _csv_rows(media, labels))

    def split_ids(seed):
        dd = load_multimodal_files(manifest, {"image": "image"}, seed=seed, verify_files=False)
        return {k: list(v["sample_idx"]) for k, v in dd.items()}, dd

    first, dd = split_ids(0)
    again, _ = split_ids(0)
    other, _ = split_ids(1)
    assert first == again
    assert first != other
    for split, want in (("train", 7), ("validation", 1), ("test", 2)):  # per class: 10 * (0.7, 0.1, 0.2)
        counts = np.bincount(np.asarray(dd[split]["labels"]), minlength=3)
        assert counts.tolist() == [want] * 3, split
        assert first[split] == sorted(first[split])  # manifest order inside a split
    assert sorted(sum(first.values(), [])) == list(range(30))

    custom = load_multimodal_files(manifest, {"image": "image"}, validation_fraction=0.0, test_fraction=0.5)
    assert list(custom) == ["train", "test"]
    assert {k: v.num_rows for k, v in custom.items()} == {"train": 15, "test": 15}


def test_data_files_mapping_with_per_manifest_folders_and_class_names(tmp_path):
    for name, n in (("a", 2), ("b", 3), ("c", 2)):
        media = _media(tmp_path / name, n)
        _write_csv(tmp_path / name / "m.csv", _csv_rows(media, ["no", "yes"] * 2)[:n])

    dd = load_multimodal_files(
        {"train": [tmp_path / "a" / "m.csv", tmp_path / "b" / "m.csv"], "test": str(tmp_path / "c" / "m.csv")},
        {"image": "image", "audio": "audio"},
        class_names=["yes", "no"],
    )

    assert list(dd) == ["train", "test"]
    assert dd["train"].features["labels"].names == ["yes", "no"]
    assert dd["train"]["labels"][:] == [1, 0, 1, 0, 1]
    assert dd["train"]["sample_idx"][:] == [0, 1, 2, 3, 4] and dd["test"]["sample_idx"][:] == [5, 6]
    # relative paths resolve against each manifest's own folder
    paths = [a["path"] for a in dd["train"]["audio"]]
    assert paths[:2] == [str(tmp_path / "a" / "wav" / "0.wav"), str(tmp_path / "a" / "wav" / "1.wav")]
    assert paths[2] == str(tmp_path / "b" / "wav" / "0.wav")


def test_base_dir_integer_labels_and_explicit_cache_dir(tmp_path):
    media = _media(tmp_path / "files", 10)
    manifest = _write_csv(tmp_path / "manifests" / "m.csv", _csv_rows(media, [0, 1] * 5))

    cache = tmp_path / "my_cache"
    dd = load_multimodal_files(
        manifest, {"image": "image", "caption": "text"}, base_dir=tmp_path / "files",
        validation_fraction=0.2, test_fraction=0.2, cache_dir=cache,
    )

    assert dd["train"].features["labels"] == datasets.Value("int64")
    assert {k: v.num_rows for k, v in dd.items()} == {"train": 6, "validation": 2, "test": 2}
    assert np.bincount(np.asarray(dd["test"]["labels"])).tolist() == [1, 1]
    assert dd["train"][0]["image"].size[1] in (3, 4)
    assert any(cache.iterdir())


def test_save_to_disk_round_trip_and_dispatch(tmp_path):
    media = _media(tmp_path, 6)
    manifest = _write_csv(
        tmp_path / "m.csv", _csv_rows(media, ["x", "y"] * 3, split=["train", "train", "train", "test", "test", "test"])
    )
    modalities = {"image": "image", "audio": "audio", "frames": "frames"}
    from_manifest = load_multimodal_dataset(manifest, modalities, split_column="split")
    folder = tmp_path / "saved"
    from_manifest.save_to_disk(folder)
    files_before = sorted(p.name for p in folder.rglob("*"))

    saved = load_multimodal_dataset(folder, modalities)

    assert sorted(p.name for p in folder.rglob("*")) == files_before  # nothing written into the user's folder
    assert list(saved) == ["train", "test"]
    assert saved["train"].features == from_manifest["train"].features
    assert saved["test"]["sample_idx"][:] == [3, 4, 5]
    row = saved["test"][1]
    audio = row["audio"]
    assert audio["bytes"] is not None  # save_to_disk embeds the files
    samples, rate = sf.read(io.BytesIO(audio["bytes"]))
    assert samples.shape == (140,) and rate == 8000
    assert row["image"].size == (8, 3)


def test_saved_single_dataset_gets_labels_sample_idx_split_and_audio_undecoded(tmp_path):
    paths = [_wav(tmp_path / f"{i}.wav", 50, 8000) for i in range(10)]
    ds = datasets.Dataset.from_dict({"clip": paths, "labels": ["on", "off"] * 5}).cast_column("clip", datasets.Audio())
    ds.save_to_disk(tmp_path / "single")
    files_before = sorted(p.name for p in (tmp_path / "single").iterdir())

    dd = load_multimodal_dataset(tmp_path / "single", {"clip": "audio"}, validation_fraction=0.2, test_fraction=0.2)

    assert sorted(p.name for p in (tmp_path / "single").iterdir()) == files_before  # no cache-*.arrow added
    assert {k: v.num_rows for k, v in dd.items()} == {"train": 6, "validation": 2, "test": 2}
    assert dd["train"].features["clip"].decode is False  # decoding would need torchcodec
    assert dd["train"].features["labels"] == datasets.ClassLabel(names=["off", "on"])
    assert sorted(i for d in dd.values() for i in d["sample_idx"]) == list(range(10))
    clip = dd["validation"][0]["clip"]
    assert sf.read(io.BytesIO(clip["bytes"]))[0].shape == (50,)


def test_integer_labels_named_by_class_names_and_pandas_na_strings_kept(tmp_path):
    media = _media(tmp_path, 4)
    rows = [{"image": m["image"], "note": note, "labels": label} for m, note, label in
            zip(media, ["NA", "null", "nan", "ok"], [0, 1, 2, 1])]
    manifest = _write_csv(tmp_path / "m.csv", rows)
    dd = load_multimodal_files(manifest, {"image": "image", "note": "text"}, class_names=["NA", "None", "x"],
                               validation_fraction=0.0, test_fraction=0.5)
    assert dd["train"].features["labels"] == datasets.ClassLabel(names=["NA", "None", "x"])
    notes = sorted(n for ds in dd.values() for n in ds["note"])
    assert notes == ["NA", "nan", "null", "ok"]  # only empty cells are missing values, not pandas' NA words
    _raises(["class ids must lie in [0, 2)", "found [2]"], load_multimodal_files, manifest, {"image": "image"},
            class_names=["a", "b"], validation_fraction=0.0, test_fraction=0.5)


# --------------------------------------------------------------------------- errors


@pytest.fixture
def small(tmp_path):
    """Four good samples under tmp_path and their CSV rows (labels a, b, a, b)."""
    return _csv_rows(_media(tmp_path, 4), ["a", "b", "a", "b"])


def _raises(match_parts: list[str], fn, *args, exc=DatasetFilesError, **kwargs) -> str:
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    for part in match_parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def test_error_type_is_a_validation_error():
    assert issubclass(DatasetFilesError, DatasetValidationError) and issubclass(DatasetFilesError, ValueError)


def test_manifest_not_found_and_unknown_extension(tmp_path, small):
    missing = tmp_path / "nope.csv"
    _raises(["manifest not found", str(missing)], load_multimodal_files, missing, {"image": "image"})
    txt = tmp_path / "m.txt"
    txt.write_text("image,labels\nimg/0.png,a\n")
    _raises([str(txt), "'.txt'", ".jsonl"], load_multimodal_files, txt, {"image": "image"})


def test_missing_columns_are_named_with_the_columns_present(tmp_path, small):
    manifest = _write_csv(tmp_path / "m.csv", small)
    _raises(["'depth'", "columns present", "'image'", str(manifest)], load_multimodal_files, manifest, {"depth": "image"})
    _raises(["label column 'target'", "columns present"], load_multimodal_files, manifest, {"image": "image"}, label_column="target")
    _raises(["split column 'fold'"], load_multimodal_files, manifest, {"image": "image"}, split_column="fold")


def test_unknown_kind_and_conflicting_options(tmp_path, small):
    manifest = _write_csv(tmp_path / "m.csv", small)
    _raises(["'image'", "'picture'", "valid kinds"], load_multimodal_files, manifest, {"image": "picture"}, exc=ValueError)
    _raises(["split_column"], load_multimodal_files, manifest, {"image": "image"}, split_column="labels2",
            test_fraction=0.3, exc=ValueError)
    _raises(["< 1"], load_multimodal_files, manifest, {"image": "image"}, validation_fraction=0.5, test_fraction=0.5,
            exc=ValueError)
    _raises(["needs modalities"], load_multimodal_dataset, manifest, exc=ValueError)


def test_missing_files_all_rows_checked_and_counted(tmp_path):
    media = _media(tmp_path, 8)
    rows = _csv_rows(media, ["a", "b"] * 4)
    for i in range(1, 8):
        rows[i]["image"] = f"gone/{i}.png"
    rows[0]["frames"] = "vid/0/0.png;vid/0/missing.png"
    manifest = _write_csv(tmp_path / "m.csv", rows)

    message = _raises(
        ["8 referenced files do not exist", "rows count from 0", f"{manifest} row 1, column 'image': {tmp_path / 'gone' / '1.png'}",
         "... and 3 more"],
        load_multimodal_files, manifest, ALL_KINDS,
    )
    assert f"row 0, column 'frames[1]': {tmp_path / 'vid' / '0' / 'missing.png'}" in message


def test_unreadable_image_and_audio_are_named(tmp_path, small):
    (tmp_path / "img" / "2.png").write_text("not a png")
    manifest = _write_csv(tmp_path / "m.csv", small)
    _raises(["Pillow cannot open the image", str(tmp_path / "img" / "2.png"), "row 2, column 'image'"],
            load_multimodal_files, manifest, {"image": "image"})
    # verify_files=False: existence only, the broken file is left for decoding time
    assert load_multimodal_files(manifest, {"image": "image"}, verify_files=False, validation_fraction=0.0,
                                 test_fraction=0.5)["train"].num_rows == 2

    (tmp_path / "wav" / "3.wav").write_bytes(b"RIFF garbage")
    _raises(["soundfile cannot read the audio", str(tmp_path / "wav" / "3.wav"), "row 3, column 'audio'"],
            load_multimodal_files, manifest, {"audio": "audio"})


def test_empty_cells_and_bad_feature_vectors(tmp_path, small):
    small[1]["image"] = ""
    small[2]["frames"] = ""
    _raises(["row 1, column 'image': empty image path", "row 2, column 'frames': no frame paths"],
            load_multimodal_files, _write_csv(tmp_path / "m.csv", small), ALL_KINDS)
    rows = [{"vec": v, "labels": 0} for v in ("1;2", "1;x", "3;4;5")]
    _raises(["row 1, column 'vec': not a numeric vector"], load_multimodal_files,
            _write_csv(tmp_path / "v.csv", rows), {"vec": "features"})
    rows[1]["vec"] = "1;nan"
    _raises(["row 1, column 'vec': not a numeric vector", "NaN or inf"], load_multimodal_files,
            _write_csv(tmp_path / "v.csv", rows), {"vec": "features"})
    rows[1]["vec"] = "1;2"
    _raises(["column 'vec': feature vectors differ in length", "row 2 has 3"], load_multimodal_files,
            _write_csv(tmp_path / "v.csv", rows), {"vec": "features"})


def test_bad_split_values_and_no_train_rows(tmp_path, small):
    for row, split in zip(small, ["train", "valid", "test", None]):
        row["split"] = split
    _raises(["split column 'split'", "'valid'", "at 2 row(s): 1, 3"], load_multimodal_files,
            _write_csv(tmp_path / "m.csv", small), {"image": "image"}, split_column="split")
    for row in small:
        row["split"] = "test"
    _raises(["no row is in 'train'"], load_multimodal_files, _write_csv(tmp_path / "m.csv", small), {"image": "image"},
            split_column="split")


def test_empty_splits(tmp_path, small):
    manifest = _write_csv(tmp_path / "m.csv", small)  # 2 rows per class: 10% validation rounds to none
    _raises(["split 'validation' is empty", "of 4 rows"], load_multimodal_files, manifest, {"image": "image"})
    empty = tmp_path / "empty.csv"
    empty.write_text("image,labels\n")
    _raises([str(empty), "has no rows"], load_multimodal_files, {"train": manifest, "test": empty}, {"image": "image"})


def test_null_and_nan_labels_and_unknown_class_names(tmp_path, small):
    for row, label in zip(small, [1.5, "", 2.0, ""]):
        row["labels"] = label
    _raises(["label column 'labels'", "2 null or NaN label(s), at rows 1, 3"], load_multimodal_files,
            _write_csv(tmp_path / "m.csv", small), {"image": "image"})
    jsonl = _write_jsonl(tmp_path / "m.jsonl", [{"image": "img/0.png", "labels": v} for v in ("a", None, "b")])
    _raises(["at rows 1", str(jsonl)], load_multimodal_files, jsonl, {"image": "image"})
    jsonl = _write_jsonl(tmp_path / "m.jsonl", [{"image": "img/0.png", "labels": v} for v in ("a", "zebra", "b")])
    _raises(["['zebra'] not in class_names", "at rows 1"], load_multimodal_files, jsonl, {"image": "image"},
            class_names=["a", "b"])


def test_duplicate_sample_idx_is_rejected(tmp_path, small):
    for row, idx in zip(small, [10, 11, 12, 11]):
        row["sample_idx"] = idx
    _raises(["'sample_idx' must be unique", "11"], load_multimodal_files, _write_csv(tmp_path / "m.csv", small),
            {"image": "image"}, validation_fraction=0.0, test_fraction=0.5)


def test_saved_folder_errors(tmp_path):
    ds = datasets.Dataset.from_dict({"caption": ["a", "b"], "labels": [0, 1]})
    datasets.DatasetDict(train=ds, test=ds).save_to_disk(tmp_path / "saved")
    _raises(["'image'", "columns present", "split 'train'"], load_multimodal_dataset, tmp_path / "saved", {"image": "image"})
    _raises(["column 'caption' is declared 'image'", "Image("], load_multimodal_dataset, tmp_path / "saved", {"caption": "image"})
    _raises(["not found", str(tmp_path / "absent")], load_multimodal_dataset, tmp_path / "absent", {"x": "text"})
    bad = datasets.Dataset.from_dict({"caption": ["a", "b", "c"], "labels": [1.0, float("nan"), None]})
    bad.save_to_disk(tmp_path / "nan_labels")
    _raises(["nan_labels", "split 'train'", "2 null or NaN label(s), at rows 1, 2"], load_multimodal_dataset,
            tmp_path / "nan_labels", {"caption": "text"})
    no_label = datasets.Dataset.from_dict({"caption": ["a", "b"], "labels": [0, -1]})
    no_label = no_label.cast_column("labels", datasets.ClassLabel(names=["x", "y"]))
    datasets.DatasetDict(train=no_label).save_to_disk(tmp_path / "minus_one")
    _raises(["minus_one", "class ids must lie in [0, 2)", "found [-1] at rows 1"], load_multimodal_dataset,
            tmp_path / "minus_one")
    (tmp_path / "plain").mkdir()
    _raises(["not a save_to_disk output", str(tmp_path / "plain")], load_multimodal_dataset, tmp_path / "plain", {"x": "text"})
    # both splits come from one Dataset, so their generated sample_idx must still be unique
    dd = load_multimodal_dataset(tmp_path / "saved", {"caption": "text"})
    assert dd["train"]["sample_idx"][:] == [0, 1] and dd["test"]["sample_idx"][:] == [2, 3]


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not FSDD_DIR.is_dir(), reason="FSDD recordings not available")
def test_free_spoken_digit_manifest(tmp_path):
    files = sorted(FSDD_DIR.glob("*_jackson_*.wav"))
    picked = [f for digit in range(10) for f in [p for p in files if p.name.startswith(f"{digit}_")][:3]]
    assert len(picked) == 30
    rows = [{"audio": str(p), "labels": int(p.name.split("_")[0])} for p in picked]
    manifest = _write_csv(tmp_path / "fsdd.csv", rows)

    dd = load_multimodal_files(manifest, {"audio": "audio"}, validation_fraction=1 / 3, test_fraction=1 / 3, seed=3)

    assert {k: v.num_rows for k, v in dd.items()} == {"train": 10, "validation": 10, "test": 10}
    for ds in dd.values():
        assert sorted(ds["labels"]) == list(range(10))  # stratified: one take of every digit per split
    row = dd["test"][0]
    samples, rate = sf.read(row["audio"]["path"])
    assert rate == 8000 and samples.shape == (sf.info(row["audio"]["path"]).frames,)
    assert Path(row["audio"]["path"]).parent == FSDD_DIR
