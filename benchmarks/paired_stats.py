"""Paired comparisons of benchmark runs: a method against a baseline trained on the same (fold, seed).

Runs that share a fold and a seed share the split, the model initialization and the data order, so the per-run
difference removes most of the fold-to-fold spread; the interval is the Student-t 95% CI of the mean difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t confidence interval of the mean; (mean, nan, nan) for fewer than 2 values."""
    values = [float(v) for v in values]
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    return mean, mean - float(half), mean + float(half)


def paired_differences(method: Mapping[tuple, float], baseline: Mapping[tuple, float]) -> list[float]:
    """method[key] - baseline[key] for every run key (fold, seed) both have, in key order."""
    return [method[key] - baseline[key] for key in sorted(set(method) & set(baseline))]


def describe_interval(values: Sequence[float]) -> str:
    """'+0.012 [-0.004, +0.028]' (mean and 95% CI), marked with * when the interval excludes 0."""
    mean, low, high = t_interval(values)
    if math.isnan(low):
        return f"{mean:+.3f}"
    star = "*" if low > 0 or high < 0 else ""
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]{star}"
