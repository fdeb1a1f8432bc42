"""Synthetic multimodal regression data whose true per-modality (unimodal) labels are known.

ULGM (SUGRM / Self-MM) generates unimodal labels from the multimodal one during training; on real data
the "right" unimodal labels are unknown, so the generated labels cannot be scored. Here every modality
has its own true label, stored next to the multimodal label, so generated labels can be compared with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import datasets
import numpy as np

from .mfeat import _check_split_sizes, build_dataset_dict, stratified_split

__all__ = ["make_synthetic_regression"]

_DEFAULT_MODALITIES = {"text": 32, "audio": 16, "video": 16}
_DEFAULT_NOISE = {"text": 0.3, "audio": 1.0, "video": 2.0}
_AGGREGATES = ("mean", "median")
_RESERVED = ("labels", "sample_idx")
TRUE_LABEL_PREFIX = "true_"


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _finite_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def make_synthetic_regression(
    num_samples: int = 1000,
    modalities: Mapping[str, int] | None = None,
    noise: Mapping[str, float] | None = None,
    label_range: float = 3.0,
    seed: int = 0,
    split_sizes: Sequence[float] = (0.7, 0.1, 0.2),
    aggregate: str = "mean",
    disagreement: float = 0.5,
    nonlinear: bool = True,
) -> datasets.DatasetDict:
    """Regression data in ``[-H, H]`` (``H = label_range``) with known true unimodal labels, split 70/10/20.

    Generative model, per sample:

    * latent sentiment ``s ~ Uniform(-H, H)`` (uniform so the whole label range, including the
      extremes ULGM's ``D_max`` uses, is populated);
    * per modality ``m``: true unimodal label ``true_m = clip(s + eps_m, -H, H)`` with
      ``eps_m ~ N(0, disagreement**2)`` — the modalities disagree a little, as in MOSI-style data;
    * features: ``z_m = true_m * w_m + noise[m] * N(0, I)`` with ``w_m`` a fixed random unit vector
      (one per modality, from the seed), so ``noise[m]`` is the observation noise in label units and a
      lower-noise modality is more predictive of its own label. With ``nonlinear=True`` (default) the
      features are ``tanh(z_m @ M_m)`` with ``M_m`` a fixed random ``(d, d)`` matrix of
      ``N(0, 1/H**2)`` entries (the signal term's pre-activation has std ``|true_m| / H <= 1`` per unit),
      so a linear read-out is no longer optimal and an MLP encoder helps;
      ``nonlinear=False`` returns ``z_m`` itself;
    * multimodal label ``labels = clip(aggregate_m(true_m), -H, H)`` (``aggregate`` is ``"mean"`` or
      ``"median"`` over the modalities).

    ``modalities`` maps name -> feature size (an int; default ``{"text": 32, "audio": 16, "video": 16}``).
    ``noise`` maps name -> non-negative noise std and must name exactly the modalities; when omitted it is
    ``{"text": 0.3, "audio": 1.0, "video": 2.0}`` for the default modalities and 1.0 for every modality
    otherwise. Columns: one ``List(Value("float32"), length=size)`` per modality (in order), ``labels``
    (float32), ``true_<modality>`` (float32) per modality, ``sample_idx`` (int64, unique across splits).
    Rows are shuffled, then split by ``split_sizes`` (largest-remainder rounding, no stratification).
    Every random stream (latent, split, each modality) is derived independently from ``seed``: same
    arguments -> identical data, and adding a modality leaves the others' features and true labels as
    they were (only ``labels`` changes).
    """
    if modalities is None:
        modalities = _DEFAULT_MODALITIES
        if noise is None:
            noise = _DEFAULT_NOISE
    if not _is_int(num_samples) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if not isinstance(modalities, Mapping) or not modalities:
        raise ValueError(f"modalities must be a non-empty mapping of name -> feature size, got {modalities!r}")
    sizes: dict[str, int] = {}
    for name, size in modalities.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"modalities: names must be non-empty strings, got {name!r}")
        if not _is_int(size) or size < 1:
            raise ValueError(f"modalities: size of modality {name!r} must be a positive int, got {size!r}")
        sizes[name] = int(size)
    generated = {*_RESERVED, *(TRUE_LABEL_PREFIX + name for name in sizes)}
    clash = [name for name in sizes if name in generated]
    if clash:
        raise ValueError(f"modalities: name {clash[0]!r} collides with a generated column name")

    if noise is None:
        noise = {name: 1.0 for name in sizes}
    if not isinstance(noise, Mapping):
        raise ValueError(f"noise must be a mapping of modality name -> noise std, got {noise!r}")
    if set(noise) != set(sizes):
        missing = [name for name in sizes if name not in noise]
        unknown = [name for name in noise if name not in sizes]
        raise ValueError(
            f"noise keys must match modalities {list(sizes)}: missing {missing}, unknown {unknown}"
        )
    noise_std = {name: _finite_number(f"noise[{name!r}]", noise[name]) for name in sizes}
    negative = [name for name, value in noise_std.items() if value < 0]
    if negative:
        raise ValueError(f"noise[{negative[0]!r}] must be >= 0, got {noise_std[negative[0]]!r}")

    H = _finite_number("label_range", label_range)
    if H <= 0:
        raise ValueError(f"label_range must be > 0, got {label_range!r}")
    disagreement = _finite_number("disagreement", disagreement)
    if disagreement < 0:
        raise ValueError(f"disagreement must be >= 0, got {disagreement!r}")
    if aggregate not in _AGGREGATES:
        raise ValueError(f"aggregate must be one of {_AGGREGATES}, got {aggregate!r}")
    split_sizes = _check_split_sizes(split_sizes)
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")

    seq = np.random.SeedSequence(int(seed))
    latent_seed, split_seed, *modality_seeds = seq.spawn(2 + len(sizes))
    latent = np.random.default_rng(latent_seed).uniform(-H, H, size=num_samples)

    columns: dict[str, np.ndarray] = {}
    features: dict[str, object] = {}
    true_labels: dict[str, np.ndarray] = {}
    for (name, dim), child in zip(sizes.items(), modality_seeds):
        rng = np.random.default_rng(child)
        # Fixed draw order per modality: direction, mixing matrix, disagreement, observation noise.
        direction = rng.standard_normal(dim)
        direction /= np.linalg.norm(direction)
        mixing = rng.standard_normal((dim, dim)) / H
        true_m = np.clip(latent + disagreement * rng.standard_normal(num_samples), -H, H)
        values = true_m[:, None] * direction[None, :] + noise_std[name] * rng.standard_normal((num_samples, dim))
        if nonlinear:
            values = np.tanh(values @ mixing)
        true_labels[name] = true_m
        columns[name] = values.astype(np.float32)
        features[name] = datasets.List(datasets.Value("float32"), length=dim)

    stacked = np.stack(list(true_labels.values()), axis=1)
    combined = stacked.mean(axis=1) if aggregate == "mean" else np.median(stacked, axis=1)
    columns["labels"] = np.clip(combined, -H, H).astype(np.float32)
    features["labels"] = datasets.Value("float32")
    for name, true_m in true_labels.items():
        columns[TRUE_LABEL_PREFIX + name] = true_m.astype(np.float32)
        features[TRUE_LABEL_PREFIX + name] = datasets.Value("float32")
    columns["sample_idx"] = np.arange(num_samples, dtype=np.int64)
    features["sample_idx"] = datasets.Value("int64")

    # One "class": stratified_split then is a seeded shuffle + largest-remainder split.
    train, val, test = stratified_split(
        np.zeros(num_samples, dtype=np.int64), split_sizes, np.random.default_rng(split_seed)
    )
    return build_dataset_dict(
        columns, datasets.Features(features), {"train": train, "validation": val, "test": test}
    )
