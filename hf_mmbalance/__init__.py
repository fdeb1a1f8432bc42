"""hf_mmbalance: balanced multimodal learning for the HuggingFace `Trainer`."""

from .data import (
    DatasetFilesError,
    DatasetValidationError,
    MFEAT_VIEWS,
    load_mfeat,
    load_multimodal_dataset,
    load_multimodal_files,
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

# The processing layer imports transformers' processor modules: loaded on first use, not by every `import`.
_PROCESSING_NAMES = ("MultimodalDataCollator", "MultimodalProcessor", "ProcessingError")


def __getattr__(name: str):
    if name in _PROCESSING_NAMES:
        from . import processing

        return getattr(processing, name)
    raise AttributeError(f"module 'hf_mmbalance' has no attribute {name!r}")


__all__ = [
    "BSSCallback",
    "BSSConfig",
    "BalancingCallback",
    "DatasetFilesError",
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
    "MultimodalDataCollator",
    "MultimodalProcessor",
    "MultimodalTrainer",
    "ProcessingError",
    "build_compute_metrics",
    "load_mfeat",
    "load_multimodal_dataset",
    "load_multimodal_files",
    "make_synthetic_classification",
    "make_synthetic_regression",
    "plot_training_curves",
    "render_model_card",
    "standardize",
    "validate_dataset",
]
