"""Data layer: the bundled UCI mfeat multi-view dataset, synthetic multimodal data and dataset checks.

Depends only on numpy, pyarrow, datasets, Pillow and soundfile (from hf_mmbalance only the leaf `progress` module); multimodal
datasets read from manifests of image / audio / frame files and text (`files.py`).
"""

from .av_digits import AV_DIGITS_SAMPLING_RATE, load_av_digits
from .files import DatasetFilesError, MODALITY_KINDS, load_multimodal_dataset, load_multimodal_files
from .mfeat import MFEAT_VIEWS, load_mfeat, standardize
from .synthetic import make_synthetic_classification
from .synthetic_regression import make_synthetic_regression
from .validation import DatasetValidationError, validate_dataset

__all__ = [
    "AV_DIGITS_SAMPLING_RATE",
    "load_av_digits",
    "DatasetFilesError",
    "DatasetValidationError",
    "MODALITY_KINDS",
    "load_multimodal_dataset",
    "load_multimodal_files",
    "MFEAT_VIEWS",
    "load_mfeat",
    "make_synthetic_classification",
    "make_synthetic_regression",
    "standardize",
    "validate_dataset",
]
