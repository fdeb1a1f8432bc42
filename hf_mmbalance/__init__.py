"""hf_mmbalance: balanced multimodal learning for the HuggingFace `Trainer`."""

from .data import (
    DatasetValidationError,
    MFEAT_VIEWS,
    load_mfeat,
    make_synthetic_classification,
    make_synthetic_regression,
    standardize,
    validate_dataset,
)
from .hub import render_model_card
from .modeling import (
    MMBalanceConfig,
    MMBalanceConfigError,
    MMBalanceForClassification,
    MMBalanceForRegression,
    MMBalanceModel,
    MMBalanceOutput,
)
from .methods import BSSCallback, BSSConfig, GradientModulationCallback, ModulationConfig
from .plotting import plot_training_curves
from .trainer import BalancingCallback, MultimodalTrainer, build_compute_metrics

__version__ = "0.1.0"

__all__ = [
    "BSSCallback",
    "BSSConfig",
    "BalancingCallback",
    "DatasetValidationError",
    "GradientModulationCallback",
    "MFEAT_VIEWS",
    "MMBalanceConfig",
    "MMBalanceConfigError",
    "MMBalanceForClassification",
    "MMBalanceForRegression",
    "MMBalanceModel",
    "MMBalanceOutput",
    "ModulationConfig",
    "MultimodalTrainer",
    "build_compute_metrics",
    "load_mfeat",
    "make_synthetic_classification",
    "make_synthetic_regression",
    "plot_training_curves",
    "render_model_card",
    "standardize",
    "validate_dataset",
]
