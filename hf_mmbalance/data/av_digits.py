"""Audio-visual digits: real FSDD spoken digits, each paired with an MNIST test image of the same digit.

Both halves are read from the public datasets' own file layouts in local folders, never the network:

* ``fsdd_dir``: a clone's ``recordings/`` folder (or the clone itself, holding ``recordings/``) with the
  Free Spoken Digit Dataset's WAVs named ``{digit}_{speaker}_{take}.wav`` (mono, 8 kHz, 16-bit PCM).
  Other files (``README.md``, ``speakers.json``, ...) are ignored; a ``.wav`` whose name does not match
  the pattern is an error. Speakers are taken from the file names.
* ``mnist_dir``: the folder with ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each either
  plain or gzipped (``.gz``; the plain file wins when both exist). IDX format: big-endian int32 header
  (magic 2051, count, rows, cols for images; magic 2049, count for labels), then the raw uint8 bytes.

Pairing: clips are ordered by (digit, speaker, take) and numbered ``sample_idx`` 0..N-1 in that order. For
each digit, ``seed`` draws as many MNIST images of that digit as it has clips, WITHOUT replacement, so
distinct clips of a digit get distinct images; the pool is the digit's images in IDX-file order, or only
the first ``max_images_per_digit`` of them. A digit with fewer images than clips is an error (there is
no fall-back to drawing with replacement: a repeated image would let a model memorise pairs). The
pairing depends only on ``seed`` and the files, never on the split, so every fold sees the same pairs.

Splits are by speaker (no speaker in two splits). With the speakers in sorted order (FSDD: george,
jackson, lucas, nicolas, theo, yweweler), ``fold=k`` gives ``test = speakers[k]``,
``validation = speakers[(k + 1) % n]`` and ``train`` = the rest; ``fold=None`` means fold 0. An explicit
``test_speaker`` overrides the test speaker (the validation speaker then defaults to the next one in
sorted order after it); an explicit ``validation_speaker`` overrides the validation speaker.

``image_noise = s > 0`` adds Gaussian noise of std ``s`` on the [0, 1] pixel scale to every image (drawn
per ``sample_idx`` from a generator seeded by ``seed``, independent of the pairing draw), clipped to
[0, 1] and rounded back to uint8 -- a weaker image modality for a more balanced setting. 0 leaves the
images byte-identical to MNIST.

Columns and features:

* ``audio``      -> ``datasets.Audio(sampling_rate=8000, decode=False)``: rows are ``{"path", "bytes"}`` with
  the WAV file's bytes embedded and its absolute path (``datasets`` decodes audio with torchcodec, which
  may be missing, so the column is built by casting an arrow table and read with soundfile, e.g. by
  ``hf_mmbalance.processing.audio``, which reads ``bytes`` when present).
* ``image``      -> ``datasets.Image()``: 28x28 (the IDX file's size) grayscale PNG, decoding to a PIL image.
* ``labels``     -> ``ClassLabel`` with names "0".."9".
* ``sample_idx`` -> ``Value("int64")``, unique over all splits.
* ``speaker``    -> ``Value("string")``.

File problems raise :class:`~.files.DatasetFilesError` (a :class:`~.validation.DatasetValidationError`,
so a ``ValueError``) naming the path and what was expected; invalid arguments raise ``ValueError``.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import soundfile
from datasets.table import InMemoryTable, cast_table_to_features
from PIL import Image as PILImage

from .files import DatasetFilesError

__all__ = ["AV_DIGITS_SAMPLING_RATE", "FSDD_FILE_PATTERN", "load_av_digits"]

AV_DIGITS_SAMPLING_RATE = 8000
#: ``{digit}_{speaker}_{take}.wav``; the speaker is any name without ``_``.
FSDD_FILE_PATTERN = re.compile(r"^([0-9])_([^_]+)_([0-9]+)\.wav$")
NUM_CLASSES = 10
MNIST_IMAGES = "t10k-images-idx3-ubyte"
MNIST_LABELS = "t10k-labels-idx1-ubyte"
_IMAGES_MAGIC = 2051
_LABELS_MAGIC = 2049
_SPLITS = ("train", "validation", "test")


def load_av_digits(
    fsdd_dir: str | os.PathLike,
    mnist_dir: str | os.PathLike,
    *,
    test_speaker: str | None = None,
    validation_speaker: str | None = None,
    fold: int | None = None,
    seed: int = 0,
    image_noise: float = 0.0,
    max_images_per_digit: int | None = None,
) -> datasets.DatasetDict:
    """Load FSDD clips paired with same-digit MNIST images as a speaker-split ``DatasetDict``.

    Args:
        fsdd_dir: the FSDD ``recordings/`` folder, or a folder holding ``recordings/``.
        mnist_dir: folder with ``t10k-images-idx3-ubyte(.gz)`` and ``t10k-labels-idx1-ubyte(.gz)``.
        test_speaker, validation_speaker: explicit speakers for those splits (override ``fold``).
        fold: 0..n_speakers-1; test = sorted speakers[fold], validation = the next one (cyclic).
            ``None``: fold 0 unless ``test_speaker`` is given.
        seed: seeds the image pairing and the image noise (same seed and files -> same dataset).
        image_noise: std (>= 0) of Gaussian noise added to images on the [0, 1] scale, clipped.
        max_images_per_digit: draw each digit's images from only its first this-many MNIST images
            (IDX order); fewer than that digit's clips is an error.

    Returns:
        ``DatasetDict`` with ``train`` / ``validation`` / ``test``, each in ``sample_idx`` order, columns
        ``audio``, ``image``, ``labels``, ``sample_idx``, ``speaker`` (see the module docstring).
    """
    noise = _check_args(seed, image_noise, max_images_per_digit, fold)
    clips = _scan_fsdd(fsdd_dir)
    images, image_labels, images_path, labels_path = _read_mnist(mnist_dir)
    speakers = sorted({c[1] for c in clips})
    test, validation = _pick_speakers(speakers, test_speaker, validation_speaker, fold, clips[0][3].parent)

    audio_rows = [_read_wav(path) for *_, path in clips]
    digits = np.array([c[0] for c in clips], dtype=np.int64)
    pair_seed, noise_seed = np.random.SeedSequence(seed).spawn(2)
    chosen = _pair_images(digits, image_labels, max_images_per_digit, np.random.default_rng(pair_seed), labels_path)
    pixels = images[chosen]
    if noise > 0:
        rng = np.random.default_rng(noise_seed)
        noisy = pixels.astype(np.float64) / 255.0 + rng.normal(0.0, noise, size=pixels.shape)
        pixels = np.rint(np.clip(noisy, 0.0, 1.0) * 255.0).astype(np.uint8)

    speaker_col = [c[1] for c in clips]
    table = pa.table(
        {
            "audio": pa.array(audio_rows, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "image": pa.array(
                [{"bytes": _png(p), "path": None} for p in pixels],
                type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "labels": pa.array(digits, type=pa.int64()),
            "sample_idx": pa.array(np.arange(len(clips), dtype=np.int64)),
            "speaker": pa.array(speaker_col, type=pa.string()),
        }
    )
    features = datasets.Features(
        {
            "audio": datasets.Audio(sampling_rate=AV_DIGITS_SAMPLING_RATE, decode=False),
            "image": datasets.Image(),
            "labels": datasets.ClassLabel(names=[str(i) for i in range(NUM_CLASSES)]),
            "sample_idx": datasets.Value("int64"),
            "speaker": datasets.Value("string"),
        }
    )
    table = cast_table_to_features(table, features)
    speaker_arr = np.array(speaker_col)
    rows = {
        "train": np.flatnonzero((speaker_arr != test) & (speaker_arr != validation)),
        "validation": np.flatnonzero(speaker_arr == validation),
        "test": np.flatnonzero(speaker_arr == test),
    }
    out = {}
    for name in _SPLITS:
        out[name] = datasets.Dataset(
            InMemoryTable(table.take(pa.array(rows[name]))),
            info=datasets.DatasetInfo(features=features.copy()),
            split=datasets.NamedSplit(name),
        )
    return datasets.DatasetDict(out)


# --------------------------------------------------------------------------- arguments and speakers


def _check_args(seed, image_noise, max_images_per_digit, fold) -> float:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(image_noise, bool) or not isinstance(image_noise, (int, float, np.floating)) or not (
        np.isfinite(image_noise) and image_noise >= 0
    ):
        raise ValueError(f"image_noise must be a finite number >= 0 (a std on the [0, 1] pixel scale), got {image_noise!r}")
    if max_images_per_digit is not None and (
        isinstance(max_images_per_digit, bool) or not isinstance(max_images_per_digit, (int, np.integer))
        or max_images_per_digit < 1
    ):
        raise ValueError(f"max_images_per_digit must be a positive int or None, got {max_images_per_digit!r}")
    if fold is not None and (isinstance(fold, bool) or not isinstance(fold, (int, np.integer))):
        raise ValueError(f"fold must be an int or None, got {fold!r}")
    return float(image_noise)


def _pick_speakers(speakers, test_speaker, validation_speaker, fold, folder: Path) -> tuple[str, str]:
    if len(speakers) < 3:
        raise DatasetFilesError(
            f"{folder}: found {len(speakers)} speaker(s) {speakers}; a speaker split needs at least 3 "
            "(train, validation, test)"
        )
    for role, name in (("test_speaker", test_speaker), ("validation_speaker", validation_speaker)):
        if name is not None and name not in speakers:
            raise ValueError(f"unknown {role} {name!r}; the speakers in {folder} are {speakers}")
    if fold is not None and not 0 <= fold < len(speakers):
        raise ValueError(f"fold must be in 0..{len(speakers) - 1} (one per speaker: {speakers}), got {fold}")
    test = test_speaker if test_speaker is not None else speakers[fold or 0]
    if validation_speaker is None:
        validation = speakers[(speakers.index(test) + 1) % len(speakers)]
    else:
        validation = validation_speaker
    if test == validation:
        raise ValueError(f"test and validation speaker are both {test!r}; a speaker may be in one split only")
    return test, validation


# --------------------------------------------------------------------------- FSDD


def _scan_fsdd(fsdd_dir) -> list[tuple[int, str, int, Path]]:
    """Sorted ``(digit, speaker, take, path)`` for every FSDD WAV."""
    root = Path(os.fspath(fsdd_dir))
    if not root.is_dir():
        raise DatasetFilesError(f"FSDD folder not found: {root} (expected the recordings/ folder of a FSDD clone, or its parent)")
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    wavs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav" and p.is_file())
    if not wavs:
        raise DatasetFilesError(
            f"{folder}: no FSDD recordings (expected files named {{digit}}_{{speaker}}_{{take}}.wav, "
            "e.g. 0_jackson_0.wav, in the folder or in its recordings/ subfolder)"
        )
    clips = []
    for path in wavs:
        match = FSDD_FILE_PATTERN.match(path.name)
        if match is None:
            raise DatasetFilesError(f"{path}: file name does not match the FSDD pattern {{digit}}_{{speaker}}_{{take}}.wav")
        clips.append((int(match.group(1)), match.group(2), int(match.group(3)), path.resolve()))
    clips.sort(key=lambda c: c[:3])
    return clips


def _read_wav(path: Path) -> dict:
    """The file's bytes and path, after checking soundfile decodes it at 8 kHz."""
    try:
        data = path.read_bytes()
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    except Exception as error:  # soundfile raises LibsndfileError / RuntimeError / TypeError by version
        raise DatasetFilesError(f"{path}: unreadable WAV (soundfile: {error})") from error
    if rate != AV_DIGITS_SAMPLING_RATE:
        raise DatasetFilesError(f"{path}: sampling rate {rate} Hz, expected {AV_DIGITS_SAMPLING_RATE} Hz (FSDD is 8 kHz)")
    if samples.size == 0:
        raise DatasetFilesError(f"{path}: WAV holds no samples")
    return {"bytes": data, "path": str(path)}


