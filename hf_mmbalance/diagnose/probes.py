"""Linear probes on frozen encoder features (the "imbalance gap" of shared/BENCHMARKS.md, "Metrics").

The recipe is the benchmarks' (`benchmarks/harness.py` `fit_probe`): standardize the train split's features z_m,
fit a logistic regression (C = 1, lbfgs, `max_iter` iterations, seed 0) and score it on another split. For
regression the probe is a ridge regression (alpha = 1) scored by Pearson's r, so that for both tasks a higher probe
score means a more informative encoder and the gap (alone − joint) is positive for an under-trained one.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

PROBE_SEED = 0
PROBE_C = 1.0
RIDGE_ALPHA = 1.0


def probe_metric(task: str) -> str:
    """The name of the probe's score: accuracy (classification) or pearson (regression)."""
    return "accuracy" if task == "classification" else "pearson"


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, task: str, max_iter: int = 2000):
    """The fitted probe pipeline (StandardScaler + LogisticRegression, or + Ridge for regression)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task == "classification":
        head = LogisticRegression(max_iter=max_iter, C=PROBE_C, random_state=PROBE_SEED)
    else:
        head = Ridge(alpha=RIDGE_ALPHA)
    probe = make_pipeline(StandardScaler(), head)
    from threadpoolctl import threadpool_limits

    # One BLAS thread: the probes are small, and threads only contend with the trainings on a shared machine.
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # a tiny budget's features; the score says enough
        probe.fit(np.asarray(train_x, dtype=np.float64), np.asarray(train_y).reshape(-1))
    return probe


def probe_score(probe, x: np.ndarray, y: np.ndarray, task: str) -> float:
    """Accuracy of the probe on (x, y), or Pearson's r of its predictions (0 where a side is constant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y).reshape(-1)
    if task == "classification":
        return float((probe.predict(x) == y).mean())
    predicted = probe.predict(x).reshape(-1)
    if predicted.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(predicted, y.astype(np.float64))[0, 1])


def probe_scores(train_features: Mapping[str, np.ndarray], train_y: np.ndarray,
                 eval_sets: Mapping[str, tuple[Mapping[str, np.ndarray], np.ndarray]], task: str,
                 max_iter: int = 2000) -> dict[str, dict[str, float]]:
    """{split: {modality: probe score}}: one probe per modality fit on `train_features`, scored on each eval split
    (`eval_sets`: split -> (features by modality, labels))."""
    scores: dict[str, dict[str, float]] = {split: {} for split in eval_sets}
    for name, train_x in train_features.items():
        probe = fit_probe(train_x, train_y, task, max_iter)
        for split, (features, labels) in eval_sets.items():
            scores[split][name] = probe_score(probe, features[name], labels, task)
    return scores


__all__ = ["fit_probe", "probe_metric", "probe_score", "probe_scores"]
