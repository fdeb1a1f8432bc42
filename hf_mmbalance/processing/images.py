"""Decoding of raw image values into PIL images with the channel count an image processor expects."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image

from .errors import ProcessingError

EXPECTED_IMAGE = (
    "expected an image: a PIL.Image, a uint8 array of shape (H, W), (H, W, C) or (C, H, W), a file path, or a "
    "{'bytes', 'path'} dict (datasets.Image(decode=False))"
)
_MODES = {1: "L", 3: "RGB"}


def image_channels(image_processor: Any) -> int:
    """Channels the processor normalizes: the length of its `image_mean` (1 for a grayscale processor such as one
    for MNIST, 3 otherwise; a scalar or missing mean means RGB, as every pretrained vision model expects)."""
    mean = getattr(image_processor, "image_mean", None)
    channels = len(mean) if isinstance(mean, (list, tuple)) else 3
    if channels not in _MODES:
        raise ValueError(
            f"{type(image_processor).__name__} normalizes {channels} channels; only 1 (grayscale) or 3 (RGB) "
            "can be converted to"
        )
    return channels


def load_image(value: Any, channels: int) -> Image.Image:
    """One raw image -> a decoded PIL image in mode "L" (channels=1) or "RGB" (channels=3).

    Grayscale, palette, RGBA and 16-bit images are all converted by Pillow, so a dataset may mix them. Raises
    ProcessingError for anything that is not an image, or a file that cannot be decoded (naming its path).
    """
    image = _to_pil(value)
    return image if image.mode == _MODES[channels] else image.convert(_MODES[channels])


def _to_pil(value: Any) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        return _from_dict(value)
    if isinstance(value, (str, os.PathLike)):
        return _open(os.fspath(value), os.fspath(value))
    if isinstance(value, (bytes, bytearray)):
        return _open(io.BytesIO(value), "<bytes>")
    if isinstance(value, (list, tuple, np.ndarray)) or hasattr(value, "__array__"):
        return _from_array(value)
    raise ProcessingError(f"{EXPECTED_IMAGE}, got {type(value).__name__}")


def _from_dict(value: dict) -> Image.Image:
    if value.get("bytes") is not None:
        return _open(io.BytesIO(value["bytes"]), value.get("path") or "<bytes>")
    if value.get("path") is not None:
        return _open(value["path"], value["path"])
    raise ProcessingError(f"{EXPECTED_IMAGE}, got a dict with keys {sorted(value)} and no bytes or path")


def _open(file: Any, label: str) -> Image.Image:
    try:
        image = Image.open(file)
        image.load()  # Image.open is lazy: decode now so that a corrupt file fails here, with its name
    except Exception as error:  # Pillow raises UnidentifiedImageError, OSError or SyntaxError by format
        raise ProcessingError(f"cannot decode image {label!r} with Pillow: {error}") from error
    return image


def _from_array(value: Any) -> Image.Image:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind in "iu" and array.size and array.min() >= 0 and array.max() <= 255:
        array = array.astype(np.uint8)  # nested lists of ints, as Arrow gives them back, are uint8 pixels
    if array.dtype != np.uint8:
        raise ProcessingError(f"{EXPECTED_IMAGE}, got an array of dtype {array.dtype} (floats have no agreed scale)")
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first, as torch-style datasets store it
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ProcessingError(f"{EXPECTED_IMAGE}, got an array of shape {array.shape}")
    return Image.fromarray(array)


def is_raw_image(value: Any) -> bool:
    """Whether `value` is an undecoded/unprocessed image (or a list of them, for frames) rather than a processor's
    float output: processed pixels are floating point, raw pixels are PIL images, dicts, paths or integers."""
    if isinstance(value, (Image.Image, dict, str, os.PathLike, bytes, bytearray)):
        return True
    if hasattr(value, "dtype"):
        return getattr(value.dtype, "kind", None) in ("i", "u") or str(value.dtype).startswith(
            ("torch.uint", "torch.int")
        )
    if isinstance(value, (list, tuple)):
        return bool(value) and is_raw_image(value[0])
    return isinstance(value, int) and not isinstance(value, bool)