# --------------------------------------------------------------------------- MNIST


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    raise DatasetFilesError(f"{folder}: missing MNIST file {stem} (expected {stem} or {stem}.gz)")


def _read_idx_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetFilesError(f"{path}: unreadable IDX file ({error})") from error


def _parse_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    data = _read_idx_bytes(path)
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise DatasetFilesError(f"{path}: truncated IDX file: {len(data)} bytes, shorter than the {header}-byte header")
    fields = np.frombuffer(data, dtype=">i4", count=1 + ndim)
    if int(fields[0]) != magic:
        raise DatasetFilesError(
            f"{path}: bad IDX magic number {int(fields[0])}, expected {magic} "
            f"({'images' if magic == _IMAGES_MAGIC else 'labels'}, uint8, {ndim}-D)"
        )
    shape = tuple(int(x) for x in fields[1:])
    expected = header + int(np.prod(shape))
    if any(s < 0 for s in shape) or len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DatasetFilesError(f"{path}: {problem}: {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_mnist(mnist_dir) -> tuple[np.ndarray, np.ndarray, Path, Path]:
    folder = Path(os.fspath(mnist_dir))
    if not folder.is_dir():
        raise DatasetFilesError(f"MNIST folder not found: {folder} (expected a folder with {MNIST_IMAGES}(.gz) and {MNIST_LABELS}(.gz))")
    images_path, labels_path = _find_idx(folder, MNIST_IMAGES), _find_idx(folder, MNIST_LABELS)
    images = _parse_idx(images_path, _IMAGES_MAGIC, 3)
    labels = _parse_idx(labels_path, _LABELS_MAGIC, 1)
    if images.shape[0] != labels.shape[0]:
        raise DatasetFilesError(f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DatasetFilesError(f"{labels_path}: label {int(labels.max())} outside 0..{NUM_CLASSES - 1}")
    return images, labels, images_path, labels_path


def _pair_images(digits, image_labels, max_per_digit, rng, labels_path) -> np.ndarray:
    """Index of the MNIST image for each clip: per digit, a draw without replacement."""
    chosen = np.empty(len(digits), dtype=np.int64)
    for digit in range(NUM_CLASSES):
        clips = np.flatnonzero(digits == digit)
        if clips.size == 0:
            continue
        pool = np.flatnonzero(image_labels == digit)
        if max_per_digit is not None:
            pool = pool[:max_per_digit]
        if pool.size < clips.size:
            limit = "" if max_per_digit is None else f" (max_images_per_digit={max_per_digit})"
            raise DatasetFilesError(
                f"{labels_path}: digit {digit} has {pool.size} MNIST image(s){limit} but {clips.size} clip(s) to pair; "
                "each clip needs a distinct image (drawn without replacement)"
            )
        chosen[clips] = rng.choice(pool, size=clips.size, replace=False)
    return chosen


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()
