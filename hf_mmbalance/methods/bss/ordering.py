"""Sample orders of the BSS schedulers (BSS main text §3.3-3.4, appendix Table 2; METHODS.md §1).

Pure functions on tensors (numpy arrays and lists are accepted and converted). Every random draw takes an
explicit CPU `torch.Generator`, never the global RNG, so that every rank builds the same order for an epoch
from `epoch_generator(seed, epoch)` and then takes its own shard.

* heuristic scheduler: `curriculum_order` once (released code scores once, at epoch 0), then every epoch
  `heuristic_epoch_indices(order, pacing_fraction(...), epoch_generator(seed, epoch))`;
* learning-based scheduler (released `train-SPL.py`): every epoch rescore, `accumulate_scores` (framework
  figure), `learned_weights`, `weighted_permutation`.
"""

from __future__ import annotations

import numpy as np
import torch

from .pacing import subset_size

ACCUMULATE_MODES = ("none", "sum", "ema")


def _as_1d_float(name: str, values) -> torch.Tensor:
    # Lists go through numpy so that Python floats stay float64 (torch.as_tensor would make them float32).
    try:
        tensor = values.detach().cpu() if isinstance(values, torch.Tensor) else torch.from_numpy(np.asarray(values))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a 1-D sequence of real numbers: {error}") from None
    if tensor.ndim != 1 or tensor.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence (one value per sample), got shape {tuple(tensor.shape)}")
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8)):
        raise ValueError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
    tensor = tensor.double()
    if torch.isnan(tensor).any():
        bad = torch.nonzero(torch.isnan(tensor)).flatten()[:5].tolist()
        raise ValueError(f"{name} contains NaN (first at sample positions {bad})")
    return tensor


def _check_generator(generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (see epoch_generator), got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")


def curriculum_order(scores, anti: bool = False) -> torch.Tensor:
    """Sample indices sorted by balance score, highest (most balanced) first: the CL order.

    Ties are broken by index, ascending (stable sort). `anti=True` returns this order exactly reversed
    (anti-CL, appendix Table 2: least balanced first), so under anti-CL tied samples come in descending
    index order and the anti-CL prefix of any length is the tail of the CL order. Returns int64 indices.
    """
    scores = _as_1d_float("scores", scores)
    order = torch.sort(scores, descending=True, stable=True).indices
    return order.flip(0) if anti else order


def heuristic_epoch_indices(order, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """The first ceil(N * fraction) indices of `order` (clamped to [1, N]), shuffled with `generator`.

    Heuristic scheduler (BSS §3.3): each epoch trains on the most balanced prefix of the sorted set, in a
    random order. Returns int64 indices.
    """
    order = torch.as_tensor(order).detach().cpu()
    if order.ndim != 1 or order.numel() == 0 or order.is_floating_point():
        raise ValueError(f"order must be a non-empty 1-D sequence of integer indices, got {tuple(order.shape)} {order.dtype}")
    _check_generator(generator)
    size = subset_size(order.numel(), fraction)
    prefix = order[:size].long()
    return prefix[torch.randperm(size, generator=generator)]


def learned_weights(norm_loss, norm_sim) -> torch.Tensor:
    """w_i = 1 - (Norm(loss_i) - Norm(sim_i)) + 0.01 (released `train-SPL.py`).

    Both inputs are already min-max normalised over the training set (values in [0, 1]), so w lies in
    [0.01, 2.01]: balanced samples (high similarity, low loss) weigh most, and every sample keeps a
    non-zero chance of being drawn early. Returns float64 weights.
    """
    loss = _as_1d_float("norm_loss", norm_loss)
    sim = _as_1d_float("norm_sim", norm_sim)
    if loss.shape != sim.shape:
        raise ValueError(f"norm_loss and norm_sim must have the same length, got {loss.numel()} and {sim.numel()}")
    for name, values in (("norm_loss", loss), ("norm_sim", sim)):
        if values.min() < -1e-6 or values.max() > 1 + 1e-6:
            raise ValueError(
                f"{name} must be min-max normalised to [0, 1], got values in [{values.min().item()}, {values.max().item()}]"
            )
    return 1.0 - (loss - sim) + 0.01


def weighted_permutation(weights, generator: torch.Generator) -> torch.Tensor:
    """A permutation of all N samples drawn without replacement with probability proportional to `weights`.

    torch.multinomial(w / sum(w), N, replacement=False), as the released `train-SPL.py`: the first index is
    drawn with probability w_i / sum(w), the next among the rest, and so on. Weights must be finite and > 0.
    Returns int64 indices.
    """
    weights = _as_1d_float("weights", weights)
    _check_generator(generator)
    if not torch.isfinite(weights).all() or (weights <= 0).any():
        raise ValueError(
            f"weights must be finite and > 0 for a permutation of all samples, got min {weights.min().item()} "
            f"and max {weights.max().item()}"
        )
    return torch.multinomial(weights / weights.sum(), weights.numel(), replacement=False, generator=generator)


def accumulate_scores(previous, current, mode: str = "sum", decay: float = 0.9) -> torch.Tensor:
    """Scores carried across epochs by the learning-based scheduler.

    * `none`: s = s_cur (released code: every epoch uses its fresh scores only);
    * `sum` (default, framework figure of the paper): s_upd^{k+1} = s_upd^k + s_cur^{k+1};
    * `ema`: s = decay * s_prev + (1 - decay) * s_cur, decay in [0, 1).
    `previous=None` (first scoring) returns `current` whatever the mode. Returns float64 scores.
    """
    if mode not in ACCUMULATE_MODES:
        raise ValueError(f"accumulate mode {mode!r} is unknown; expected one of {list(ACCUMULATE_MODES)}")
    current = _as_1d_float("current", current)
    if previous is None or mode == "none":
        return current
    previous = _as_1d_float("previous", previous)
    if previous.shape != current.shape:
        raise ValueError(f"previous and current scores must have the same length, got {previous.numel()} and {current.numel()}")
    if mode == "sum":
        return previous + current
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
        raise ValueError(f"decay must be a number in [0, 1), got {decay!r}")
    return decay * previous + (1.0 - decay) * current


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU torch.Generator seeded from (seed, epoch) alone.

    The 64-bit seed is numpy's SeedSequence([seed, epoch]) state: deterministic across platforms and
    processes, so every rank draws the same order for an epoch, a different epoch (set_epoch) gives a
    different draw, and nearby pairs such as (seed, epoch + 1) and (seed + 1, epoch) do not collide.
    """
    for name, value in (("seed", seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(state))
    return generator


__all__ = [
    "ACCUMULATE_MODES",
    "accumulate_scores",
    "curriculum_order",
    "epoch_generator",
    "heuristic_epoch_indices",
    "learned_weights",
    "weighted_permutation",
]
