"""Disparity-ratio gradient modulation: Ada2I (any number of modalities) and OGM-GE (two).

* `disparity.py` — scores, disparity ratios and coefficients (Ada2I Eq. 16-18), pure functions;
* `gradient.py` — scaling the encoders' gradients and the GE noise (Eq. 18-19), sharded gradients included;
* `application.py` — where k_m is applied per engine (`apply`: before the optimizer step, or a backward hook);
* `config.py` — `ModulationConfig`;
* `callback.py` — `GradientModulationCallback`, the glue with `MultimodalTrainer`;
* `diagnostics.py` — the plot of rho_m and k_m over training (Fig. 4 style).
The AMW / AFW fusions of Ada2I live with the other fusions in `hf_mmbalance.modeling` (`fusion="amw"|"afw"`).
"""

from .application import APPLY_MODES, resolve_apply, scale_feature_gradients
from .callback import GradientModulationCallback
from .config import ModulationConfig
from .diagnostics import plot_disparity_ratios
from .disparity import disparity_ratios, modality_scores, modulation_coefficients
from .gradient import ge_noise_std, modulate_gradients, per_tensor_std

__all__ = [
    "APPLY_MODES",
    "GradientModulationCallback",
    "ModulationConfig",
    "disparity_ratios",
    "ge_noise_std",
    "modality_scores",
    "modulate_gradients",
    "modulation_coefficients",
    "per_tensor_std",
    "plot_disparity_ratios",
    "resolve_apply",
    "scale_feature_gradients",
]
