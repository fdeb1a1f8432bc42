"""load_av_digits: FSDD spoken digits paired with same-digit MNIST images, split by speaker."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile

from hf_mmbalance.data.av_digits import load_av_digits
from hf_mmbalance.data.files import DatasetFilesError
from hf_mmbalance.processing.audio import audio_and_rate

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FSDD = SHARED / "fsdd"
MNIST = SHARED / "mnist"
HAVE_DATA = (FSDD / "recordings").is_dir() and (MNIST / "t10k-labels-idx1-ubyte.gz").is_file()
real = pytest.mark.skipif(not HAVE_DATA, reason=f"shared data not found under {SHARED}")
SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]


def _pixels(ds) -> np.ndarray:
    return np.stack([np.asarray(img) for img in ds["image"]])


def _rows(dd):
    """sample_idx -> (speaker, label, image pixel bytes), over all splits."""
    out = {}
    for ds in dd.values():
        for idx, spk, lab, px in zip(ds["sample_idx"], ds["speaker"], ds["labels"], _pixels(ds)):
            out[idx] = (spk, lab, px.tobytes())
    return out


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def mnist_raw():
    with gzip.open(MNIST / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


@pytest.fixture(scope="module")
def av0():
    return load_av_digits(FSDD, MNIST, seed=0)


@pytest.fixture(scope="module")
def rows0(av0):
    return _rows(av0)


@real
def test_pairing_is_label_consistent_and_distinct(av0, rows0, mnist_raw):
    images, labels = mnist_raw
    by_pixels: dict[bytes, set[int]] = {}
    for img, lab in zip(images, labels):
        by_pixels.setdefault(img.tobytes(), set()).add(int(lab))
    assert len(rows0) == 3000
    for spk, lab, px in rows0.values():
        assert by_pixels[px] == {lab}  # the image is an MNIST test image of the clip's digit
    for digit in range(10):
        pxs = [px for _, lab, px in rows0.values() if lab == digit]
        assert len(pxs) == 300 and len(set(pxs)) == 300  # distinct images per digit
    # the label is the digit in the file name
    for ds in av0.values():
        for audio, lab, spk in zip(ds["audio"][:50], ds["labels"][:50], ds["speaker"][:50]):
            name = Path(audio["path"]).name
            assert name.split("_")[0] == str(lab) and name.split("_")[1] == spk


@real
def test_deterministic_pairing_and_seed_changes_it(rows0):
    again = _rows(load_av_digits(FSDD, MNIST, seed=0, fold=3))  # same seed, other fold: same pairs
    assert again == rows0
    other = _rows(load_av_digits(FSDD, MNIST, seed=1))
    assert other.keys() == rows0.keys()
    changed = sum(other[k][2] != rows0[k][2] for k in rows0)
    assert changed > 2900
    assert all(other[k][:2] == rows0[k][:2] for k in rows0)


@real
def test_columns_features_and_sample_idx(av0):
    import datasets

    feats = av0["train"].features
    assert list(feats) == ["audio", "image", "labels", "sample_idx", "speaker"]
    assert isinstance(feats["audio"], datasets.Audio) and not feats["audio"].decode
    assert isinstance(feats["image"], datasets.Image)
    assert feats["labels"].names == [str(i) for i in range(10)]
    assert feats["sample_idx"].dtype == "int64" and feats["speaker"].dtype == "string"
    idx = np.concatenate([ds["sample_idx"] for ds in av0.values()])
    assert len(idx) == 3000 and len(np.unique(idx)) == 3000
    img = av0["test"][0]["image"]
    assert img.size == (28, 28) and img.mode == "L"


@real
def test_speaker_folds_disjoint_cover_and_rotate():
    # fold k: test = speakers[k], validation = speakers[k+1 mod 6], in sorted order; fold=None is fold 0
    for k in range(6):
        dd = load_av_digits(FSDD, MNIST, fold=k)
        spk = {name: set(ds["speaker"]) for name, ds in dd.items()}
        assert spk["test"] == {SPEAKERS[k]} and spk["validation"] == {SPEAKERS[(k + 1) % 6]}
        assert spk["train"] == set(SPEAKERS) - {SPEAKERS[k], SPEAKERS[(k + 1) % 6]}
        assert {n: ds.num_rows for n, ds in dd.items()} == {"train": 2000, "validation": 500, "test": 500}
        idx = np.concatenate([ds["sample_idx"] for ds in dd.values()])
        assert sorted(idx.tolist()) == list(range(3000))


@real
def test_explicit_speakers_override_fold():
    dd = load_av_digits(FSDD, MNIST, fold=2, test_speaker="theo", validation_speaker="jackson")
    assert set(dd["test"]["speaker"]) == {"theo"} and set(dd["validation"]["speaker"]) == {"jackson"}
    dd = load_av_digits(FSDD, MNIST, test_speaker="yweweler")  # validation: next speaker, cyclic
    assert set(dd["validation"]["speaker"]) == {"george"}


@real
def test_audio_reads_back_at_8khz(av0):
    ds = av0["test"]
    for i in (0, 123, 499):
        audio = ds[i]["audio"]
        ref, rate = soundfile.read(audio["path"], dtype="float32")
        from_bytes, rate_b = soundfile.read(io.BytesIO(audio["bytes"]), dtype="float32")
        assert rate == rate_b == 8000
        np.testing.assert_array_equal(ref, from_bytes)
        assert 1148 <= len(ref) <= 18262
        samples, sr = audio_and_rate(audio)  # the processing layer's reader
        assert sr == 8000 and samples.shape == ref.shape


@real
def test_image_noise(av0):
    clean = _pixels(av0["test"]).astype(np.float64) / 255
    same = load_av_digits(FSDD, MNIST, image_noise=0.0)
    np.testing.assert_array_equal(_pixels(same["test"]), _pixels(av0["test"]))
    noisy = load_av_digits(FSDD, MNIST, image_noise=0.1)
    assert noisy["test"]["labels"] == av0["test"]["labels"]
    diff = _pixels(noisy["test"]).astype(np.float64) / 255 - clean
    mid = (clean > 0.35) & (clean < 0.65)  # far from the clipping bounds
    assert mid.sum() > 1000
    assert abs(diff[mid].std() - 0.1) < 0.01 and abs(diff[mid].mean()) < 0.01
    assert (diff != 0).mean() > 0.3
    again = load_av_digits(FSDD, MNIST, image_noise=0.1)
    np.testing.assert_array_equal(_pixels(again["test"]), _pixels(noisy["test"]))


# --------------------------------------------------------------------------- synthetic layouts


def _write_wav(path: Path, rate: int = 8000, n: int = 400):
    soundfile.write(path, (0.1 * np.sin(np.arange(n) / 5)).astype(np.float32), rate, subtype="PCM_16")


def _idx_images(images: np.ndarray, magic: int = 2051) -> bytes:
    n, r, c = images.shape
    return np.array([magic, n, r, c], ">i4").tobytes() + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray, magic: int = 2049) -> bytes:
    return np.array([magic, len(labels)], ">i4").tobytes() + np.asarray(labels, np.uint8).tobytes()


def _layout(tmp_path: Path, speakers=("ann", "bob", "cid"), takes=2, digits=(0, 1), per_digit=8, gz=True):
    rec = tmp_path / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for d in digits:
        for s in speakers:
            for t in range(takes):
                _write_wav(rec / f"{d}_{s}_{t}.wav")
    mn = tmp_path / "mnist"
    mn.mkdir()
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), per_digit)
    images = rng.integers(0, 256, size=(len(labels), 28, 28))
    for name, data in (("t10k-images-idx3-ubyte", _idx_images(images)), ("t10k-labels-idx1-ubyte", _idx_labels(labels))):
        if gz:
            (mn / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (mn / name).write_bytes(data)
    return tmp_path / "fsdd", mn, images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_synthetic_layout_loads(tmp_path, gz):
    fsdd, mn, images, labels = _layout(tmp_path, gz=gz)
    dd = load_av_digits(fsdd / "recordings", mn, fold=1)  # the recordings/ folder itself works too
    assert set(dd["test"]["speaker"]) == {"bob"} and set(dd["validation"]["speaker"]) == {"cid"}
    for ds in dd.values():
        for img, lab in zip(_pixels(ds), ds["labels"]):
            match = [i for i in range(len(images)) if np.array_equal(images[i], img)]
            assert len(match) == 1 and labels[match[0]] == lab


def test_error_missing_fsdd_dir(tmp_path):
    _, mn, *_ = _layout(tmp_path)
    with pytest.raises(DatasetFilesError, match="FSDD folder not found.*nope"):
        load_av_digits(tmp_path / "nope", mn)


def test_error_no_wavs(tmp_path):
    _, mn, *_ = _layout(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("x")
    with pytest.raises(DatasetFilesError, match=r"empty: no FSDD recordings.*\{digit\}_\{speaker\}_\{take\}\.wav"):
        load_av_digits(empty, mn)


def test_error_bad_file_name(tmp_path):
    fsdd, mn, *_ = _layout(tmp_path)
    _write_wav(fsdd / "recordings" / "zero_ann_0.wav")
    with pytest.raises(DatasetFilesError, match="zero_ann_0.wav: file name does not match"):
        load_av_digits(fsdd, mn)


def test_error_unreadable_wav(tmp_path):
    fsdd, mn, *_ = _layout(tmp_path)
    (fsdd / "recordings" / "1_bob_7.wav").write_bytes(b"RIFF not really a wav")
    with pytest.raises(DatasetFilesError, match="1_bob_7.wav: unreadable WAV"):
        load_av_digits(fsdd, mn)


def test_error_wrong_sampling_rate(tmp_path):
    fsdd, mn, *_ = _layout(tmp_path)
    _write_wav(fsdd / "recordings" / "1_bob_7.wav", rate=16000)
    with pytest.raises(DatasetFilesError, match="1_bob_7.wav: sampling rate 16000 Hz, expected 8000"):
        load_av_digits(fsdd, mn)


@pytest.mark.parametrize("missing", ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_error_missing_mnist_file(tmp_path, missing):
    fsdd, mn, *_ = _layout(tmp_path)
    (mn / (missing + ".gz")).unlink()
    with pytest.raises(DatasetFilesError, match=f"missing MNIST file {missing}"):
        load_av_digits(fsdd, mn)
    with pytest.raises(DatasetFilesError, match="MNIST folder not found"):
        load_av_digits(fsdd, tmp_path / "no_mnist")


def test_error_bad_magic(tmp_path):
    fsdd, mn, images, labels = _layout(tmp_path, gz=False)
    (mn / "t10k-images-idx3-ubyte").write_bytes(_idx_images(images, magic=2049))
    with pytest.raises(DatasetFilesError, match="t10k-images-idx3-ubyte: bad IDX magic number 2049, expected 2051"):
        load_av_digits(fsdd, mn)


def test_error_truncated_idx(tmp_path):
    fsdd, mn, images, labels = _layout(tmp_path)
    (mn / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_labels(labels)[:-3]))
    with pytest.raises(DatasetFilesError, match="t10k-labels-idx1-ubyte.gz: truncated"):
        load_av_digits(fsdd, mn)
    (mn / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00"))
    with pytest.raises(DatasetFilesError, match="truncated IDX file: 2 bytes"):
        load_av_digits(fsdd, mn)
    (mn / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_labels(labels))[:-10])  # cut gzip stream
    with pytest.raises(DatasetFilesError, match="t10k-labels-idx1-ubyte.gz: unreadable IDX file"):
        load_av_digits(fsdd, mn)


def test_error_count_mismatch(tmp_path):
    fsdd, mn, images, labels = _layout(tmp_path)
    (mn / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_labels(labels[:-1])))
    with pytest.raises(DatasetFilesError, match="holds 80 images but .* holds 79 labels"):
        load_av_digits(fsdd, mn)


def test_error_too_few_images_per_digit(tmp_path):
    fsdd, mn, *_ = _layout(tmp_path, per_digit=5)  # 6 clips per digit, 5 images each
    with pytest.raises(DatasetFilesError, match="digit 0 has 5 MNIST image.*6 clip"):
        load_av_digits(fsdd, mn)
    fsdd, mn, *_ = _layout(tmp_path / "b", per_digit=8)
    load_av_digits(fsdd, mn, max_images_per_digit=6)  # exactly enough
    with pytest.raises(DatasetFilesError, match=r"digit 0 has 4 MNIST image\(s\) \(max_images_per_digit=4\)"):
        load_av_digits(fsdd, mn, max_images_per_digit=4)


def test_error_speaker_arguments(tmp_path):
    fsdd, mn, *_ = _layout(tmp_path)
    with pytest.raises(ValueError, match=r"unknown test_speaker 'zed'.*\['ann', 'bob', 'cid'\]"):
        load_av_digits(fsdd, mn, test_speaker="zed")
    with pytest.raises(ValueError, match="unknown validation_speaker 'zed'"):
        load_av_digits(fsdd, mn, validation_speaker="zed")
    with pytest.raises(ValueError, match="test and validation speaker are both 'bob'"):
        load_av_digits(fsdd, mn, test_speaker="bob", validation_speaker="bob")
    with pytest.raises(ValueError, match="test and validation speaker are both 'ann'"):
        load_av_digits(fsdd, mn, validation_speaker="ann")  # fold 0's test speaker
    with pytest.raises(ValueError, match=r"fold must be in 0\.\.2"):
        load_av_digits(fsdd, mn, fold=3)
    with pytest.raises(ValueError, match="image_noise"):
        load_av_digits(fsdd, mn, image_noise=-0.1)


def test_error_too_few_speakers(tmp_path):
    fsdd, mn, *_ = _layout(tmp_path, speakers=("ann", "bob"))
    with pytest.raises(DatasetFilesError, match="found 2 speaker.*at least 3"):
        load_av_digits(fsdd, mn)
