"""The one error type of the processing layer."""

from __future__ import annotations


class ProcessingError(ValueError):
    """Raw data that a modality's processor cannot use.

    Raised before anything reaches torch, with a message that names the modality, the dataset column and what was
    expected, so that a bad row in a large dataset can be found without a debugger. A `ValueError` so that callers
    that already catch bad values keep working.
    """
