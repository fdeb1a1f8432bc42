"""ULGM — self-supervised unimodal label generation for multimodal regression (SUGRM §3.3-3.4; Self-MM).

* `updates.py` — the pure update rules: centres, D_max, SUGRM magnitude / direction, Self-MM, momentum, loss,
  and the common-space alignment term (our addition, see its docstring);
* `config.py` — `ULGMConfig`; `callback.py` — `ULGMCallback` (label and feature banks, loss replacement);
* `diagnostics.py` — generated label trajectories (SUGRM Fig. 4 style).
The model side (common space F*_m / F*_s, MRM recalibration) lives in `hf_mmbalance.modeling`.
"""

from .callback import ULGMCallback
from .config import ULGMConfig
from .updates import (
    common_space_alignment_loss,
    extreme_centres,
    max_distance,
    momentum_update,
    selfmm_unimodal_labels,
    sugrm_unimodal_labels,
    ulgm_loss,
    ulgm_loss_terms,
    unimodal_loss_weights,
)

__all__ = [
    "ULGMCallback",
    "ULGMConfig",
    "common_space_alignment_loss",
    "extreme_centres",
    "max_distance",
    "momentum_update",
    "selfmm_unimodal_labels",
    "sugrm_unimodal_labels",
    "ulgm_loss",
    "ulgm_loss_terms",
    "unimodal_loss_weights",
]
