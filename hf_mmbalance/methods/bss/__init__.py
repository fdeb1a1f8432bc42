"""BSS — Balance-aware Sequence Sampling (IJCAI 2025): a balance-aware curriculum over the training samples.

* `measurer.py` — the 8 criteria of appendix Table 1 (one batched inference pass), pure functions;
* `pacing.py` — the pacing functions lambda(e) (appendix C.2-C.4), pure functions;
* `ordering.py` — CL / anti-CL orders, the heuristic epoch subsets, the learned scheduler's weights and draw;
* `sampler.py` — `CurriculumSampler`, the whole curriculum as one `Trainer` pass;
* `config.py` — `BSSConfig`; `callback.py` — `BSSCallback`, the glue with `MultimodalTrainer`;
* `diagnostics.py` — the pacing curve and the score histograms (appendix Fig. 1b / 2 style).
"""

from .callback import BSSCallback
from .config import BSSConfig
from .measurer import CRITERIA, measure, min_max_normalize
from .ordering import accumulate_scores, curriculum_order, heuristic_epoch_indices, learned_weights, weighted_permutation
from .pacing import PACING_FUNCTIONS, pacing_fraction, subset_size
from .sampler import CurriculumSampler

__all__ = [
    "BSSCallback",
    "BSSConfig",
    "CRITERIA",
    "CurriculumSampler",
    "PACING_FUNCTIONS",
    "accumulate_scores",
    "curriculum_order",
    "heuristic_epoch_indices",
    "learned_weights",
    "measure",
    "min_max_normalize",
    "pacing_fraction",
    "subset_size",
    "weighted_permutation",
]
