"""Synthetic multimodal classification data with a controllable per-modality signal strength.

Used by tests and quick experiments: making one modality much more informative than another
reproduces the modality-imbalance effect without downloading anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import datasets
import numpy as np

from .mfeat import build_dataset_dict, stratified_split

__all__ = ["make_synthetic_classification"]

_DEFAULT_MODALITIES = {"a": 16, "b": 16}
_DEFAULT_SIGNAL = {"a": 1.0, "b": 0.3}
_RESERVED = ("labels", "sample_idx")


def _parse_size(name: str, size) -> tuple[int, ...]:
    """``int`` -> ``(dim,)``; ``(seq_len, dim)`` -> ``(seq_len, dim)``; anything else is an error."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        shape: tuple = (int(size),)
    elif isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2:
        shape = tuple(size)
    else:
        raise ValueError(f"modality {name!r}: size must be an int or a (seq_len, dim) pair, got {size!r}")
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"modality {name!r}: sizes must be positive ints, got {size!r}")
    return tuple(int(s) for s in shape)


def make_synthetic_classification(
    num_samples: int = 1000,
    num_classes: int = 4,
    modalities: Mapping[str, int | tuple[int, int]] | None = None,
    signal_strength: Mapping[str, float] | None = None,
    seed: int = 0,
    split_sizes: Sequence[float] = (0.7, 0.1, 0.2),
) -> datasets.DatasetDict:
    """Gaussian class-prototype data, one column per modality, split 70/10/20 (stratified) by default.

    For every modality and class a prototype ``z ~ N(0, I)`` is drawn; a sample's features are
    ``signal_strength[m] * z[label] + N(0, I)`` noise, so ``signal_strength`` is the per-coordinate
    signal-to-noise ratio and a stronger modality is more predictive.

    ``modalities`` maps name -> size (default ``{"a": 16, "b": 16}``). An int gives a
    ``List(Value("float32"), length=size)`` column. A ``(seq_len, dim)`` pair gives an
    ``Array2D((seq_len, dim), "float32")`` column plus ``<name>_attention_mask`` (int64, length
    ``seq_len``): each sample gets a random valid length in ``[1, seq_len]``, the class prototype is
    added at every valid position, and padded positions are 0 in both features and mask.

    ``signal_strength`` maps name -> strength; modalities not listed get 1.0. When both arguments are
    omitted the defaults are ``{"a": 1.0, "b": 0.3}``. Classes are balanced (``num_samples`` rows
    assigned round-robin, then shuffled). Columns: modalities in order (each followed by its mask if
    any), ``labels`` (``ClassLabel``), ``sample_idx``. Same arguments -> identical data.
    """
    if modalities is None:
        modalities = _DEFAULT_MODALITIES
        if signal_strength is None:
            signal_strength = _DEFAULT_SIGNAL
    signal_strength = dict(signal_strength or {})
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not modalities:
        raise ValueError("modalities must name at least one modality")
    shapes = {name: _parse_size(name, size) for name, size in modalities.items()}
    unknown = [name for name in signal_strength if name not in shapes]
    if unknown:
        raise ValueError(f"signal_strength names unknown modality {unknown[0]!r}; modalities are {list(shapes)}")
    mask_names = {f"{name}_attention_mask" for name, shape in shapes.items() if len(shape) == 2}
    clash = [name for name in shapes if name in _RESERVED or name in mask_names]
    if clash:
        raise ValueError(f"modality name {clash[0]!r} collides with a generated column name")

    # Independent streams per purpose/modality: adding a modality does not change the others' data.
    seq = np.random.SeedSequence(seed)
    label_rng, split_rng, *modality_seeds = seq.spawn(2 + len(shapes))
    labels = np.random.default_rng(label_rng).permutation(np.arange(num_samples, dtype=np.int64) % num_classes)

    columns: dict[str, np.ndarray] = {}
    features: dict[str, object] = {}
    for (name, shape), child in zip(shapes.items(), modality_seeds):
        rng = np.random.default_rng(child)
        strength = float(signal_strength.get(name, 1.0))
        dim = shape[-1]
        prototypes = rng.standard_normal((num_classes, dim)) * strength
        if len(shape) == 1:
            values = prototypes[labels] + rng.standard_normal((num_samples, dim))
            columns[name] = values.astype(np.float32)
            features[name] = datasets.List(datasets.Value("float32"), length=dim)
        else:
            seq_len = shape[0]
            lengths = rng.integers(1, seq_len + 1, size=num_samples)
            mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int64)
            values = prototypes[labels][:, None, :] + rng.standard_normal((num_samples, seq_len, dim))
            columns[name] = np.where(mask[..., None] > 0, values, 0.0).astype(np.float32)
            columns[f"{name}_attention_mask"] = mask
            features[name] = datasets.Array2D(shape=(seq_len, dim), dtype="float32")
            features[f"{name}_attention_mask"] = datasets.List(datasets.Value("int64"), length=seq_len)
    columns["labels"] = labels
    columns["sample_idx"] = np.arange(num_samples, dtype=np.int64)
    features["labels"] = datasets.ClassLabel(num_classes=int(num_classes))
    features["sample_idx"] = datasets.Value("int64")

    train, val, test = stratified_split(labels, split_sizes, np.random.default_rng(split_rng))
    return build_dataset_dict(
        columns, datasets.Features(features), {"train": train, "validation": val, "test": test}
    )
