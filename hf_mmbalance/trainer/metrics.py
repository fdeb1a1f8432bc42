"""Per-modality evaluation metrics, computed offline with numpy / scikit-learn.

`MultimodalTrainer.prediction_step` returns predictions as `(fused, unimodal)` where `unimodal` stacks the
unimodal heads' outputs as `(batch, num_modalities, num_outputs)` in the config's modality order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import f1_score
from transformers import EvalPrediction


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    predicted = logits.argmax(axis=-1)
    return {
        "accuracy": float((predicted == labels).mean()),
        "f1_macro": float(f1_score(labels, predicted, average="macro", zero_division=0)),
    }


def regression_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    predictions = predictions.reshape(-1).astype(np.float64)
    labels = labels.reshape(-1).astype(np.float64)
    if predictions.std() == 0 or labels.std() == 0:
        pearson = 0.0  # undefined for a constant vector; 0 = "no linear relation" rather than NaN in the logs
    else:
        pearson = float(np.corrcoef(predictions, labels)[0, 1])
    return {"mae": float(np.abs(predictions - labels).mean()), "pearson": pearson}


def split_predictions(predictions) -> tuple[np.ndarray, np.ndarray | None]:
    """(fused, unimodal or None) from what `MultimodalTrainer.prediction_step` produced."""
    if isinstance(predictions, (tuple, list)):
        return np.asarray(predictions[0]), np.asarray(predictions[1]) if len(predictions) > 1 else None
    return np.asarray(predictions), None


def build_compute_metrics(modality_names: Sequence[str], task: str) -> Callable[[EvalPrediction], dict[str, float]]:
    """`compute_metrics` giving fused metrics and, per modality m, the same metrics prefixed `unimodal_<m>_`."""
    score = classification_metrics if task == "classification" else regression_metrics

    def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        fused, unimodal = split_predictions(eval_prediction.predictions)
        labels = np.asarray(eval_prediction.label_ids)
        metrics = score(fused, labels)
        if unimodal is not None:
            for index, name in enumerate(modality_names):
                for key, value in score(unimodal[:, index], labels).items():
                    metrics[f"unimodal_{name}_{key}"] = value
        return metrics

    return compute_metrics
