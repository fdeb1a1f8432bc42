"""`MultimodalTrainer` and the callback protocol the balancing methods implement."""

from .callbacks import BalancingCallback
from .metrics import build_compute_metrics, classification_metrics, regression_metrics
from .multimodal_trainer import SAMPLE_ID_COLUMN, MultimodalTrainer, modality_schema

__all__ = [
    "BalancingCallback",
    "MultimodalTrainer",
    "SAMPLE_ID_COLUMN",
    "build_compute_metrics",
    "classification_metrics",
    "modality_schema",
    "regression_metrics",
]
