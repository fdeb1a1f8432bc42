"""Batching of per-row model inputs: padding with a modality's own processor, stacking, float sequences.

Used both by `MultimodalProcessor(..., padding=True)` and by `MultimodalDataCollator`, so that a batch padded ahead
of time and one padded by the collator are built by the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .errors import ProcessingError

PADDING_KWARGS = ("max_length", "pad_to_multiple_of")


def to_numpy(value: Any) -> np.ndarray:
    """One row's value (torch tensor, numpy array, nested lists from Arrow) as a numpy array; float64 (what Python
    floats read back as) becomes float32, the dtype every processor emits."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    return array.astype(np.float32) if array.dtype == np.float64 else array


def to_list(value: Any) -> Any:
    """One row's value as (nested) Python lists, the form `tokenizer.pad` reads."""
    return value.tolist() if hasattr(value, "tolist") else value


def convert_rows(values: Sequence[Any], return_tensors: str | None) -> list:
    """Per-row values in the requested type: torch tensors ("pt"), numpy arrays ("np") or lists (None)."""
    if return_tensors == "pt":
        return [torch.from_numpy(np.ascontiguousarray(to_numpy(v))) for v in values]
    if return_tensors == "np":
        return [to_numpy(v) for v in values]
    return [to_list(v) for v in values]


def convert_batch(array: np.ndarray, return_tensors: str | None) -> Any:
    if return_tensors == "pt":
        return torch.from_numpy(np.ascontiguousarray(array))
    return array if return_tensors == "np" else array.tolist()


def stack_rows(columns: dict[str, list], return_tensors: str | None, where: str) -> dict[str, Any]:
    """Fixed-size outputs (pixel values, Whisper/AST features): stacked per key. `where` names the modality and
    column in the error raised when rows differ in shape (e.g. clips with different frame counts)."""
    batched = {}
    for key, values in columns.items():
        arrays = [to_numpy(v) for v in values]
        shapes = sorted({a.shape for a in arrays})
        if len(shapes) > 1:
            raise ProcessingError(
                f"{where}: {key!r} has rows of different shapes {shapes[:4]}; this modality's processor gives "
                "fixed-size outputs, so every row must have the same size (for frames: the same number of frames)"
            )
        batched[key] = convert_batch(np.stack(arrays), return_tensors)
    return batched


def pad_with_tokenizer(tokenizer: Any, columns: dict[str, list], return_tensors: str | None, **pad_kwargs: Any) -> dict:
    """`tokenizer.pad` on per-row encodings: pads to the longest row (or `max_length`) on the tokenizer's padding
    side with its pad token, and pads/creates `attention_mask`."""
    encodings = {key: [to_list(v) for v in values] for key, values in columns.items()}
    return dict(tokenizer.pad(encodings, return_tensors=return_tensors, **pad_kwargs))


def pad_with_feature_extractor(
    extractor: Any, columns: dict[str, list], return_tensors: str | None, **pad_kwargs: Any
) -> dict:
    """`SequenceFeatureExtractor.pad` on per-row features (wav2vec2-style `input_values`): pads with the extractor's
    `padding_value` and always returns `attention_mask` (int64), which pooling over a padded batch needs."""
    from transformers import BatchFeature

    features = BatchFeature({key: [to_numpy(v) for v in values] for key, values in columns.items()})
    padded = dict(extractor.pad(features, return_attention_mask=True, return_tensors=return_tensors, **pad_kwargs))
    # Extractors give int32 masks; tokenizers and `pad_float_sequences` give int64: one mask dtype for the model.
    mask = padded["attention_mask"]
    padded["attention_mask"] = mask.to(torch.int64) if isinstance(mask, torch.Tensor) else np.asarray(mask, np.int64)
    return padded


def pad_float_sequences(
    rows: Sequence[Any], masks: Sequence[Any] | None = None, where: str = "sequence"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length float sequences, one (L_i, F) per row, for modalities without a processor (the built-in
    transformer encoder).

    Returns `(values, mask)`: values (B, max L_i, F) float32 zero-padded, mask (B, max L_i) int64 with 1 on real
    steps. Given per-row masks (e.g. a dataset's own `<m>_attention_mask`) are kept and padded with 0.
    """
    arrays = [_as_sequence(to_numpy(row), where) for row in rows]
    widths = sorted({a.shape[1] for a in arrays if a.ndim == 2})
    if len(widths) != 1:
        raise ProcessingError(f"{where}: rows have feature sizes {widths}; expected one (length, features) size")
    arrays = [a if a.ndim == 2 else a.reshape(0, widths[0]) for a in arrays]
    length = max(a.shape[0] for a in arrays)
    values = np.zeros((len(arrays), length, widths[0]), dtype=np.float32)
    mask = np.zeros((len(arrays), length), dtype=np.int64)
    for i, array in enumerate(arrays):
        values[i, : len(array)] = array
        mask[i, : len(array)] = 1 if masks is None else to_numpy(masks[i]).reshape(-1)[: len(array)]
    return torch.from_numpy(values), torch.from_numpy(mask)


def _as_sequence(array: np.ndarray, where: str) -> np.ndarray:
    if array.ndim == 1 and array.size == 0:
        return array.astype(np.float32)  # an empty row: its width comes from the others
    if array.ndim != 2 or array.dtype.kind not in "fiub":
        raise ProcessingError(f"{where}: expected a (length, features) float sequence per row, got shape {array.shape}")
    return array.astype(np.float32, copy=False)
