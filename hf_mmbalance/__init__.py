"""hf_mmbalance: balanced multimodal learning for the HuggingFace `Trainer`.

The public names below are imported from their sub-packages on first use (PEP 562), so `import hf_mmbalance` -- and
the `hf-mmbalance` command, whose entry point lives in this package -- loads neither torch nor transformers until
something needs them. Using any model or config name imports `hf_mmbalance.modeling`, which registers the model with
transformers' Auto classes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the sub-package it lives in
_LAZY_NAMES = {
    **dict.fromkeys(
        ("DatasetFilesError", "DatasetValidationError", "MFEAT_VIEWS", "load_av_digits", "load_mfeat", "load_multimodal_dataset",
         "load_multimodal_files", "make_synthetic_classification", "make_synthetic_regression", "standardize",
         "validate_dataset"),
        "data",
    ),
    "render_model_card": "hub",
    **dict.fromkeys(
        ("MMBalanceConfig", "MMBalanceConfigError", "MMBalanceForClassification", "MMBalanceForRegression",
         "MMBalanceModel", "MMBalanceOutput"),
        "modeling",
    ),
    **dict.fromkeys(("BSSCallback", "BSSConfig", "GradientModulationCallback", "ModulationConfig"), "methods"),
    **dict.fromkeys(("plot_imbalance_summary", "plot_training_curves"), "plotting"),
    **dict.fromkeys(("BalancingCallback", "MultimodalTrainer", "build_compute_metrics"), "trainer"),
    # The processing layer imports transformers' processor modules.
    **dict.fromkeys(("MultimodalDataCollator", "MultimodalProcessor", "ProcessingError"), "processing"),
}


def __getattr__(name: str):
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_mmbalance' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES})


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .data import (DatasetFilesError, DatasetValidationError, MFEAT_VIEWS, load_av_digits, load_mfeat, load_multimodal_dataset,
                       load_multimodal_files, make_synthetic_classification, make_synthetic_regression, standardize,
                       validate_dataset)
    from .hub import render_model_card
    from .methods import BSSCallback, BSSConfig, GradientModulationCallback, ModulationConfig
    from .modeling import (MMBalanceConfig, MMBalanceConfigError, MMBalanceForClassification, MMBalanceForRegression,
                           MMBalanceModel, MMBalanceOutput)
    from .plotting import plot_imbalance_summary, plot_training_curves
    from .processing import MultimodalDataCollator, MultimodalProcessor, ProcessingError
    from .trainer import BalancingCallback, MultimodalTrainer, build_compute_metrics

__all__ = sorted(_LAZY_NAMES)
