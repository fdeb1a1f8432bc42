"""Decoding and resampling of raw audio values: pure functions on numpy arrays.

Everything here turns one raw clip, in any of the forms a `datasets` column can hold, into the 1-D float32 waveform at
the rate a feature extractor expects. Files are decoded with `soundfile` (a wheel that bundles libsndfile) because
`datasets.Audio` decoding needs torchcodec and system FFmpeg libraries, which a fresh machine does not have.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import numpy as np

from .errors import ProcessingError

# A 2-D array whose shorter side is at most this long is read as (channels, samples) or (samples, channels); anything
# wider is not a multi-channel clip (e.g. an already computed spectrogram).
MAX_AUDIO_CHANNELS = 8

EXPECTED_AUDIO = (
    "expected audio: a {'array', 'sampling_rate'} dict, a {'path', 'bytes'} dict (datasets.Audio(decode=False)), "
    "a file path, an object with .get_all_samples() (torchcodec AudioDecoder), or a 1-D float array"
)


def read_audio_file(source: str | os.PathLike | bytes, name: str | None = None) -> tuple[np.ndarray, int]:
    """Decode an audio file (a path, or the file's bytes) with soundfile.

    Returns `(samples, sampling_rate)`, samples float32 of shape (N,) or (N, channels). `name` is used in the error
    message for bytes (their original path, when known). Raises ProcessingError naming the file when it cannot be read.
    """
    import soundfile

    label = name if name is not None else ("<bytes>" if isinstance(source, (bytes, bytearray)) else os.fspath(source))
    file = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    try:
        samples, rate = soundfile.read(file, dtype="float32", always_2d=False)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, OSError or TypeError by format
        raise ProcessingError(f"cannot read audio file {label!r} with soundfile: {error}") from error
    return samples, int(rate)


def audio_and_rate(value: Any) -> tuple[np.ndarray, float | None]:
    """Split one raw audio value into `(samples, sampling_rate)`; the rate is None for a plain array (the caller
    then assumes the feature extractor's rate). Files are decoded here; nothing is resampled or mixed down."""
    if isinstance(value, dict):
        return _audio_from_dict(value)
    if isinstance(value, (str, os.PathLike, bytes, bytearray)):
        return read_audio_file(value)
    if hasattr(value, "get_all_samples"):
        samples = value.get_all_samples()
        return _as_float_array(samples.data), float(samples.sample_rate)
    if _is_array_like(value):
        return _as_float_array(value), None
    raise ProcessingError(f"{EXPECTED_AUDIO}, got {type(value).__name__}")


def _audio_from_dict(value: dict) -> tuple[np.ndarray, float | None]:
    if value.get("array") is not None:
        if value.get("sampling_rate") is None:
            raise ProcessingError("an {'array', 'sampling_rate'} audio dict has no 'sampling_rate'")
        return _as_float_array(value["array"]), value["sampling_rate"]
    if value.get("bytes") is not None:
        return read_audio_file(value["bytes"], name=value.get("path"))
    if value.get("path") is not None:
        return read_audio_file(value["path"])
    raise ProcessingError(f"{EXPECTED_AUDIO}, got a dict with keys {sorted(value)} and no array, bytes or path")


def _is_array_like(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) or hasattr(value, "__array__")


def _as_float_array(value: Any) -> np.ndarray:
    """float32 samples; integer PCM is refused rather than guessed at (its scale depends on the bit depth)."""
    if hasattr(value, "detach"):  # a torch tensor: numpy() needs it on the CPU and out of autograd
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ProcessingError(f"{EXPECTED_AUDIO}; could not read the samples as an array: {error}") from error
    if array.dtype.kind != "f":
        raise ProcessingError(
            f"expected float audio samples (in [-1, 1]), got dtype {array.dtype}; convert integer PCM with "
            "x / 2 ** (bits - 1)"
        )
    if array.ndim not in (1, 2) or array.size == 0:
        raise ProcessingError(f"expected a non-empty 1-D (mono) or 2-D (multi-channel) clip, got shape {array.shape}")
    return array.astype(np.float32, copy=False)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Mean over channels. A 2-D clip's channel axis is its shorter one: datasets gives (channels, N), soundfile
    (N, channels). Returns a 1-D array; a 1-D input is returned unchanged."""
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2 or min(samples.shape) > MAX_AUDIO_CHANNELS:
        raise ProcessingError(
            f"expected a mono clip (N,) or a multi-channel clip with at most {MAX_AUDIO_CHANNELS} channels, "
            f"got shape {samples.shape}"
        )
    channel_axis = 0 if samples.shape[0] <= samples.shape[1] else 1
    return samples.mean(axis=channel_axis).astype(samples.dtype, copy=False)


def check_sampling_rate(rate: Any) -> int:
    """The rate as an int, or ProcessingError: resample_poly needs a positive whole number of Hz."""
    try:
        as_float = float(rate)
    except (TypeError, ValueError):
        as_float = math.nan
    if not (math.isfinite(as_float) and as_float > 0 and as_float == int(as_float)):
        raise ProcessingError(f"sampling rate {rate!r} cannot be used: expected a positive whole number of Hz")
    return int(as_float)


def resample(samples: np.ndarray, orig_rate: Any, target_rate: Any) -> np.ndarray:
    """Polyphase resampling (`scipy.signal.resample_poly`, up/down reduced by their gcd) of a 1-D clip.

    Returns float32 of length ceil(N * target / orig). Polyphase filtering keeps the spectrum below the new Nyquist
    frequency (a sine keeps its frequency) and needs integer rates, checked by `check_sampling_rate`.
    """
    orig, target = check_sampling_rate(orig_rate), check_sampling_rate(target_rate)
    if orig == target:
        return samples
    from scipy.signal import resample_poly

    divisor = math.gcd(orig, target)
    return resample_poly(samples, target // divisor, orig // divisor).astype(np.float32)


def load_audio(value: Any, target_rate: int) -> np.ndarray:
    """One raw clip (any form `audio_and_rate` reads) -> 1-D float32 mono waveform at `target_rate`.

    A plain array carries no rate, so it is taken to be at `target_rate` already.
    """
    samples, rate = audio_and_rate(value)
    return resample(to_mono(samples), target_rate if rate is None else rate, target_rate)


def is_raw_audio(value: Any, has_processed_companions: bool) -> bool:
    """Whether a row's audio value is a raw clip rather than a feature extractor's output.

    Dicts, paths, bytes and decoders are raw. A plain array is ambiguous (wav2vec2's `input_values` is a 1-D float
    array too): it counts as processed when the row also holds the modality's other outputs (`<m>_attention_mask`,
    which the processor always emits for padded audio), and a 2-D array counts as raw only when it can be a
    multi-channel clip (a side of at most MAX_AUDIO_CHANNELS, the rule `to_mono` uses) and not a spectrogram.
    """
    if isinstance(value, (dict, str, os.PathLike, bytes, bytearray)) or hasattr(value, "get_all_samples"):
        return True
    if has_processed_companions:
        return False
    shape = np.shape(value)
    return len(shape) == 1 or (len(shape) == 2 and min(shape) <= MAX_AUDIO_CHANNELS)
