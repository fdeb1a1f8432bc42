"""Pacing functions of the BSS heuristic scheduler (BSS appendix C.3, Table 3, Fig. 2; METHODS.md §1).

lambda(e) is the fraction of the balance-score-sorted training set used in epoch e. Epochs count from 1
(the first training epoch uses lambda(1)); lambda(0) = lambda0 is the starting point of the curve, and every
function reaches 1 at e = T_grow and stays there (values are capped at 1). Defaults lambda0 = 0.1 and
T_grow = 40 are those of appendix C.2-C.4. Pure functions of numbers: no Trainer, no tensors.

* linear      lambda(e) = min(1, lambda0 + (1 - lambda0) * e / T)
* root-p      lambda(e) = min(1, (lambda0^p + (1 - lambda0^p) * e / T)^(1/p)); `root` is p = 2 (released code,
              the competence function of Platanios et al.), `root-3` and `root-5` are p = 3 and p = 5
* geometric   lambda(e) = min(1, lambda0^(1 - e / T))
* baby step   lambda(e) = min(1, (1 + floor(e * n_bins / T)) / n_bins)

Baby step, exactly: the sorted set is cut into `n_bins` equal bins (default 5). Training starts on the first
bin (lambda(0) = 1 / n_bins) and one more bin is added every T / n_bins epochs, so [0, T) is split into
n_bins stages of equal length and stage k (k = 0 .. n_bins-1, epochs k*T/n_bins <= e < (k+1)*T/n_bins) uses
k + 1 bins. The whole set is therefore in use from e = (n_bins - 1) * T / n_bins on (32 for the defaults),
and lambda(T) = 1 as for the other functions. `lambda0` is unused by baby step (it is accepted, and
validated, only so that every pacing function has the same signature). The floor is computed exactly
(rational arithmetic), so stage boundaries never move by float round-off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from functools import partial

DEFAULT_LAMBDA0 = 0.1
DEFAULT_T_GROW = 40
DEFAULT_N_BINS = 5


def _check_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def _validate(epoch, lambda0, t_grow) -> None:
    _check_number("epoch", epoch)
    _check_number("lambda0", lambda0)
    _check_number("t_grow", t_grow)
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch!r}")
    if not 0 < lambda0 <= 1:
        raise ValueError(f"lambda0 must be in (0, 1], got {lambda0!r}")
    if t_grow < 1:
        raise ValueError(f"t_grow must be >= 1 (the epoch at which the pacing function reaches 1), got {t_grow!r}")


def linear(epoch: float, lambda0: float = DEFAULT_LAMBDA0, t_grow: float = DEFAULT_T_GROW) -> float:
    """lambda(e) = min(1, lambda0 + (1 - lambda0) * e / T_grow): a constant number of samples added per epoch."""
    _validate(epoch, lambda0, t_grow)
    return min(1.0, lambda0 + (1.0 - lambda0) * epoch / t_grow)


def root_p(epoch: float, lambda0: float = DEFAULT_LAMBDA0, t_grow: float = DEFAULT_T_GROW, p: float = 2) -> float:
    """lambda(e) = min(1, (lambda0^p + (1 - lambda0^p) * e / T_grow)^(1/p)).

    p = 2 is the `root` function of the released BSS code; larger p (`root-3`, `root-5`) brings the harder
    samples in within fewer epochs (appendix C.3). p must be > 0.
    """
    _validate(epoch, lambda0, t_grow)
    _check_number("p", p)
    if p <= 0:
        raise ValueError(f"p must be > 0, got {p!r}")
    start = lambda0**p
    return min(1.0, (start + (1.0 - start) * epoch / t_grow) ** (1.0 / p))


def root(epoch: float, lambda0: float = DEFAULT_LAMBDA0, t_grow: float = DEFAULT_T_GROW) -> float:
    """`root_p` with p = 2 (released code)."""
    return root_p(epoch, lambda0, t_grow, p=2)


def geometric(epoch: float, lambda0: float = DEFAULT_LAMBDA0, t_grow: float = DEFAULT_T_GROW) -> float:
    """lambda(e) = min(1, lambda0^(1 - e / T_grow)): more epochs spent on the easiest (most balanced) samples."""
    _validate(epoch, lambda0, t_grow)
    return min(1.0, lambda0 ** (1.0 - epoch / t_grow))


def baby_step(
    epoch: float, lambda0: float = DEFAULT_LAMBDA0, t_grow: float = DEFAULT_T_GROW, n_bins: int = DEFAULT_N_BINS
) -> float:
    """lambda(e) = min(1, (1 + floor(e * n_bins / T_grow)) / n_bins); `lambda0` is unused (see module doc).

    n_bins equal bins of the sorted set; one bin at e = 0, one more every T_grow / n_bins epochs.
    """
    _validate(epoch, lambda0, t_grow)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    stage = math.floor(Fraction(epoch) * n_bins / Fraction(t_grow))
    return min(1.0, (1 + stage) / n_bins)


PACING_FUNCTIONS: dict[str, Callable[..., float]] = {
    "baby_step": baby_step,
    "linear": linear,
    "root": root,
    "root-3": partial(root_p, p=3),
    "root-5": partial(root_p, p=5),
    "geometric": geometric,
}


def pacing_fraction(
    name: str, epoch: float, lambda0: float = DEFAULT_LAMBDA0, t_grow: float = DEFAULT_T_GROW, **kwargs
) -> float:
    """lambda(epoch) of the pacing function `name` (a key of `PACING_FUNCTIONS`).

    Extra keyword arguments go to the function: `n_bins` for `baby_step`; none for the others (the exponent of
    `root`, `root-3`, `root-5` is fixed by the name; call `root_p` directly for another p).
    """
    function = PACING_FUNCTIONS.get(name)
    if function is None:
        raise ValueError(f"unknown pacing function {name!r}; expected one of {sorted(PACING_FUNCTIONS)}")
    allowed = {"n_bins"} if name == "baby_step" else set()
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"pacing function {name!r} takes no option(s) {unknown}; "
            f"its options besides lambda0 and t_grow are {sorted(allowed) or 'none'}"
        )
    return function(epoch, lambda0, t_grow, **kwargs)


def subset_size(num_samples: int, fraction: float) -> int:
    """ceil(N * lambda) clamped to [1, N]: the number of sorted samples used in an epoch.

    A product within 1e-9 (relative) of an integer counts as that integer, so float round-off cannot add a
    sample (0.7 * 10 = 7.000000000000001 in floating point gives 7, not 8).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    _check_number("fraction", fraction)
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    product = num_samples * fraction
    nearest = round(product)
    size = nearest if abs(product - nearest) <= 1e-9 * max(1.0, product) else math.ceil(product)
    return max(1, min(num_samples, size))


__all__ = [
    "DEFAULT_LAMBDA0",
    "DEFAULT_N_BINS",
    "DEFAULT_T_GROW",
    "PACING_FUNCTIONS",
    "baby_step",
    "geometric",
    "linear",
    "pacing_fraction",
    "root",
    "root_p",
    "subset_size",
]
