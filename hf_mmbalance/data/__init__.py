"""Data layer: the bundled UCI mfeat multi-view dataset, synthetic multimodal data and dataset checks.

Depends only on numpy, pyarrow and datasets (nothing else from hf_mmbalance).
"""

from .mfeat import MFEAT_VIEWS, load_mfeat, standardize
from .synthetic import make_synthetic_classification
from .synthetic_regression import make_synthetic_regression
from .validation import DatasetValidationError, validate_dataset

__all__ = [
    "DatasetValidationError",
    "MFEAT_VIEWS",
    "load_mfeat",
    "make_synthetic_classification",
    "make_synthetic_regression",
    "standardize",
    "validate_dataset",
]
